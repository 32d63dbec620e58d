"""RFC 8555 ACME client for TNAuthList identifiers and the ``tkauth-01`` challenge (the SP side).

:class:`AcmeClient`: directory (RFC 8555 §7.1.1), nonces with one ``badNonce`` retry (§6.5),
newAccount (§7.3, with External Account Binding §7.3.4), newOrder for a TNAuthList identifier
(§7.4; RFC 9448 §3), the ``tkauth-01`` answer ``{"atc": <SPC token>}`` (RFC 9447 §3, RFC 9448
§5), polling with ``Retry-After`` (§7.5.1), finalize (§7.4), POST-as-GET download (§7.4.2) and
revokeCert (§7.6).  Messages are the typed objects of :mod:`stirshaken.pki.acme`, shared with the
STI-CA; JOSE comes from :mod:`stirshaken.core.jose`.  The SP's whole certificate flow around it
(STI-PA token, storage, renewal) is :mod:`stirshaken.pki.enrollment`; the STI-PA client is
:mod:`stirshaken.pki.pa_client`.  Errors are :class:`~stirshaken.pki.acme.AcmeProblem`.

Why not certbot's ``acme`` library with a thin tkauth-01 layer: it is synchronous (``requests``)
while this client runs inside ``stirshaken serve``'s event loop (renewal of ACME-managed signers
next to live traffic), so it would need a thread per call; it would bring ``requests``,
``josepy`` and ``pyOpenSSL`` into the runtime dependencies; and TNAuthList identifiers need a
replaced ``new_order`` there anyway.  It stays what it is best at here: the independent ACME peer
the tests run against our STI-CA (tests/test_acme_certbot.py, with and without EAB).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import textwrap
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar

import aiohttp
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core.b64 import b64url_encode
from stirshaken.core.jose import jwk_of, sign_jws
from stirshaken.core.tnauthlist import TNAuthList
from stirshaken.pki.acme import (
    ERR, JOSE_JSON, PEM_CHAIN, AcmeProblem, Authorization, Challenge, Directory, Finalize, Identifier, NewAccount, NewOrder, Order,
    Revocation, TkauthAnswer, eab_hmac_key, make_eab,
)


def short_text(text: str) -> str:
    """A peer's text (an error page, a hook's stderr line) on one line, at most 200 characters,
    cut between words."""
    return textwrap.shorten(text, 200, placeholder=" ...") or "(empty)"


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes
    links: list[tuple[str, str]]

    def json(self) -> dict[str, Any]:
        out = orjson.loads(self.body)
        return out if isinstance(out, dict) else {}

    def parse(self, kind: type[_M], url: str) -> _M:
        """The body as an ``kind`` message; a body that is not one raises :class:`AcmeProblem`
        ``malformed`` (status 0: found by the client) naming ``url`` and the member."""
        return _parse(kind, self.body, url)

    @property
    def location(self) -> str | None:
        return self.headers.get("Location")

    def link(self, rel: str) -> str | None:
        for url, r in self.links:
            if r == rel:
                return url
        return None


_M = TypeVar("_M", Directory, Order, Authorization, Challenge)


def _parse(kind: type[_M], body: bytes, url: str) -> _M:
    try:
        return kind.from_json(orjson.loads(body))
    except orjson.JSONDecodeError:
        raise AcmeProblem("malformed", f"{url}: the server's {kind.__name__.lower()} is not JSON", 0) from None
    except AcmeProblem as p:
        raise AcmeProblem("malformed", f"{url}: the server's {kind.__name__.lower()} is malformed: {p.detail}", 0) from None


def _links(resp: aiohttp.ClientResponse) -> list[tuple[str, str]]:
    out = []
    for value in resp.headers.getall("Link", []):
        for part in value.split(","):
            part = part.strip()
            if not part.startswith("<") or ">" not in part:
                continue
            url, params = part[1:].split(">", 1)
            rel = ""
            for p in params.split(";"):
                p = p.strip()
                if p.startswith("rel="):
                    rel = p[4:].strip('"')
            out.append((url, rel))
    return out


class AcmeClient:
    """RFC 8555 client with ES256 account keys and TNAuthList orders (RFC 9448)."""

    def __init__(
        self,
        directory_url: str,
        account_key: ec.EllipticCurvePrivateKey,
        session: aiohttp.ClientSession,
        *,
        identifier_encoding: str = "base64url",
        poll_interval: float = 0.2,
        poll_timeout: float = 30.0,
    ):
        self.directory_url = directory_url
        self.key = account_key
        self.session = session
        self.identifier_encoding = identifier_encoding
        self.poll_interval = poll_interval
        self.poll_timeout = poll_timeout
        self.account_url: str | None = None
        self._dir: Directory | None = None
        self._nonce: str | None = None

    async def directory(self) -> Directory:
        """The server's directory (RFC 8555 §7.1.1), fetched once."""
        if self._dir is None:
            async with self.session.get(self.directory_url) as resp:
                self._remember_nonce(resp)
                if resp.status != 200:
                    raise AcmeProblem("serverInternal", f"{self.directory_url} is not an ACME directory: it answered HTTP {resp.status}",
                                      resp.status)
                body = await resp.read()
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise AcmeProblem("malformed", f"{self.directory_url} is not an ACME directory: its answer is not JSON "
                                               "(RFC 8555 §7.1.1)", 0) from None
            try:
                self._dir = Directory.from_json(doc)
            except AcmeProblem as p:
                raise AcmeProblem("malformed", f"{self.directory_url} is not an ACME directory: {p.detail}", 0) from None
        return self._dir

    def _remember_nonce(self, resp: aiohttp.ClientResponse) -> None:
        nonce = resp.headers.get("Replay-Nonce")
        if nonce:
            self._nonce = nonce

    async def nonce(self) -> str:
        if self._nonce is not None:
            n, self._nonce = self._nonce, None
            return n
        url = (await self.directory()).new_nonce
        async with self.session.head(url) as resp:
            n = resp.headers.get("Replay-Nonce")
        if not n:
            raise AcmeProblem("badNonce", "server gave no Replay-Nonce", 0)
        return n

    async def post(self, url: str, payload: Mapping[str, Any] | None, *, use_jwk: bool = False, _retry: bool = True) -> Response:
        """Signed POST (or POST-as-GET when ``payload`` is None); retries once on badNonce (§6.5)."""
        protected: dict[str, Any] = {"alg": "ES256", "nonce": await self.nonce(), "url": url}
        if use_jwk or self.account_url is None:
            protected["jwk"] = jwk_of(self.key)
        else:
            protected["kid"] = self.account_url
        body = sign_jws(self.key, protected, None if payload is None else orjson.dumps(dict(payload)))
        async with self.session.post(url, data=orjson.dumps(body), headers={"Content-Type": JOSE_JSON}) as resp:
            self._remember_nonce(resp)
            raw = await resp.read()
            res = Response(resp.status, dict(resp.headers), raw, _links(resp))
        if res.status >= 400:
            try:
                problem = orjson.loads(raw)
            except orjson.JSONDecodeError:
                problem = {"detail": short_text(raw.decode("utf-8", "replace"))}
            err = AcmeProblem.from_document(problem if isinstance(problem, dict) else {}, res.status)
            if err.type == ERR + "badNonce" and _retry:
                return await self.post(url, payload, use_jwk=use_jwk, _retry=False)
            raise err
        return res

    async def register(
        self, contact: list[str] | None = None, *, only_existing: bool = False, eab: tuple[str, str] | None = None
    ) -> str:
        """newAccount (RFC 8555 §7.3); ``eab``: ``(kid, base64url HMAC key)`` for an external
        account binding (§7.3.4).  A directory with ``externalAccountRequired`` and no ``eab``
        raises :class:`AcmeProblem` ``externalAccountRequired`` before anything is sent."""
        d = await self.directory()
        if only_existing:
            req = NewAccount(only_return_existing=True)
        else:
            binding = None
            if eab is not None:
                binding = make_eab(eab[0], eab_hmac_key(eab[1]), jwk_of(self.key), d.new_account)
            elif d.meta is not None and d.meta.external_account_required:
                raise AcmeProblem(
                    "externalAccountRequired", "the STI-CA requires an external account binding: give --eab-kid and --eab-hmac-key", 0
                )
            req = NewAccount(terms_of_service_agreed=True, contact=tuple(contact) if contact else None, external_account_binding=binding)
        res = await self.post(d.new_account, req.to_json(), use_jwk=True)
        if not res.location:
            raise AcmeProblem("malformed", "newAccount without Location", res.status)
        self.account_url = res.location
        return res.location

    def identifier_value(self, tnal: TNAuthList) -> str:
        return tnal.to_base64() if self.identifier_encoding == "base64" else tnal.to_base64url()

    async def new_order(
        self, tnal: TNAuthList, *, not_before: dt.datetime | None = None, not_after: dt.datetime | None = None
    ) -> tuple[str, Order]:
        """A new order for ``tnal`` (RFC 8555 §7.4): its URL and the order."""
        d = await self.directory()
        req = NewOrder((Identifier(self.identifier_value(tnal)),), not_before=not_before, not_after=not_after)
        res = await self.post(d.new_order, req.to_json())
        if not res.location:
            raise AcmeProblem("malformed", "newOrder without Location", res.status)
        return res.location, res.parse(Order, res.location)

    async def get(self, url: str) -> Response:
        return await self.post(url, None)

    async def answer_tkauth(self, challenge_url: str, spc_token: str) -> Challenge:
        """Answer tkauth-01 with ``{"atc": <token>}`` (RFC 9448 §5)."""
        return (await self.post(challenge_url, TkauthAnswer(spc_token).to_json())).parse(Challenge, challenge_url)

    async def poll(self, url: str, done: tuple[str, ...], kind: type[_M]) -> _M:
        """POST-as-GET ``url`` until the ``kind`` object's status is one of ``done`` (honouring
        ``Retry-After``, RFC 8555 §7.5.1); ``serverInternal`` after :attr:`poll_timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.poll_timeout
        while True:
            res = await self.get(url)
            obj = res.parse(kind, url)
            if obj.status in done:
                return obj
            if loop.time() > deadline:
                raise AcmeProblem("serverInternal", f"{url} stayed {obj.status}", 0)
            try:
                wait = float(res.headers.get("Retry-After", self.poll_interval))
            except ValueError:
                wait = self.poll_interval
            await asyncio.sleep(min(max(wait, 0.05), 5.0))

    async def finalize(self, order_url: str, order: Order, csr: x509.CertificateSigningRequest) -> Order:
        """Finalize ``order`` with ``csr`` (RFC 8555 §7.4) and wait until it is valid."""
        der = csr.public_bytes(serialization.Encoding.DER)
        res = await self.post(order.finalize, Finalize(b64url_encode(der)).to_json())
        obj = res.parse(Order, order.finalize)
        if obj.status != "valid":
            obj = await self.poll(order_url, ("valid", "invalid"), Order)
        if obj.status != "valid":
            raise obj.problem or AcmeProblem("serverInternal", "order became invalid", 0)
        return obj

    async def download(self, cert_url: str) -> tuple[bytes, Response]:
        res = await self.get(cert_url)
        ctype = res.headers.get("Content-Type", "")
        if not ctype.startswith(PEM_CHAIN):
            raise AcmeProblem("malformed", f"certificate served as {ctype!r}", res.status)
        return res.body, res

    async def revoke(self, cert: x509.Certificate, reason: int | None = None) -> None:
        d = await self.directory()
        if d.revoke_cert is None:
            raise AcmeProblem("malformed", "the directory has no revokeCert", 0)
        await self.post(d.revoke_cert, Revocation(b64url_encode(cert.public_bytes(serialization.Encoding.DER)), reason).to_json())


__all__ = ["AcmeClient", "Response", "short_text"]
