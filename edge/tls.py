"""TLS as every implementation starts it: the standard library's ``ssl.SSLContext`` for a
server and for a client, TLS 1.3 only with the interpreter's default ciphers, from PEM
files; and, for ``serve --tls`` without files, a throwaway CA and a certificate for
localhost, 127.0.0.1 and ::1 made with trustme (the ecosystem's test CA), written to a
folder of their own so a client can be pointed at the CA (``send --ca``).

Each framework wraps its sockets its own way with these contexts (asyncio's ``ssl=``,
Tornado's ``ssl_options``, gevent's and Eventlet's ``wrap_socket``, trio's ``SSLStream``,
anyio's ``TLSStream``, our loop's ``SSLObject`` over a ``MemoryBIO``); Twisted builds its
own from the same files through pyOpenSSL (``twisted_impl/loops.py``).
"""

from __future__ import annotations

import os
import ssl
import tempfile

from ..common.options import ClientTls, ServerTls

__all__ = ["client_context", "server_context", "throwaway", "version_and_cipher"]


def server_context(tls: ServerTls) -> ssl.SSLContext:
    """A server's context: its certificate and key, TLS 1.3 and nothing older."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(tls.certfile, tls.keyfile)
    return context


def client_context(tls: ClientTls) -> ssl.SSLContext:
    """A client's context: it trusts ``tls.cafile`` (or the system's CAs), checks the
    server's name, and speaks TLS 1.3 only."""
    context = ssl.create_default_context(cafile=tls.cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def throwaway(folder: str | None = None) -> ServerTls:
    """A CA and a certificate it signed for localhost, 127.0.0.1 and ::1, as PEM files in
    ``folder`` (a new temporary one by default): ``ca.pem``, ``cert.pem``, ``key.pem``.
    Needs trustme (``pip install 'nbio[tls]'``)."""
    import trustme

    folder = folder or tempfile.mkdtemp(prefix="nbio-tls-")
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1", "::1")
    paths = {name: os.path.join(folder, f"{name}.pem") for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(paths["ca"])
    issued.cert_chain_pems[0].write_to_path(paths["cert"])
    for extra in issued.cert_chain_pems[1:]:
        extra.write_to_path(paths["cert"], append=True)
    issued.private_key_pem.write_to_path(paths["key"])
    return ServerTls(certfile=paths["cert"], keyfile=paths["key"], cafile=paths["ca"])


def version_and_cipher(obj: ssl.SSLObject | ssl.SSLSocket | None) -> tuple[str | None, str | None]:
    """What a finished handshake agreed: ``("TLSv1.3", "TLS_AES_256_GCM_SHA384")``."""
    if obj is None:
        return None, None
    cipher = obj.cipher()
    return obj.version(), cipher[0] if cipher else None
