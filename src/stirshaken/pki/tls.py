"""TLS material and listening sockets for the PKI services (STI-PA, STI-CA, STI-CR) and the lab.

:func:`make_tls` makes a local TLS root and a server certificate (for loopback deployments and the
testbed); :func:`bind` and :func:`serve_on` put an aiohttp application on a pre-bound socket, so the
service knows its URL before it starts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stirshaken.core import certificates as certs
from stirshaken.core.keys import generate_private_key, write_private_key

__all__ = ["TLSFiles", "bind", "make_tls", "serve_on", "url_of"]


@dataclass
class TLSFiles:
    root: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


def make_tls(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")) -> TLSFiles:
    """A local TLS root and a server certificate for ``hosts`` (reused when present)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = TLSFiles(directory / "tls-root.pem", directory / "tls-server.pem", directory / "tls-server.key")
    if files.root.exists() and files.cert.exists() and files.key.exists():
        return files
    now = dt.datetime.now(dt.timezone.utc)
    root_key, srv_key = generate_private_key(), generate_private_key()
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stirshaken testbed TLS root")])
    root = (
        x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name).public_key(root_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    srv = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(root_name).public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=397))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(srv_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    write_private_key(directory / "tls-root.key", root_key, public=False)
    write_private_key(files.key, srv_key, public=False)
    files.root.write_bytes(certs.pem([root]))
    files.cert.write_bytes(certs.pem([srv]))
    return files


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket (port 0: ephemeral), bound before the service knows its URL."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket, scheme: str = "https") -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


async def serve_on(app: web.Application, sock: socket.socket, ssl_context: ssl.SSLContext | None) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    return runner
