"""The SP's client of the STI-PA API (docs/requirements.md PA-01..PA-04, ATIS-1000080 §6.3.5).

:class:`PAClient` speaks the published ``/api/v1`` shape of the STI-PA: login (PA-03), the SPC
token bound to an ACME account key fingerprint (PA-04, RFC 9448 §4), the signed list of trusted
STI-CAs (PA-01) and the SHAKEN CRL (PA-02); plus this STI-PA's own admin calls (revocation,
trusted CAs).  The service side is :mod:`stirshaken.pki.pa`; sessions come from
:mod:`stirshaken.net.http`.  Raises :class:`PAClientError` when the STI-PA refuses a request.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
from cryptography import x509

from stirshaken.core import certificates as certs
from stirshaken.pki.acme import TNAUTHLIST


class PAClientError(Exception):
    """The STI-PA refused a request."""


class PAClient:
    """Client of the STI-PA API (PA-03 login, PA-04 SPC token, PA-01 CA list, PA-02 CRL) in its
    published shape: ``{base}/api/v1/auth/login``, ``{base}/api/v1/account/{SPC}/token``,
    ``{base}/api/v1/ca-list`` and ``{base}/download/v1/crl``, with the raw access token in
    ``Authorization`` (docs/pki.md "STI-PA API").  Admin calls (``/revoke``, ``/admin/ca``) are
    this STI-PA's own and live at the root."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession):
        self.base = base_url.rstrip("/")
        self.session = session
        self.access_token: str | None = None

    async def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        if self.access_token:  # the raw token, as the published STI-PA API has it (Bearer also accepted)
            headers["Authorization"] = self.access_token
        data = None if body is None else orjson.dumps(body)
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(method, self.base + path, data=data, headers=headers) as resp:
            raw = await resp.read()
        try:
            out = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise PAClientError(f"{self.base} is not an STI-PA API: {method} {path} answered HTTP {resp.status}, not JSON") from None
        if resp.status >= 400 or not isinstance(out, dict) or out.get("status") != "success":
            msg = out.get("message") if isinstance(out, dict) else None
            raise PAClientError(f"STI-PA {path}: HTTP {resp.status}: {msg or out}")
        return out

    #: seconds a refused first connection is retried (a STI-PA started a moment ago, as in
    #: docs/pki.md's lab block, is not listening yet); then the refusal is the error
    STARTUP_GRACE = 10.0

    async def login(self, user: str, password: str) -> str:
        """Log in (``/api/v1/auth/login``); a refused connection is retried for
        :data:`STARTUP_GRACE` seconds.  Raises :class:`PAClientError` or aiohttp's error."""
        deadline = time.monotonic() + self.STARTUP_GRACE
        while True:
            try:
                out = await self._call("POST", "/api/v1/auth/login", {"userId": user, "password": password})
                break
            except aiohttp.ClientConnectorError as exc:
                if not isinstance(exc.os_error, ConnectionRefusedError) or time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.25)
        self.access_token = str(out["accessToken"])
        return self.access_token

    async def spc_token(self, ocn: str, tkvalue: str, fingerprint: str, *, ca: bool = False) -> dict[str, Any]:
        """``{"token", "crl", "iss"}`` for an SPC token bound to ``fingerprint`` (PA-04)."""
        return await self._call(
            "POST", f"/api/v1/account/{ocn}/token", {"atc": {"tktype": TNAUTHLIST, "tkvalue": tkvalue, "ca": ca, "fingerprint": fingerprint}}
        )

    async def ca_list(self) -> str:
        return str((await self._call("GET", "/api/v1/ca-list"))["caList"])

    async def revoke(self, *, serial: int | None = None, jti: str | None = None, reason: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"jti": jti} if jti else {"serial": format(serial or 0, "x")}
        if reason:
            body["reason"] = reason
        return await self._call("POST", "/revoke", body)

    async def add_trusted_ca(self, pem_text: str) -> None:
        await self._call("POST", "/admin/ca", {"certificate": pem_text})

    async def crl(self) -> x509.CertificateRevocationList:
        async with self.session.get(self.base + "/download/v1/crl") as resp:
            data = await resp.read()
            if resp.status != 200:
                raise PAClientError(f"STI-PA /download/v1/crl: HTTP {resp.status}")
        return certs.load_crl(data)


__all__ = ["PAClient", "PAClientError"]
