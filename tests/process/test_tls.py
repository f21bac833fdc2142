"""TLS and mutual TLS between the client library and the broker, with certificates made at test
time by ``trustme`` (a throwaway CA; nothing is read from or written to the system trust store).
"""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trustme

from client import Connection
from client.errors import JobwireError
from protocol.model import JobSpec
from protocol.operations import Enqueue, Ping, Reserve
from tests.conftest import BrokerProcess, RunningBroker, jobwire_command
from tests.tools.wire import WireClient

StartBroker = Callable[..., Awaitable[RunningBroker]]


class Certs:
    """A CA, a server certificate for 127.0.0.1/localhost, and their files."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        server = self.ca.issue_cert("127.0.0.1", "localhost")
        self.cert = directory / "server.pem"
        self.key = directory / "server.key"
        self.ca_file = directory / "ca.pem"
        self.cert.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
        server.private_key_pem.write_to_path(str(self.key))
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def client_context(self, *, with_cert: bool = False) -> ssl.SSLContext:
        """A client context trusting the CA, optionally presenting a client certificate."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if with_cert:
            self.ca.issue_cert("worker-1@jobwire.test").configure_cert(context)
        return context


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return Certs(tmp_path)


async def _roundtrip(url: str, context: ssl.SSLContext | None) -> None:
    async with Connection(url, ssl=context, reconnect=False) as conn:
        assert (await conn.request(Ping()))["now"] > 0
        await conn.request(Enqueue("tls", (JobSpec("secure-1", "task", b"over tls"),)))
        body = await conn.request(Reserve(("tls",)))
        assert [job[0] for job in body["jobs"]] == ["secure-1"]


async def _refused(url: str, context: ssl.SSLContext | None) -> BaseException:
    conn = Connection(url, ssl=context, reconnect=False, connect_timeout=5)
    try:
        with pytest.raises((OSError, JobwireError)) as info:
            await conn.connect()
            await conn.request(Ping(), timeout=5)
    finally:
        await conn.close()
    return info.value


async def test_jobwires_url_with_a_trusted_certificate(start_broker: StartBroker,
                                                       certs: Certs) -> None:
    broker = await start_broker(tls_cert=certs.cert, tls_key=certs.key)
    await _roundtrip(f"jobwires://127.0.0.1:{broker.port}", certs.client_context())


async def test_untrusted_certificate_is_refused_by_the_client(start_broker: StartBroker,
                                                              certs: Certs) -> None:
    broker = await start_broker(tls_cert=certs.cert, tls_key=certs.key)
    error = await _refused(f"jobwires://127.0.0.1:{broker.port}", None)  # system trust only
    assert "CERTIFICATE_VERIFY_FAILED" in repr(error) or isinstance(error.__cause__,
                                                                    ssl.SSLError), error


async def test_plain_client_cannot_talk_to_a_tls_broker(start_broker: StartBroker,
                                                        certs: Certs) -> None:
    broker = await start_broker(tls_cert=certs.cert, tls_key=certs.key)
    with pytest.raises((ConnectionError, OSError, AssertionError, TimeoutError)):
        await WireClient.connect(broker.host, broker.port)
    assert broker.server is not None and broker.server.sessions == {}


async def test_mutual_tls_requires_a_client_certificate(start_broker: StartBroker,
                                                        certs: Certs) -> None:
    broker = await start_broker(tls_cert=certs.cert, tls_key=certs.key,
                                tls_client_ca=certs.ca_file)
    url = f"jobwires://127.0.0.1:{broker.port}"
    stranger = trustme.CA()  # a certificate from a CA the broker does not trust
    intruder = certs.client_context()
    stranger.issue_cert("intruder@jobwire.test").configure_cert(intruder)
    for context in (certs.client_context(with_cert=False), intruder):
        # The client trusts the broker, so the refusal is the broker's: not the client
        # refusing the broker's certificate, and not a timeout.
        error = await _refused(url, context)
        chain = repr(error) + repr(error.__cause__) + repr(error.__context__)
        assert "CERTIFICATE_VERIFY_FAILED" not in chain, chain
        assert not isinstance(error, TimeoutError) and "timed out" not in chain.lower(), chain
    assert broker.server is not None and broker.server.sessions == {}
    await _roundtrip(url, certs.client_context(with_cert=True))


def test_jobwire_serve_with_tls_flags(spawn_broker: Callable[..., BrokerProcess],
                                      certs: Certs) -> None:
    import asyncio

    process = spawn_broker("--tls-cert", str(certs.cert), "--tls-key", str(certs.key))
    asyncio.run(_roundtrip(f"jobwires://127.0.0.1:{process.port}", certs.client_context()))


@pytest.mark.parametrize("flags", [
    ["--tls-cert", "CERT"], ["--tls-key", "KEY"], ["--tls-client-ca", "CA"],
])
def test_incomplete_tls_flags_are_refused(tmp_path: Path, certs: Certs, flags: list[str]) -> None:
    paths = {"CERT": str(certs.cert), "KEY": str(certs.key), "CA": str(certs.ca_file)}
    command = [*jobwire_command(), "serve", "--port", "0", "--data-dir", str(tmp_path / "d"),
               *(paths.get(flag, flag) for flag in flags)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "TLS" in done.stderr, done.stderr


def test_unreadable_certificate_is_one_fatal_log_line(tmp_path: Path, certs: Certs) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    command = [*jobwire_command(), "serve", "--port", "0", "--data-dir", str(tmp_path / "d"),
               "--log-format", "json", "--tls-cert", str(bad), "--tls-key", str(certs.key)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    fatal = [line for line in done.stderr.splitlines() if '"fatal"' in line]
    assert len(fatal) == 1, done.stderr
