"""Shared helpers for the PKI tests (STI-PA, STI-CA, STI-CR, ACME): a running loopback testbed
over HTTPS and a raw ACME client that can forge every part of a request.

Imported by the ``test_pki_*`` and ``test_acme_*`` modules (no tests here)."""

from __future__ import annotations

import contextlib
import secrets
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import orjson
import psycopg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core import certificates as certs
from stirshaken.core.jose import jwk_of, sign_jws
from stirshaken.net.http import client_ssl_context
from stirshaken.pki.pa_client import PAClient
from stirshaken.core.b64 import b64url_encode
from stirshaken.pki.pa import account_key_fingerprint
from stirshaken.core.passport import encode_token
from stirshaken.lab.testbed import Testbed
from stirshaken.core.tnauthlist import TNAuthList

ERR = "urn:ietf:params:acme:error:"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.asynccontextmanager
async def running_testbed(state_dir: Path, **kwargs: Any) -> AsyncIterator[Testbed]:
    tb = Testbed(state_dir=state_dir, **kwargs)
    await tb.start()
    try:
        yield tb
    finally:
        await tb.stop()


def session_for(tb: Testbed) -> aiohttp.ClientSession:
    assert tb.tls is not None
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_ssl_context(tb.tls.root)))


class RawAcme:
    """An ACME client that exposes the JWS so tests can break each part of it."""

    def __init__(self, tb: Testbed, session: aiohttp.ClientSession, key: ec.EllipticCurvePrivateKey | None = None):
        self.tb = tb
        self.session = session
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        self.base = tb.urls["ca"] + "/acme/"
        self.kid: str | None = None

    def url(self, path: str) -> str:
        return self.base + path

    async def nonce(self) -> str:
        async with self.session.head(self.url("new-nonce")) as r:
            return r.headers["Replay-Nonce"]

    async def raw(self, url: str, body: Any, content_type: str = "application/jose+json") -> tuple[int, dict[str, Any], Any]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with self.session.post(url, data=data, headers={"Content-Type": content_type}) as r:
            raw = await r.read()
            headers = dict(r.headers)
            headers["_links"] = r.headers.getall("Link", [])
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = raw
        return r.status, headers, parsed

    async def post(
        self,
        url: str,
        payload: Any = None,
        *,
        use_jwk: bool = False,
        nonce: str | None = None,
        url_header: str | None = None,
        alg: str = "ES256",
        key: ec.EllipticCurvePrivateKey | None = None,
        kid: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any], Any]:
        protected: dict[str, Any] = {"alg": alg, "nonce": nonce or await self.nonce(), "url": url_header or url}
        if use_jwk or (self.kid is None and kid is None):
            protected["jwk"] = jwk_of(key or self.key)
        else:
            protected["kid"] = kid or self.kid
        protected.update(extra or {})
        body = sign_jws(key or self.key, protected, None if payload is None else orjson.dumps(payload))
        return await self.raw(url, body)

    async def register(self) -> str:
        status, headers, _ = await self.post(self.url("new-account"), {"termsOfServiceAgreed": True}, use_jwk=True)
        assert status in (200, 201), status
        self.kid = headers["Location"]
        return self.kid

    async def new_order(self, tnal: TNAuthList | None = None, value: str | None = None) -> tuple[str, dict[str, Any]]:
        value = value or (tnal or TNAuthList.for_spc(self.tb.ocn)).to_base64url()
        status, headers, body = await self.post(self.url("new-order"), {"identifiers": [{"type": "TNAuthList", "value": value}]})
        assert status == 201, body
        return headers["Location"], body

    async def challenge_of(self, order: dict[str, Any]) -> dict[str, Any]:
        _s, _h, authz = await self.post(order["authorizations"][0])
        return authz["challenges"][0]

    async def spc_token(self, key: ec.EllipticCurvePrivateKey | None = None, tkvalue: str | None = None) -> str:
        async with session_for(self.tb) as s:
            pa = PAClient(self.tb.urls["pa"], s)
            await pa.login(f"sp-{self.tb.ocn}", self.tb.sp_password)
            tok = await pa.spc_token(
                self.tb.ocn, tkvalue or TNAuthList.for_spc(self.tb.ocn).to_base64url(), account_key_fingerprint(key or self.key)
            )
        return str(tok["token"])

    async def answer(self, order: dict[str, Any], token: str) -> dict[str, Any]:
        chall = await self.challenge_of(order)
        status, headers, body = await self.post(chall["url"], {"atc": token})
        assert status == 200, body
        assert any('rel="up"' in link for link in headers["_links"]), headers
        return body

    async def ready_order(self) -> tuple[str, dict[str, Any]]:
        order_url, order = await self.new_order()
        chall = await self.answer(order, await self.spc_token())
        assert chall["status"] == "valid", chall
        _s, _h, order = await self.post(order_url)
        assert order["status"] == "ready", order
        return order_url, order

    async def finalize(self, order: dict[str, Any], csr_der: bytes) -> tuple[int, dict[str, Any], Any]:
        return await self.post(order["finalize"], {"csr": b64url_encode(csr_der)})


def csr_der(key: Any = None, spc: str = "1234", **kwargs: Any) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    return certs.build_csr(key, spc=spc, **kwargs).public_bytes(serialization.Encoding.DER)


def forge_token(tb: Testbed, *, key: Any = None, x5u: str | None = None, exp: int | None = None, jti: str | None = None,
                atc: dict[str, Any] | None = None, account_key: Any = None) -> str:
    """An SPC token signed with the PA's key (or ``key``), with any claim overridden."""
    assert tb.pa is not None
    claims = {
        "exp": int(time.time()) + 600 if exp is None else exp,
        "jti": jti or str(uuid.uuid4()),
        "atc": atc
        or {"tktype": "TNAuthList", "tkvalue": TNAuthList.for_spc(tb.ocn).to_base64url(), "ca": False,
            "fingerprint": account_key_fingerprint(account_key)},
    }
    header = {"alg": "ES256", "typ": "JWT", "x5u": x5u or tb.pa.signer_url}
    return encode_token(key or tb.pa.keys.signer_key, header, claims)


@contextlib.contextmanager
def postgres_database() -> Any:
    """A fresh PostgreSQL database on 127.0.0.1:5432; yields its SQLAlchemy URL and drops it after."""
    name = "stirshaken_pki_" + secrets.token_hex(6)
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


__all__ = ["ERR", "RawAcme", "csr_der", "forge_token", "postgres_database", "running_testbed", "session_for"]
