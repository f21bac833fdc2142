"""TLS for the broker's listener: the server-side ``ssl.SSLContext`` from the settings.

``--tls-cert``/``--tls-key`` turn TLS on (clients connect with ``jobwires://``); adding
``--tls-client-ca`` makes it mutual: a client must present a certificate signed by that CA, or
its TLS handshake fails before any jobwire frame is read. TLS 1.2 is the oldest version offered.
"""

from __future__ import annotations

import ssl

from broker.config import Settings


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The listener's TLS context, or ``None`` when no certificate is configured.

    Args:
        settings: the broker's settings (``tls_cert``, ``tls_key``, ``tls_client_ca``).

    Returns:
        A server-side context with the certificate chain loaded (and client verification
        required when a client CA is set), or ``None`` for plain TCP.

    Raises:
        OSError: a file cannot be read, or (``ssl.SSLError``) is not a usable PEM certificate or
            key, or the key does not match the certificate.
    """
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_client_ca is not None:
        context.load_verify_locations(cafile=settings.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
