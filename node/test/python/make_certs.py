"""Throwaway TLS material for the Node client's TLS test (``python make_certs.py DIR``).

Writes ``ca.pem`` (a fresh CA), ``server.pem`` and ``server.key`` (for 127.0.0.1 and localhost),
``client.pem`` and ``client.key`` (a client certificate of the same CA), with ``trustme``, as
``tests/test_tls.py`` does. Nothing touches the system trust store.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trustme


def main() -> int:
    directory = Path(sys.argv[1])
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("node-worker@jobwire.test")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    (directory / "server.pem").write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(directory / "server.key"))
    (directory / "client.pem").write_bytes(b"".join(b.bytes() for b in client.cert_chain_pems))
    client.private_key_pem.write_to_path(str(directory / "client.key"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
