"""The SP side of the SHAKEN PKI: the STI-PA client and an RFC 8555 ACME client for TNAuthList.

* :class:`PAClient`: the STI-PA API (docs/requirements.md PA-03/PA-04, the ``/api/v1`` shape:
  login, SPC token, CA list, CRL).
* :class:`AcmeClient`: RFC 8555 client for TNAuthList identifiers (RFC 9448 §3) and the
  ``tkauth-01`` challenge (RFC 9447 §3, RFC 9448 §5): directory, nonces with ``badNonce`` retry
  (§6.5), newAccount (§7.3, with External Account Binding §7.3.4), newOrder (§7.4), the
  challenge answer ``{"atc": <SPC token>}``, finalize, POST-as-GET download (§7.4.2) and
  revokeCert (§7.6).  Messages are the typed objects of :mod:`stirshaken.pki.acme`, shared with
  the STI-CA; JOSE comes from :mod:`stirshaken.core.jose`; sessions from :mod:`stirshaken.net.http`.
* :func:`obtain_certificate` / :func:`ensure_certificate` / :func:`renew_forever`: the whole
  ATIS-1000080 §6.3.5 flow (docs/requirements.md AC-01): PA login, SPC token bound to the account
  key fingerprint, ACME order, answer, finalize with a CSR for a fresh P-256 key (written 0600),
  download, publish to the STI-CR, and renewal ``renew_before_days`` before expiry (AC-05).

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
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, TypeVar

import aiohttp
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core import certificates as certs
from stirshaken.core.b64 import b64url_encode
from stirshaken.core.keys import generate_private_key, load_private_key, public_key_pem, public_path_for, write_private_key, write_secret
from stirshaken.core.jose import JWKError, account_key_fingerprint, jwk_of, jwk_public_key, sign_jws, thumbprint  # noqa: F401
from stirshaken.core.tnauthlist import TNAuthList
from stirshaken.net.http import client_session, client_ssl_context  # noqa: F401 (re-exported)
from stirshaken.pki.acme import (
    CERTIFICATE_LOCATION_HEADER, ERR, JOSE_JSON, PEM_CHAIN, PUBLISH_ERROR_HEADER, TKAUTH01, TNAUTHLIST, AcmeProblem, Authorization,
    Challenge, Directory, Finalize, Identifier, NewAccount, NewOrder, Order, Revocation, TkauthAnswer, eab_hmac_key, make_eab,
)

log = logging.getLogger("stirshaken.pki.acme_client")

#: ``state_dir/current`` -> ``archive/<serial hex>``: the active ``key.pem``, ``cert.pem``, ``chain.pem``
CURRENT = "current"
#: the non-secret options of ``stirshaken acme`` kept for ``acme renew`` / ``acme list``
SETTINGS = "acme.json"

#: total seconds for one request of the SP flow (STI-PA, STI-CA, STI-CR)
FLOW_TIMEOUT = 30.0



# --- errors ------------------------------------------------------------------------------------


class PAClientError(Exception):
    """The STI-PA refused a request."""


class PublishError(Exception):
    """The certificate was issued and stored, but neither the STI-CA nor this client could put
    the chain on the STI-CR, so no x5u points at it (the message says why)."""


class DeployHookError(Exception):
    """The ``--deploy-hook`` command failed (its exit status and the end of its stderr)."""


# --- STI-PA client -----------------------------------------------------------------------------


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
            raise PAClientError(f"STI-PA {path}: HTTP {resp.status}, not JSON") from None
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


# --- ACME client -------------------------------------------------------------------------------


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
                    raise AcmeProblem("serverInternal", "directory unavailable", resp.status)
                body = await resp.read()
            self._dir = _parse(Directory, body, self.directory_url)
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
                problem = {"detail": raw[:200].decode("utf-8", "replace")}
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


# --- the SP flow -------------------------------------------------------------------------------


@dataclass
class AcmeConfig:
    """Where and as whom an SP obtains its SHAKEN certificate.

    ``eab_kid`` / ``eab_hmac_key``: the external account binding the STI-CA issued (RFC 8555 §7.3.4).
    ``state_dir`` holds ``account.key`` (0600), ``account.json``, ``sp.key`` (0600), ``sp.pem``
    (leaf), ``sp-chain.pem`` (leaf + intermediates) and ``cert.json`` (x5u URL, serial, expiry).
    When the STI-CA publishes the chain itself (``X-Shaken-Certificate-Location``) that URL becomes
    the x5u; otherwise ``cr_url``/``cr_token`` publish it with an authenticated PUT to the STI-CR.
    """

    directory_url: str
    pa_url: str
    ocn: str
    username: str
    password: str
    state_dir: Path
    ca_bundle: str | None = None
    cr_url: str | None = None
    cr_token: str | None = None
    identifier_encoding: str = "base64url"
    contact: list[str] = field(default_factory=list)
    org: str = "STI Participant"
    days: int | None = None
    eab_kid: str | None = None
    eab_hmac_key: str | None = None


@dataclass
class CertificateStatus:
    """The SP's current certificate (what :func:`ensure_certificate` returns)."""

    key_path: Path
    cert_path: Path
    chain_path: Path
    x5u: str | None
    serial: int
    not_after: dt.datetime
    renewed: bool = False

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(key_path=str(self.key_path), cert_path=str(self.cert_path), chain_path=str(self.chain_path))
        d.update(serial=format(self.serial, "x"), not_after=self.not_after.isoformat())
        return d


def _account_key(state_dir: Path) -> ec.EllipticCurvePrivateKey:
    path = state_dir / "account.key"
    if path.exists():
        return load_private_key(path)
    key = generate_private_key()
    write_private_key(path, key, public=False)
    return key


def current_certificate(state_dir: Path) -> CertificateStatus | None:
    """The certificate recorded in ``state_dir``, or None."""
    meta = state_dir / "cert.json"
    if not meta.exists():
        return None
    try:
        info = orjson.loads(meta.read_bytes())
        leaf = certs.load_certificates((state_dir / "sp.pem").read_bytes())[0]
    except Exception:  # unreadable, not JSON or no certificate: nothing recorded
        return None
    return CertificateStatus(
        key_path=state_dir / "sp.key", cert_path=state_dir / "sp.pem", chain_path=state_dir / "sp-chain.pem",
        x5u=info.get("x5u"), serial=leaf.serial_number, not_after=leaf.not_valid_after_utc,
    )


async def _publish(session: aiohttp.ClientSession, cfg: AcmeConfig, name: str, chain_pem: bytes) -> str:
    assert cfg.cr_url is not None
    url = f"{cfg.cr_url.rstrip('/')}/{name}"
    headers = {"Content-Type": PEM_CHAIN}
    if cfg.cr_token:
        headers["Authorization"] = f"Bearer {cfg.cr_token}"
    async with session.put(url, data=chain_pem, headers=headers) as resp:
        if resp.status not in (200, 201, 204):
            raise PAClientError(f"STI-CR refused the upload: HTTP {resp.status}: {(await resp.text())[:200]}")
    return url


async def obtain_certificate(cfg: AcmeConfig, *, session: aiohttp.ClientSession | None = None) -> CertificateStatus:
    """Run the whole ATIS-1000080 §6.3.5 / RFC 9448 flow once and store the result in ``state_dir``."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    own = session is None
    if session is None:
        session = client_session(ca_bundle=cfg.ca_bundle, timeout=FLOW_TIMEOUT, connect_timeout=None)
    try:
        account_key = _account_key(cfg.state_dir)
        tnal = TNAuthList.for_spc(cfg.ocn)
        client = AcmeClient(cfg.directory_url, account_key, session, identifier_encoding=cfg.identifier_encoding)
        # 1. SPC token from the STI-PA, bound to the ACME account key (RFC 9448 §4, PA-04/PA-05)
        pa = PAClient(cfg.pa_url, session)
        await pa.login(cfg.username, cfg.password)
        tok = await pa.spc_token(cfg.ocn, client.identifier_value(tnal), account_key_fingerprint(account_key))
        # 2. account and order (RFC 8555 §7.3, §7.4; RFC 9448 §3)
        await client.register(cfg.contact, eab=(cfg.eab_kid, cfg.eab_hmac_key) if cfg.eab_kid and cfg.eab_hmac_key else None)
        (cfg.state_dir / "account.json").write_bytes(orjson.dumps({"url": client.account_url, "directory": cfg.directory_url}))
        not_after = None
        if cfg.days:
            not_after = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=cfg.days)
        order_url, order = await client.new_order(tnal, not_after=not_after)
        # 3. tkauth-01 (RFC 9448 §5)
        for authz_url in order.authorizations:
            authz = (await client.get(authz_url)).parse(Authorization, authz_url)
            if authz.status == "valid":
                continue
            chall = authz.challenge(TKAUTH01)
            if chall is None or chall.tkauth_type != "atc":
                raise AcmeProblem("unsupportedIdentifier", "no tkauth-01/atc challenge offered", 0)
            await client.answer_tkauth(chall.url, tok["token"])
            authz = await client.poll(authz_url, ("valid", "invalid"), Authorization)
            if authz.status != "valid":
                err = next((c.problem for c in authz.challenges if c.error), None)
                raise err or AcmeProblem("unauthorized", "authorization failed", 0)
        order = await client.poll(order_url, ("ready", "valid", "invalid"), Order)
        if order.status == "invalid":
            raise order.problem or AcmeProblem("unauthorized", "order invalid", 0)
        # 4. finalize with a CSR for a new P-256 key (ATIS-1000080 §6.4.1)
        sp_key = generate_private_key()
        csr = certs.build_csr(sp_key, tnauthlist=tnal, org=cfg.org)
        order = await client.finalize(order_url, order, csr)
        if order.certificate is None:
            raise AcmeProblem("malformed", f"{order_url}: the valid order has no certificate URL", 0)
        chain_pem, res = await client.download(order.certificate)
        chain = certs.load_certificates(chain_pem)
        leaf = chain[0]
        if leaf.public_key().public_numbers() != sp_key.public_key().public_numbers():
            raise AcmeProblem("serverInternal", "issued certificate is not for our key", 0)
        # 5. publish at the STI-CR (CR-01..CR-03); a failure is reported after the files are stored
        x5u = res.headers.get(CERTIFICATE_LOCATION_HEADER)
        publish_error: str | None = None
        if cfg.cr_url and not x5u:
            try:
                x5u = await _publish(session, cfg, f"{cfg.ocn}-{leaf.serial_number:x}.pem", chain_pem)
            except (PAClientError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
                publish_error = f"the upload to the STI-CR {cfg.cr_url} failed: {exc or type(exc).__name__}"
        elif not x5u and res.headers.get(PUBLISH_ERROR_HEADER):
            publish_error = res.headers[PUBLISH_ERROR_HEADER] + " (give --cr-url/--cr-token to upload it yourself)"
        # 6. store: key first (0600), then certificate files, then the metadata that points at them;
        #    each file is written aside and renamed into place, so a reader (a signer reloading)
        #    sees whole files, and at worst a key that does not match sp.pem yet (it checks)
        sd = cfg.state_dir
        tmp = sd / ".sp.key.new"
        write_private_key(tmp, sp_key, public=False)
        tmp.replace(sd / "sp.key")
        public_path_for(sd / "sp.key").write_bytes(public_key_pem(sp_key))
        meta = {"x5u": x5u, "serial": format(leaf.serial_number, "x"), "not_after": leaf.not_valid_after_utc.isoformat(),
                "order": order_url, "certificate": order.certificate, "crl": tok.get("crl")}
        leaf_pem = certs.pem([leaf])
        for name, data in (("sp.pem", leaf_pem), ("sp-chain.pem", chain_pem), ("cert.json", orjson.dumps(meta))):
            (sd / f".{name}.new").write_bytes(data)
            (sd / f".{name}.new").replace(sd / name)
        _install_current(sd, format(leaf.serial_number, "x"), sp_key, leaf_pem, chain_pem)
        if publish_error is not None:
            raise PublishError(f"certificate {leaf.serial_number:x} was issued and stored in {sd}, but not published: {publish_error}")
        return CertificateStatus(
            key_path=cfg.state_dir / "sp.key", cert_path=cfg.state_dir / "sp.pem", chain_path=cfg.state_dir / "sp-chain.pem",
            x5u=x5u, serial=leaf.serial_number, not_after=leaf.not_valid_after_utc, renewed=True,
        )
    finally:
        if own:
            await session.close()


def _install_current(sd: Path, serial_hex: str, key: ec.EllipticCurvePrivateKey, cert_pem: bytes, chain_pem: bytes) -> Path:
    """Write ``archive/<serial>/{key,cert,chain}.pem`` and point ``current`` at it with one
    symlink rename, so ``current/key.pem`` and ``current/chain.pem`` always belong together."""
    target = sd / "archive" / serial_hex
    target.mkdir(parents=True, exist_ok=True)
    write_private_key(target / "key.pem", key, public=False)
    for name, data in (("cert.pem", cert_pem), ("chain.pem", chain_pem)):
        (target / f".{name}.new").write_bytes(data)
        (target / f".{name}.new").replace(target / name)
    tmp = sd / f".{CURRENT}.new"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(Path("archive") / serial_hex, target_is_directory=True)
    tmp.replace(sd / CURRENT)
    return sd / CURRENT


def save_settings(state_dir: Path, settings: Mapping[str, Any]) -> None:
    """Keep the non-secret options of a managed certificate in ``state_dir/acme.json`` (0600)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / SETTINGS
    write_secret(path, orjson.dumps(dict(settings), option=orjson.OPT_INDENT_2))  # 0600 from creation, replaced atomically


def load_settings(state_dir: Path) -> dict[str, Any] | None:
    """The options saved by :func:`save_settings`, or None when ``state_dir`` is not managed."""
    try:
        out = orjson.loads((state_dir / SETTINGS).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return out if isinstance(out, dict) else None


def managed_state_dirs(paths: list[Path]) -> list[Path]:
    """Each of ``paths`` that is a managed state directory (has ``acme.json`` or ``cert.json``),
    or, for a directory that is not, its immediate subdirectories that are."""
    out: list[Path] = []
    for p in paths:
        if (p / SETTINGS).exists() or (p / "cert.json").exists():
            out.append(p)
        elif p.is_dir():
            out.extend(sorted(c for c in p.iterdir() if c.is_dir() and ((c / SETTINGS).exists() or (c / "cert.json").exists())))
    return out


def run_deploy_hook(command: str, status: "CertificateStatus", state_dir: Path, *, timeout: float = 300.0) -> None:
    """Run ``command`` through the shell after an issuance or renewal, as certbot's
    ``--deploy-hook`` does, with ``STIRSHAKEN_CERT``, ``STIRSHAKEN_KEY``, ``STIRSHAKEN_CHAIN`` (the
    stable ``current/`` paths), ``STIRSHAKEN_X5U``, ``STIRSHAKEN_SERIAL`` and
    ``STIRSHAKEN_STATE_DIR`` in its environment.  Raises :class:`DeployHookError` when it exits
    non-zero or runs longer than ``timeout`` seconds."""
    import os
    import subprocess

    state_dir = state_dir.absolute()  # the hook may change directory (certbot hands absolute paths too)
    cur = state_dir / CURRENT
    env = {
        **os.environ,
        "STIRSHAKEN_CERT": str(cur / "cert.pem"), "STIRSHAKEN_KEY": str(cur / "key.pem"), "STIRSHAKEN_CHAIN": str(cur / "chain.pem"),
        "STIRSHAKEN_X5U": status.x5u or "", "STIRSHAKEN_SERIAL": format(status.serial, "x"), "STIRSHAKEN_STATE_DIR": str(state_dir),
    }
    try:
        res = subprocess.run(command, shell=True, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeployHookError(f"deploy hook {command!r} ran longer than {timeout:.0f} s") from None
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or [""]
        raise DeployHookError(f"deploy hook {command!r} exited with status {res.returncode}: {tail[0][:200]}")


async def ensure_certificate(
    cfg: AcmeConfig, *, renew_before_days: float = 30, force: bool = False, session: aiohttp.ClientSession | None = None
) -> CertificateStatus:
    """Return the SP certificate in ``cfg.state_dir``, obtaining a new one when there is none, when
    it expires within ``renew_before_days`` (AC-05) or when ``force`` is set.

    This is the entry point for ``stirshaken serve`` to keep its signing certificate current:
    ``status.key_path`` and ``status.x5u`` are what the signer needs; ``status.renewed`` says
    whether they changed.
    """
    cur = None if force else current_certificate(cfg.state_dir)
    if cur is not None:
        left = cur.not_after - dt.datetime.now(dt.timezone.utc)
        if left > dt.timedelta(days=renew_before_days):
            return cur
        log.info("certificate %x expires in %s: renewing", cur.serial, left)
    return await obtain_certificate(cfg, session=session)


async def renew_forever(
    cfg: AcmeConfig,
    *,
    renew_before_days: float = 30,
    check_interval: float = 3600,
    on_renewed: Callable[[CertificateStatus], Awaitable[None] | None] | None = None,
) -> None:
    """Check every ``check_interval`` seconds and renew when due; calls ``on_renewed`` after a renewal.

    Failures are logged and retried at the next check (run it as a background task and cancel it).
    """
    while True:
        try:
            status = await ensure_certificate(cfg, renew_before_days=renew_before_days)
            if status.renewed and on_renewed is not None:
                result = on_renewed(status)
                if asyncio.iscoroutine(result):
                    await result
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("certificate renewal failed: %s", exc)
        await asyncio.sleep(check_interval)


__all__ = [
    "CURRENT",
    "DeployHookError",
    "PublishError",
    "load_settings",
    "managed_state_dirs",
    "run_deploy_hook",
    "save_settings",
    "AcmeClient",
    "AcmeConfig",
    "AcmeProblem",
    "CertificateStatus",
    "PAClient",
    "PAClientError",
    "account_key_fingerprint",
    "client_ssl_context",
    "current_certificate",
    "ensure_certificate",
    "jwk_of",
    "jwk_public_key",
    "obtain_certificate",
    "renew_forever",
    "sign_jws",
    "thumbprint",
]
