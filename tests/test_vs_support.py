"""Shared fixtures-as-functions for the STI-VS tests: a test PKI, a TLS server certificate and
aiohttp servers on loopback (in the test's loop or in a background thread for sync callers).

Imported by the other ``test_vs_*`` modules (no tests here)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stirshaken.core.certificates import create_crl, create_intermediate, create_root, create_sp_certificate, pem
from stirshaken.core.passport import Signer, div_claims, encode_token, passport_header
from stirshaken.core.tnauthlist import SPC, TNAuthList

ORIG = "12155551212"
DEST = "12155551213"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PKI:
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    inter_key: ec.EllipticCurvePrivateKey
    inter: x509.Certificate
    sp_key: ec.EllipticCurvePrivateKey
    sp: x509.Certificate
    dir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def chain_pem(self) -> bytes:
        return pem([self.sp, self.inter])

    def sp_cert(self, *, key: ec.EllipticCurvePrivateKey | None = None, **kw: Any) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = key or ec.generate_private_key(ec.SECP256R1())
        kw.setdefault("spc", "1234")
        return key, create_sp_certificate(key, self.inter, self.inter_key, **kw)

    def signer(self, x5u: str, key: ec.EllipticCurvePrivateKey | None = None, ppt: str = "shaken") -> Signer:
        return Signer(key or self.sp_key, x5u, ppt=ppt)


def make_pki(tmp: Path, *, crl_url: str | None = None) -> PKI:
    # valid from a day ago: test modules fix their clock (NOW) when they are imported, which in a
    # long run can be many minutes before a module-scoped fixture makes this PKI
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = create_root(root_key, not_before=since)
    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter = create_intermediate(inter_key, root, root_key, crl_url=crl_url, not_before=since)
    sp_key = ec.generate_private_key(ec.SECP256R1())
    sp = create_sp_certificate(sp_key, inter, inter_key, spc="1234", crl_url=crl_url, not_before=since)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "root.pem").write_bytes(pem([root]))
    return PKI(root_key, root, inter_key, inter, sp_key, sp, tmp)


def tls_server_cert(tmp: Path) -> tuple[ssl.SSLContext, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost; returns (server ctx, CA bundle path)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "VS test TLS CA")])
    now = dt.datetime.now(dt.timezone.utc)
    ca = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "tls-ca.pem").write_bytes(pem([ca]))
    (tmp / "tls-cert.pem").write_bytes(pem([cert]))
    (tmp / "tls-key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp / "tls-cert.pem", tmp / "tls-key.pem")
    return ctx, tmp / "tls-ca.pem"


class Repo:
    """An x5u repository: an aiohttp app with configurable routes and request counters."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.hits: dict[str, int] = {}
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.scheme = "http"
        self.files: dict[str, tuple[bytes, str]] = {}  # served at /files/<name>, may change after start

        async def files(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            self.hits["/files/" + name] = self.hits.get("/files/" + name, 0) + 1
            if name not in self.files:
                raise web.HTTPNotFound()
            body, ctype = self.files[name]
            return web.Response(body=body, content_type=ctype)

        self.app.router.add_get("/files/{name}", files)

    def route(self, path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        async def counted(request: web.Request) -> web.StreamResponse:
            self.hits[path] = self.hits.get(path, 0) + 1
            return await handler(request)

        self.app.router.add_get(path, counted)

    def static(self, path: str, body: bytes, content_type: str = "application/pem-certificate-chain", headers: dict[str, str] | None = None) -> None:
        async def h(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type=content_type, headers=headers)

        self.route(path, h)

    async def start(self, ssl_context: ssl.SSLContext | None = None, port: int = 0) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port, ssl_context=ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.scheme = "https" if ssl_context else "http"

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


class ThreadedRepo:
    """Runs a :class:`Repo` on its own loop in a thread (for sync ``Verifier.verify`` tests)."""

    def __init__(self, repo: Repo, ssl_context: ssl.SSLContext | None = None):
        self.repo = repo
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(repo.start(ssl_context), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.repo.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def stale_token(pki: PKI, x5u: str, age: int) -> str:
    s = pki.signer(x5u)
    return s.identity(orig=ORIG, dest=[DEST], attest="A", iat=int(time.time()) - age)


def div_identity(key: ec.EllipticCurvePrivateKey, x5u: str, *, orig: str, div: str, dest: str, iat: int | None = None) -> str:
    tok = encode_token(key, passport_header(x5u, "div"), div_claims(orig=orig, dest=dest, div=div, iat=iat))
    return f"{tok};info=<{x5u}>;alg=ES256;ppt=div"


def revoke_crl(pki: PKI, *serials: int) -> x509.CertificateRevocationList:
    now = dt.datetime.now(dt.timezone.utc)
    return create_crl(pki.inter, pki.inter_key, [(s, now - dt.timedelta(hours=1)) for s in serials])


def crl_der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


__all__ = ["DEST", "ORIG", "PKI", "Repo", "SPC", "TNAuthList", "ThreadedRepo", "crl_der", "div_identity", "free_port", "make_pki", "revoke_crl", "stale_token", "tls_server_cert"]
