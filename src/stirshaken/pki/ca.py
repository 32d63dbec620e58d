"""STI-CA: an RFC 8555 ACME server issuing SHAKEN certificates for TNAuthList identifiers.

* RFC 8555 §7.1 directory, §7.2 ``newNonce`` (HEAD/GET), §7.3 ``newAccount`` (incl.
  ``onlyReturnExisting``), §7.4 ``newOrder`` / finalize / POST-as-GET certificate download
  (``application/pem-certificate-chain``), §7.6 ``revokeCert``.
* §6.2 request authentication: flattened JWS JSON, ES256 only (``badSignatureAlgorithm``),
  ``jwk`` for newAccount/revokeCert and ``kid`` otherwise; §6.4 the ``url`` header must equal the
  request URL (``unauthorized``); §6.5 every nonce is accepted once and expires (``badNonce``);
  ``Replay-Nonce`` and ``Link: <directory>;rel="index"`` on every response, §6.7 problem
  documents (``application/problem+json``) for every error, never a stack trace.
* RFC 9448 §3 TNAuthList identifiers (base64url per RFC 9448; base64 accepted too, AC-02) and
  the ``tkauth-01`` challenge (RFC 9447 §3, RFC 9448 §5) answered with ``{"atc": <SPC token>}``;
  the token is validated as STANDARDS.md AC-03 lists (see :class:`TokenValidator`).
* Issued certificates follow ATIS-1000080 §6.4.1 (:func:`certificates.create_sp_certificate`) with
  the STI-PA's CRL distribution point and ``cRLIssuer`` (CM-12) and the authorized TNAuthList
  (AC-04).  State lives in :class:`~stirshaken.db.Database`; an order is finalized at most once
  (conditional UPDATE, :meth:`Database.claim_order`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, Sequence

import aiohttp
import orjson
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core import certificates as certs
from stirshaken.core.b64 import b64url_decode
from stirshaken.pki.store import Database, Row, sqlite_url, utcnow
from stirshaken.core.errors import CertificateError, PassportEncodingError, SignatureError, TNAuthListError
from stirshaken.core.jose import JWKError, account_key_fingerprint, jwk_public_key, parse_compact, thumbprint, verify_x5u_jws
from stirshaken.core.keys import generate_private_key, load_private_key, write_private_key
from stirshaken.net.http import client_ssl_context
from stirshaken.pki.acme import ERR, JOSE_JSON, PEM_CHAIN, PROBLEM_JSON, TKAUTH01, TNAUTHLIST, AcmeProblem
from stirshaken.core.jose import verify_signature
from stirshaken.core.tnauthlist import SPC, TNAuthList

log = logging.getLogger("stirshaken.pki.ca")

NONCE_LIFETIME = 600.0
MAX_NONCES = 100_000


class NonceStore:
    """RFC 8555 §6.5 anti-replay nonces: random, single use, expiring after ``lifetime`` seconds."""

    def __init__(self, lifetime: float = NONCE_LIFETIME, max_size: int = MAX_NONCES):
        self.lifetime = lifetime
        self.max_size = max_size
        self._nonces: dict[str, float] = {}

    def issue(self) -> str:
        now = time.monotonic()
        if len(self._nonces) >= self.max_size:
            self._prune(now)
        nonce = secrets.token_urlsafe(16)
        self._nonces[nonce] = now + self.lifetime
        return nonce

    def consume(self, nonce: str) -> bool:
        expires = self._nonces.pop(nonce, None)
        return expires is not None and expires > time.monotonic()

    def _prune(self, now: float) -> None:
        for n in [n for n, e in self._nonces.items() if e <= now]:
            del self._nonces[n]
        while len(self._nonces) >= self.max_size:  # drop the oldest
            del self._nonces[next(iter(self._nonces))]


# --- configuration and keys --------------------------------------------------------------------

Publisher = Callable[[str, bytes], Awaitable[str]]
RevocationHook = Callable[[x509.Certificate, "int | None"], Awaitable[None]]


@dataclass
class CAConfig:
    """STI-CA settings.

    ``token_authority``: the STI-PA base URL announced in tkauth-01 challenges.
    ``pa_trust_anchors``: STI-PA root certificates SPC-token signers must chain to;
    ``pa_certs``: STI-PA signing certificates trusted directly (pinned).
    ``x5u_prefixes``: URL prefixes the token ``x5u`` may point at (default: the token authority).
    ``crl_url`` / ``crl_issuer``: the SHAKEN CRL distribution point (CM-12).
    ``ca_bundle``: PEM roots for fetching x5u / revoked tokens over HTTPS.
    """

    base_url: str
    state_dir: Path
    token_authority: str
    crl_url: str
    crl_issuer: x509.Name | None = None
    pa_trust_anchors: list[x509.Certificate] = field(default_factory=list)
    pa_certs: list[x509.Certificate] = field(default_factory=list)
    x5u_prefixes: list[str] | None = None
    ca_bundle: str | None = None
    db_url: str | None = None
    check_token_revocation: bool = True
    cert_days: int = 365
    max_cert_days: int = 398
    order_lifetime: int = 86400
    org: str = "Test STI-CA"

    @property
    def database_url(self) -> str:
        return self.db_url or sqlite_url(str(self.state_dir / "ca.db"))


@dataclass
class CAKeys:
    """The STI-CA root and the intermediate that signs SP certificates."""

    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey

    @classmethod
    def load_or_create(cls, state_dir: Path, *, crl_url: str, crl_issuer: x509.Name | None, org: str = "Test STI-CA") -> "CAKeys":
        state_dir.mkdir(parents=True, exist_ok=True)
        files = [state_dir / n for n in ("ca-root.pem", "ca-root.key", "ca-intermediate.pem", "ca-intermediate.key")]
        if all(f.exists() for f in files):
            return cls(
                certs.load_certificates(files[0].read_bytes())[0], load_private_key(files[1]),
                certs.load_certificates(files[2].read_bytes())[0], load_private_key(files[3]),
            )
        root_key, inter_key = generate_private_key(), generate_private_key()
        root = certs.create_root(root_key, cn="SHAKEN ROOT CA", org=org)
        inter = certs.create_intermediate(
            inter_key, root, root_key, cn="SHAKEN Intermediate CA", org=org, crl_url=crl_url, crl_issuer=crl_issuer
        )
        write_private_key(files[1], root_key, public=False)
        write_private_key(files[3], inter_key, public=False)
        files[0].write_bytes(certs.pem([root]))
        files[2].write_bytes(certs.pem([inter]))
        return cls(root, root_key, inter, inter_key)


# --- SPC token validation (RFC 9447 §3, RFC 9448 §4-§5, STANDARDS.md AC-03) ---------------------


def _unauth(detail: str) -> AcmeProblem:
    return AcmeProblem("unauthorized", detail, 403)


def _normalize_fp(fp: str) -> str:
    return fp.strip().upper().replace("SHA256", "").strip()


class TokenValidator:
    """Validates a TNAuthList Authority Token (SPC token) presented in a tkauth-01 answer.

    1. compact JWS, ``alg`` ES256, ``x5u`` under an allowed prefix;
    2. the x5u certificate chains to a configured STI-PA root (or is a pinned STI-PA certificate)
       and its key verifies the signature;
    3. ``exp`` in the future, ``jti`` present and never seen before (stored in the database),
       not revoked at the token authority;
    4. ``atc.tktype`` is ``TNAuthList``, ``atc.tkvalue`` is DER-equal to the order identifier,
       ``atc.fingerprint`` equals the requesting account key's, ``atc.ca`` is false (EE).
    Every failure is an ``unauthorized`` problem.
    """

    def __init__(self, config: CAConfig, db: Database):
        self.config = config
        self.db = db
        self.prefixes = config.x5u_prefixes or [config.token_authority.rstrip("/") + "/"]
        self._session: aiohttp.ClientSession | None = None
        self._x5u_cache: dict[str, tuple[float, list[x509.Certificate]]] = {}

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=client_ssl_context(self.config.ca_bundle)),
                timeout=aiohttp.ClientTimeout(total=5),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _fetch(self, url: str) -> bytes:
        try:
            async with self.session().get(url, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise _unauth(f"token x5u {url} answered HTTP {resp.status}")
                return await resp.content.read(256 * 1024)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise _unauth(f"cannot fetch {url}: {type(exc).__name__}") from None

    async def signer_chain(self, x5u: str) -> list[x509.Certificate]:
        now = time.monotonic()
        hit = self._x5u_cache.get(x5u)
        if hit and hit[0] > now:
            return hit[1]
        try:
            chain = certs.load_certificates(await self._fetch(x5u))
        except CertificateError as exc:
            raise _unauth(f"token x5u does not hold a certificate: {exc.description}") from None
        self._x5u_cache[x5u] = (now + 300, chain)
        return chain

    async def revoked(self, jti: str) -> bool:
        url = self.config.token_authority.rstrip("/") + "/revoked-tokens"
        try:
            data = orjson.loads(await self._fetch(url))
        except orjson.JSONDecodeError:
            raise _unauth("token authority revocation list is not JSON") from None
        jtis = data.get("jtis") if isinstance(data, dict) else None
        return isinstance(jtis, list) and jti in jtis

    async def validate(self, token: str, *, identifier_der: bytes, account_key: ec.EllipticCurvePublicKey, account_id: str) -> None:
        jws = parse_compact(token, what="SPC token", error=_unauth)  # RFC 7515 §7.1, ATIS-1000080 §6.3.5
        header, claims, signature = jws.header, jws.payload, jws.signature
        if header.get("alg") != "ES256":
            raise _unauth("SPC token must be signed with ES256")
        x5u = header.get("x5u")
        if not isinstance(x5u, str) or not x5u.startswith(("https://", "http://")):
            raise _unauth("SPC token header has no usable x5u")
        if not any(x5u.startswith(p) for p in self.prefixes):
            raise _unauth(f"SPC token x5u {x5u} is not under a trusted token authority")
        signer = verify_x5u_jws(jws.signing_input, signature, await self.signer_chain(x5u),
                                 list(self.config.pa_trust_anchors), at=utcnow(), error=_unauth, what="SPC token",
                                 pinned=list(self.config.pa_certs), root_name="a trusted STI-PA")
        exp, jti, atc = claims.get("exp"), claims.get("jti"), claims.get("atc")
        if not isinstance(exp, (int, float)) or isinstance(exp, bool):
            raise _unauth("SPC token has no exp")
        if exp <= time.time():
            raise _unauth("SPC token has expired")
        if not isinstance(jti, str) or not jti:
            raise _unauth("SPC token has no jti")
        if not isinstance(atc, dict):
            raise _unauth("SPC token has no atc claim")
        if atc.get("tktype") != TNAUTHLIST:
            raise _unauth("atc.tktype must be TNAuthList")
        try:
            tk_der = TNAuthList.from_identifier(atc.get("tkvalue")).to_der()  # type: ignore[arg-type]
        except TNAuthListError as exc:
            raise _unauth(f"atc.tkvalue is not a TNAuthList: {exc.description}") from None
        if tk_der != identifier_der:
            raise _unauth("atc.tkvalue does not match the authorization's TNAuthList identifier")
        fp = atc.get("fingerprint")
        if not isinstance(fp, str) or _normalize_fp(fp) != _normalize_fp(account_key_fingerprint(account_key)):
            raise _unauth("atc.fingerprint does not match the ACME account key")
        if atc.get("ca", False) is not False:
            raise _unauth("atc.ca is true but an end-entity certificate is requested")
        if self.config.check_token_revocation and await self.revoked(jti):
            raise _unauth("SPC token has been revoked by the token authority")
        issuer = signer.fingerprint(hashes.SHA256()).hex()
        if not self.db.ca_use_jti(issuer, jti, dt.datetime.fromtimestamp(exp, dt.timezone.utc), account_id):
            raise _unauth("SPC token jti was already used (replay)")


# --- the ACME server ---------------------------------------------------------------------------


@dataclass
class Signed:
    """An authenticated ACME request (RFC 8555 §6.2)."""

    protected: dict[str, Any]
    payload: dict[str, Any] | None  # None: POST-as-GET
    jwk: dict[str, Any] | None
    account: Row | None


def _rfc3339(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any, name: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise AcmeProblem("malformed", f"{name} must be an RFC 3339 date-time")
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise AcmeProblem("malformed", f"{name} is not an RFC 3339 date-time") from None
    if t.tzinfo is None:
        raise AcmeProblem("malformed", f"{name} needs a time zone")
    return t.astimezone(dt.timezone.utc)


class CertificateAuthority:
    """The STI-CA (ACME server).  Build with :meth:`create`; serve :attr:`app`."""

    def __init__(
        self,
        config: CAConfig,
        db: Database,
        keys: CAKeys,
        *,
        publisher: Publisher | None = None,
        revocation_hook: RevocationHook | None = None,
    ):
        self.config = config
        self.db = db
        self.keys = keys
        self.base = config.base_url.rstrip("/")
        self.nonces = NonceStore()
        self.tokens = TokenValidator(config, db)
        self.publisher = publisher
        self.revocation_hook = revocation_hook
        self.app = self._make_app()

    @classmethod
    def create(cls, config: CAConfig, db: Database | None = None, **kwargs: Any) -> "CertificateAuthority":
        keys = CAKeys.load_or_create(config.state_dir, crl_url=config.crl_url, crl_issuer=config.crl_issuer, org=config.org)
        return cls(config, db or Database(config.database_url), keys, **kwargs)

    # --- URLs --------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"{self.base}/acme/{path}"

    @property
    def directory_url(self) -> str:
        return self.url("directory")

    def account_url(self, account_id: str) -> str:
        return self.url(f"acct/{account_id}")

    # --- app ---------------------------------------------------------------------------------
    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024)
        r = app.router
        r.add_get("/acme/directory", self.h_directory)
        r.add_route("HEAD", "/acme/new-nonce", self.h_nonce)
        r.add_get("/acme/new-nonce", self.h_nonce, allow_head=False)
        r.add_post("/acme/new-account", self.h_new_account)
        r.add_post("/acme/acct/{id}", self.h_account)
        r.add_post("/acme/acct/{id}/orders", self.h_account_orders)
        r.add_post("/acme/new-order", self.h_new_order)
        r.add_post("/acme/order/{id}", self.h_order)
        r.add_post("/acme/order/{id}/finalize", self.h_finalize)
        r.add_post("/acme/authz/{id}", self.h_authz)
        r.add_post("/acme/chall/{id}", self.h_challenge)
        r.add_post("/acme/cert/{id}", self.h_cert)
        r.add_post("/acme/revoke-cert", self.h_revoke)
        r.add_get("/acme/issuer.pem", self.h_issuer)
        r.add_get("/ca/root.pem", self.h_root)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, _app: web.Application) -> None:
        await self.tokens.close()

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except AcmeProblem as p:
            resp = self._problem(p)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            kind = "malformed"
            resp = self._problem(AcmeProblem(kind, exc.reason or "request rejected", exc.status))
        except Exception:  # never a stack trace on the wire
            log.exception("STI-CA internal error on %s %s", request.method, request.path)
            resp = self._problem(AcmeProblem("serverInternal", "internal error", 500))
        resp.headers["Replay-Nonce"] = self.nonces.issue()
        resp.headers.add("Link", f'<{self.directory_url}>;rel="index"')
        if "Cache-Control" not in resp.headers:
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @staticmethod
    def _problem(p: AcmeProblem) -> web.Response:
        return web.Response(body=orjson.dumps(p.to_json()), status=p.status, content_type=PROBLEM_JSON)

    @staticmethod
    def _json(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
        return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json", headers=headers)

    # --- JWS authentication (RFC 8555 §6.2-§6.5) -----------------------------------------------
    async def _verify(self, request: web.Request, *, jwk_mode: str = "kid") -> Signed:
        """``jwk_mode``: ``"kid"`` (account requests), ``"jwk"`` (newAccount), ``"either"`` (revokeCert)."""
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != JOSE_JSON:
            raise AcmeProblem("malformed", f"Content-Type must be {JOSE_JSON}", 415)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise AcmeProblem("malformed", "request body is not JSON") from None
        if not isinstance(body, dict) or set(body) != {"protected", "payload", "signature"}:
            raise AcmeProblem("malformed", "body must be a flattened JWS with protected, payload and signature only")
        prot_b64, pay_b64, sig_b64 = body["protected"], body["payload"], body["signature"]
        if not all(isinstance(v, str) for v in (prot_b64, pay_b64, sig_b64)):
            raise AcmeProblem("malformed", "JWS members must be strings")
        try:
            protected = orjson.loads(b64url_decode(prot_b64, what="protected header"))
            signature = b64url_decode(sig_b64, what="signature")
            payload_raw = b64url_decode(pay_b64, what="payload")
        except (PassportEncodingError, orjson.JSONDecodeError) as exc:
            raise AcmeProblem("malformed", f"JWS is not well-formed: {exc}") from None
        if not isinstance(protected, dict):
            raise AcmeProblem("malformed", "protected header is not a JSON object")
        if protected.get("alg") != "ES256":
            raise AcmeProblem("badSignatureAlgorithm", f"alg {str(protected.get('alg'))[:20]!r} is not supported", algorithms=["ES256"])
        url = protected.get("url")
        if not isinstance(url, str):
            raise AcmeProblem("malformed", "protected header has no url")
        expected = self.base + request.path
        if url != expected:
            raise AcmeProblem("unauthorized", f"url header {url!r} does not match the request URL {expected!r}", 401)
        nonce = protected.get("nonce")
        if not isinstance(nonce, str) or not nonce:
            raise AcmeProblem("badNonce", "protected header has no nonce")
        if not self.nonces.consume(nonce):
            raise AcmeProblem("badNonce", "nonce is unknown, expired or already used")
        jwk, kid = protected.get("jwk"), protected.get("kid")
        if (jwk is None) == (kid is None):
            raise AcmeProblem("malformed", "exactly one of jwk and kid must be present")
        account: Row | None = None
        if jwk is not None:
            if jwk_mode == "kid":
                raise AcmeProblem("malformed", "this request must use kid, not jwk")
            try:
                pub = jwk_public_key(jwk)
            except JWKError as exc:
                raise AcmeProblem("badPublicKey", str(exc)) from None
        else:
            if jwk_mode == "jwk":
                raise AcmeProblem("malformed", "newAccount must use jwk, not kid")
            if not isinstance(kid, str) or not kid.startswith(self.url("acct/")):
                raise AcmeProblem("accountDoesNotExist", "kid is not an account URL of this server")
            account = self.db.ca_account(kid[len(self.url("acct/")) :])
            if account is None:
                raise AcmeProblem("accountDoesNotExist", "no account for this kid")
            pub = jwk_public_key(account.jwk)
        try:
            verify_signature(f"{prot_b64}.{pay_b64}".encode("ascii"), signature, pub)
        except SignatureError:
            raise AcmeProblem("malformed", "JWS signature does not verify") from None
        if account is not None and account.status != "valid":
            raise AcmeProblem("unauthorized", f"account is {account.status}", 403)
        payload: dict[str, Any] | None = None
        if payload_raw:
            try:
                payload = orjson.loads(payload_raw)
            except orjson.JSONDecodeError:
                raise AcmeProblem("malformed", "payload is not JSON") from None
            if not isinstance(payload, dict):
                raise AcmeProblem("malformed", "payload must be a JSON object")
        return Signed(protected, payload, jwk if isinstance(jwk, dict) else None, account)

    async def _account_request(self, request: web.Request) -> tuple[Signed, Row]:
        signed = await self._verify(request)
        assert signed.account is not None
        return signed, signed.account

    # --- representations ---------------------------------------------------------------------
    def _account_json(self, acct: Row) -> dict[str, Any]:
        return {"status": acct.status, "contact": acct.contact, "orders": self.account_url(acct.id) + "/orders"}

    def _order_json(self, order: Row) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": order.status,
            "expires": _rfc3339(order.expires),
            "identifiers": [{"type": TNAUTHLIST, "value": order.identifier}],
            "authorizations": [self.url(f"authz/{a.id}") for a in self.db.ca_authzs_of(order.id)],
            "finalize": self.url(f"order/{order.id}/finalize"),
        }
        if order.not_before:
            out["notBefore"] = _rfc3339(order.not_before)
        if order.not_after:
            out["notAfter"] = _rfc3339(order.not_after)
        if order.cert_id:
            out["certificate"] = self.url(f"cert/{order.cert_id}")
        if order.error:
            out["error"] = order.error
        return out

    def _challenge_json(self, authz: Row) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": TKAUTH01,
            "tkauth-type": "atc",
            "token-authority": self.config.token_authority,
            "url": self.url(f"chall/{authz.id}"),
            "token": authz.challenge_token,
            "status": authz.challenge_status,
        }
        if authz.validated and authz.challenge_status == "valid":
            out["validated"] = _rfc3339(authz.validated)
        if authz.error:
            out["error"] = authz.error
        return out

    def _authz_json(self, authz: Row, order: Row) -> dict[str, Any]:
        return {
            "status": authz.status,
            "expires": _rfc3339(authz.expires),
            "identifier": {"type": TNAUTHLIST, "value": order.identifier},
            "challenges": [self._challenge_json(authz)],
        }

    def _owned(self, row: Row | None, account: Row, what: str) -> Row:
        if row is None:
            raise AcmeProblem("malformed", f"no such {what}", 404)
        if row.account_id != account.id:
            raise AcmeProblem("unauthorized", f"the {what} belongs to another account", 403)
        return row

    # --- handlers ----------------------------------------------------------------------------
    async def h_directory(self, _request: web.Request) -> web.Response:
        return self._json(
            {
                "newNonce": self.url("new-nonce"),
                "newAccount": self.url("new-account"),
                "newOrder": self.url("new-order"),
                "revokeCert": self.url("revoke-cert"),
                "meta": {"externalAccountRequired": False, "website": self.base},
            }
        )

    async def h_nonce(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if request.method == "HEAD" else 204)

    async def h_new_account(self, request: web.Request) -> web.Response:
        signed = await self._verify(request, jwk_mode="jwk")
        assert signed.jwk is not None
        payload = signed.payload or {}
        tp = thumbprint(signed.jwk)
        existing = self.db.ca_account_by_thumbprint(tp)
        if payload.get("onlyReturnExisting") is True:
            if existing is None:
                raise AcmeProblem("accountDoesNotExist", "no account exists for this key")
            return self._json(self._account_json(existing), 200, {"Location": self.account_url(existing.id)})
        if existing is not None:
            return self._json(self._account_json(existing), 200, {"Location": self.account_url(existing.id)})
        contact = payload.get("contact", [])
        if not isinstance(contact, list) or not all(isinstance(c, str) and c.startswith(("mailto:", "tel:")) for c in contact):
            raise AcmeProblem("invalidContact", "contact must be a list of mailto: or tel: URLs")
        acct, created = self.db.ca_create_account(tp, signed.jwk, contact)
        return self._json(self._account_json(acct), 201 if created else 200, {"Location": self.account_url(acct.id)})

    async def h_account(self, request: web.Request) -> web.Response:
        signed, acct = await self._account_request(request)
        if acct.id != request.match_info["id"]:
            raise AcmeProblem("unauthorized", "kid does not match the account URL", 403)
        p = signed.payload
        if p:
            values: dict[str, Any] = {}
            if p.get("status") == "deactivated":
                values["status"] = "deactivated"
            elif "status" in p:
                raise AcmeProblem("malformed", "only status 'deactivated' can be requested")
            if "contact" in p:
                c = p["contact"]
                if not isinstance(c, list) or not all(isinstance(x, str) and x.startswith(("mailto:", "tel:")) for x in c):
                    raise AcmeProblem("invalidContact", "contact must be a list of mailto: or tel: URLs")
                values["contact"] = c
            if values:
                self.db.ca_update_account(acct.id, **values)
                acct = self.db.ca_account(acct.id) or acct
        return self._json(self._account_json(acct), 200, {"Location": self.account_url(acct.id)})

    async def h_account_orders(self, request: web.Request) -> web.Response:
        _signed, acct = await self._account_request(request)
        if acct.id != request.match_info["id"]:
            raise AcmeProblem("unauthorized", "kid does not match the account URL", 403)
        return self._json({"orders": [self.url(f"order/{o.id}") for o in self.db.ca_orders_of(acct.id)]})

    async def h_new_order(self, request: web.Request) -> web.Response:
        signed, acct = await self._account_request(request)
        p = signed.payload
        if p is None:
            raise AcmeProblem("malformed", "newOrder needs a payload")
        ids = p.get("identifiers")
        if not isinstance(ids, list) or not ids:
            raise AcmeProblem("malformed", "identifiers must be a non-empty list")
        if len(ids) != 1:
            raise AcmeProblem("rejectedIdentifier", "an order holds exactly one TNAuthList identifier (RFC 9448 §3)")
        ident = ids[0]
        if not isinstance(ident, dict) or not isinstance(ident.get("value"), str):
            raise AcmeProblem("malformed", "identifier must be an object with type and value")
        if ident.get("type") != TNAUTHLIST:
            raise AcmeProblem("unsupportedIdentifier", f"identifier type {str(ident.get('type'))[:30]!r} is not supported; use TNAuthList")
        try:
            tnal = TNAuthList.from_identifier(ident["value"])
        except TNAuthListError as exc:
            raise AcmeProblem("malformed", f"TNAuthList identifier value: {exc.description}") from None
        if len(tnal.entries) != 1 or not isinstance(tnal.entries[0], SPC):
            raise AcmeProblem("rejectedIdentifier", "SHAKEN certificates carry exactly one SPC (ATIS-1000080 §6.4.1)")
        code = tnal.entries[0].code
        if not code.isalnum() or code != code.upper():
            raise AcmeProblem("rejectedIdentifier", "SPC must be digits and upper-case letters (ATIS-1000080 §6.4.1)")
        now = utcnow()
        nb, na = _parse_time(p.get("notBefore"), "notBefore"), _parse_time(p.get("notAfter"), "notAfter")
        start = nb or now
        if na is not None and na <= start:
            raise AcmeProblem("malformed", "notAfter must be after notBefore")
        if na is not None and na - start > dt.timedelta(days=self.config.max_cert_days):
            raise AcmeProblem("malformed", f"validity may not exceed {self.config.max_cert_days} days")
        if nb is not None and nb > now + dt.timedelta(days=30):
            raise AcmeProblem("malformed", "notBefore too far in the future")
        order, _authz = self.db.ca_create_order(
            acct.id, ident["value"], tnal.to_der(),
            expires=now + dt.timedelta(seconds=self.config.order_lifetime), not_before=nb, not_after=na,
            challenge_token=secrets.token_urlsafe(16),
        )
        return self._json(self._order_json(order), 201, {"Location": self.url(f"order/{order.id}")})

    async def h_order(self, request: web.Request) -> web.Response:
        _signed, acct = await self._account_request(request)
        order = self._owned(self.db.ca_order(request.match_info["id"]), acct, "order")
        headers = {"Location": self.url(f"order/{order.id}")}
        if order.status == "processing":
            headers["Retry-After"] = "1"
        return self._json(self._order_json(order), 200, headers)

    async def h_authz(self, request: web.Request) -> web.Response:
        signed, acct = await self._account_request(request)
        authz = self._owned(self.db.ca_authz(request.match_info["id"]), acct, "authorization")
        if signed.payload and signed.payload.get("status") == "deactivated":
            self.db.ca_authz_result(authz.id, valid=False, error={"type": ERR + "unauthorized", "detail": "deactivated by the client"})
            authz = self.db.ca_authz(authz.id) or authz
        order = self.db.ca_order(authz.order_id)
        assert order is not None
        headers = {"Retry-After": "1"} if authz.status == "pending" else {}
        return self._json(self._authz_json(authz, order), 200, headers)

    async def h_challenge(self, request: web.Request) -> web.Response:
        signed, acct = await self._account_request(request)
        authz = self._owned(self.db.ca_authz(request.match_info["id"]), acct, "challenge")
        headers = {"Link": f'<{self.url("authz/" + authz.id)}>;rel="up"'}
        if signed.payload is None or authz.status != "pending":
            return self._json(self._challenge_json(authz), 200, headers)
        atc = signed.payload.get("atc")
        if not isinstance(atc, str) or not atc:
            raise AcmeProblem("malformed", 'tkauth-01 response must be {"atc": "<SPC token>"} (RFC 9448 §5)')
        order = self.db.ca_order(authz.order_id)
        assert order is not None
        if authz.expires < utcnow():
            self.db.ca_authz_result(authz.id, valid=False, error={"type": ERR + "unauthorized", "detail": "authorization expired"})
        else:
            try:
                await self.tokens.validate(
                    atc, identifier_der=order.tnauthlist, account_key=jwk_public_key(acct.jwk), account_id=acct.id
                )
            except AcmeProblem as p:
                self.db.ca_authz_result(authz.id, valid=False, error={"type": ERR + p.kind, "detail": p.detail, "status": p.status})
            else:
                self.db.ca_authz_result(authz.id, valid=True, error=None)
        authz = self.db.ca_authz(authz.id) or authz
        return self._json(self._challenge_json(authz), 200, headers)

    def _check_csr(self, payload: Mapping[str, Any] | None, order: Row) -> x509.CertificateSigningRequest:
        csr_b64 = (payload or {}).get("csr")
        if not isinstance(csr_b64, str):
            raise AcmeProblem("malformed", "finalize payload needs csr")
        try:
            der = b64url_decode(csr_b64, what="csr")
        except PassportEncodingError as exc:
            raise AcmeProblem("badCSR", f"csr is not base64url: {exc.description}") from None
        if der.lstrip().startswith(b"-----"):
            raise AcmeProblem("badCSR", "csr must be DER, not PEM")
        try:
            csr = certs.load_csr(der)
        except CertificateError as exc:
            raise AcmeProblem("badCSR", exc.description) from None
        pub = csr.public_key()
        if not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name != "secp256r1":
            raise AcmeProblem("badCSR", "CSR key must be P-256 (ATIS-1000080 §6.4.1)")
        if csr.signature_hash_algorithm is None or csr.signature_hash_algorithm.name != "sha256":
            raise AcmeProblem("badCSR", "CSR must be signed with ecdsa-with-SHA256")
        try:
            tnal = certs.csr_tnauthlist(csr)
        except TNAuthListError as exc:
            raise AcmeProblem("badCSR", exc.description) from None
        if tnal.to_der() != order.tnauthlist:
            raise AcmeProblem("badCSR", "CSR TNAuthList differs from the authorized identifier (RFC 9448 §6)")
        try:
            bc = csr.extensions.get_extension_for_class(x509.BasicConstraints).value
            if bc.ca:
                raise AcmeProblem("badCSR", "CSR asks for a CA certificate; the SPC token authorizes an end entity")
        except x509.ExtensionNotFound:
            pass
        return csr

    async def h_finalize(self, request: web.Request) -> web.Response:
        signed, acct = await self._account_request(request)
        order = self._owned(self.db.ca_order(request.match_info["id"]), acct, "order")
        if order.status != "ready":
            raise AcmeProblem("orderNotReady", f"order is {order.status}, not ready", 403)
        csr = self._check_csr(signed.payload, order)
        if not self.db.claim_order(order.id):
            raise AcmeProblem("orderNotReady", "order is no longer ready (finalized concurrently)", 403)
        try:
            cert = certs.create_sp_certificate(
                csr, self.keys.intermediate, self.keys.intermediate_key,
                tnauthlist=TNAuthList.from_der(order.tnauthlist), org=self._csr_org(csr), days=self.config.cert_days,
                crl_url=self.config.crl_url, crl_issuer=self.config.crl_issuer,
                not_before=order.not_before, not_after=order.not_after,
            )
            chain_pem = certs.pem([cert, self.keys.intermediate])
            cr_url = None
            if self.publisher is not None:
                spc = TNAuthList.from_der(order.tnauthlist).spc or "SP"
                try:
                    cr_url = await self.publisher(f"{spc}-{cert.serial_number:x}.pem", chain_pem)
                except Exception as exc:  # the certificate is still issued; the SP can publish it
                    log.warning("publishing to the STI-CR failed: %s", exc)
            self.db.ca_store_certificate(order.id, acct.id, cert.serial_number, chain_pem.decode(), cert.not_valid_after_utc, cr_url)
        except Exception:
            log.exception("issuance failed for order %s", order.id)
            self.db.release_order(order.id, status="invalid", error={"type": ERR + "serverInternal", "detail": "issuance failed"})
            raise AcmeProblem("serverInternal", "issuance failed", 500) from None
        order = self.db.ca_order(order.id) or order
        headers = {"Location": self.url(f"order/{order.id}")}
        if cr_url:
            headers["X-Shaken-Certificate-Location"] = cr_url
        return self._json(self._order_json(order), 200, headers)

    @staticmethod
    def _csr_org(csr: x509.CertificateSigningRequest) -> str:
        orgs = csr.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATION_NAME)
        value = orgs[0].value if orgs else "STI Participant"
        return value if isinstance(value, str) and value.strip() else "STI Participant"

    async def h_cert(self, request: web.Request) -> web.Response:
        _signed, acct = await self._account_request(request)
        row = self._owned(self.db.ca_certificate(request.match_info["id"]), acct, "certificate")
        headers = {"Link": f'<{self.url("issuer.pem")}>;rel="up"'}
        if row.cr_url:
            headers["X-Shaken-Certificate-Location"] = row.cr_url
        return web.Response(body=row.chain_pem.encode(), content_type=PEM_CHAIN, headers=headers)

    async def h_revoke(self, request: web.Request) -> web.Response:
        signed = await self._verify(request, jwk_mode="either")
        p = signed.payload or {}
        if not isinstance(p.get("certificate"), str):
            raise AcmeProblem("malformed", "revokeCert needs certificate")
        try:
            cert = x509.load_der_x509_certificate(b64url_decode(p["certificate"], what="certificate"))
        except (PassportEncodingError, ValueError):
            raise AcmeProblem("malformed", "certificate is not base64url DER") from None
        reason = p.get("reason")
        if reason is not None and (not isinstance(reason, int) or isinstance(reason, bool) or reason not in (0, 1, 3, 4, 5, 9, 10)):
            raise AcmeProblem("badRevocationReason", "unsupported revocation reason")
        row = self.db.ca_certificate_by_serial(cert.serial_number)
        if row is None or certs.load_certificates(row.chain_pem.encode())[0] != cert:
            raise AcmeProblem("malformed", "this CA did not issue that certificate", 404)
        if signed.account is not None:
            if signed.account.id != row.account_id:
                raise AcmeProblem("unauthorized", "the certificate belongs to another account", 403)
        else:
            assert signed.jwk is not None
            if jwk_public_key(signed.jwk) != cert.public_key():
                raise AcmeProblem("unauthorized", "jwk is neither the account nor the certificate key", 403)
        if not self.db.ca_mark_revoked(cert.serial_number):
            raise AcmeProblem("alreadyRevoked", "certificate already revoked")
        if self.revocation_hook is not None:
            try:
                await self.revocation_hook(cert, reason)
            except Exception as exc:
                log.warning("forwarding the revocation to the STI-PA failed: %s", exc)
                raise AcmeProblem("serverInternal", "revoked here, but the STI-PA could not be told", 500) from None
        return web.Response(status=200)

    async def h_issuer(self, _request: web.Request) -> web.Response:
        return web.Response(body=certs.pem([self.keys.intermediate]), content_type=PEM_CHAIN)

    async def h_root(self, _request: web.Request) -> web.Response:
        return web.Response(body=certs.pem([self.keys.root]), content_type=PEM_CHAIN)
