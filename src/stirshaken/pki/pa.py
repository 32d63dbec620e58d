"""STI-PA: the SHAKEN Policy Administrator service (ATIS-1000080 §5-§6, ATIS-1000084).

What it does (docs/requirements.md#pa, PA-01..PA-05), in the published STI-PA API shape (the iconectiv
STI-PA external API as clients written for it call it; docs/pki.md "STI-PA API" maps each route to
its source).  Every ``/api/v1/...`` route also answers at the root (``/auth/login``, ...) as an alias:

* keeps service-provider accounts keyed by OCN/SPC with credentials; ``POST /api/v1/auth/login``
  with ``{"userId"|"username", "password"}`` answers ``{"status":"success","accessToken":...}``
  (PA-03); ``POST /api/v1/auth/logout`` ends the session.  The access token travels raw in
  ``Authorization`` (``Bearer <token>`` is accepted too);
* issues SPC tokens, the TNAuthList Authority Tokens of RFC 9448 §4 / RFC 9447 §3 (PA-04, PA-05):
  ``POST /api/v1/account/{SPC}/token`` (trailing ``/`` accepted) with ``{"atc":{"tktype":"TNAuthList",
  "tkvalue":<b64 DER>,"ca":false,"fingerprint":"SHA256 AA:BB:..."}}`` answers ``{"status":"success",
  "message":...,"token":<JWT>,"crl":<CRL URL>,"iss":<CRL issuer DN>}`` as ``application/jose+json``
  when the request's ``Accept`` names it, ``application/json`` otherwise; the JWT is ES256 with
  ``x5u`` naming the PA signing certificate (served here) and carries ``exp``, ``jti`` and ``atc``;
* publishes the signed trusted STI-CA list (PA-01): ``GET /api/v1/ca-list`` ->
  ``{"status":"success","caList":<JWS {"version","sequence","exp","trustList":[PEM...]}>}``;
* publishes the single SHAKEN CRL (PA-02, ATIS-1000080 §6.3.3): ``GET /download/v1/crl`` (also
  ``/crl``; DER, ``application/pkix-crl``) and ``GET /crl.pem``, signed by the PA's CRL key whose DN
  every STI-CA puts in ``cRLIssuer`` (CM-12); re-issued on every revocation and before ``nextUpdate``;
* revokes certificates and tokens (admin): ``POST /revoke`` with ``{"serial": hex}``,
  ``{"certificate": PEM}`` or ``{"jti": ...}``; revoked, unexpired token ids are listed at
  ``GET /revoked-tokens`` for STI-CAs.

Errors are ``{"status":"error","message":...}`` with a 4xx/5xx status; never a stack trace.  Every
request has an access record, every login, logout, token, revocation and administration an audit
record (:mod:`stirshaken.pki.records`; never a password or token).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stirshaken.core import certificates as certs
from stirshaken.core.errors import CertificateError, TNAuthListError
from stirshaken.core.jose import account_key_fingerprint  # noqa: F401 (re-export)
from stirshaken.core.keys import generate_private_key, load_private_key, write_private_key
from stirshaken.core.passport import encode_token
from stirshaken.core.tnauthlist import SPC, TNAuthList
from stirshaken.pki.acme import JOSE_JSON, PEM_CHAIN, TNAUTHLIST
from stirshaken.pki.records import access_log, audit
from stirshaken.pki.store import Database, sqlite_url, utcnow

log = logging.getLogger("stirshaken.pki.pa")

FINGERPRINT_RE = re.compile(r"SHA256 ([0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}")
OCN_RE = re.compile(r"[0-9A-Z]{1,16}")

#: the versioned prefix of the published STI-PA API (``/api/v1/auth/login``, ``/api/v1/account/{SPC}/token``,
#: ``/api/v1/ca-list``); the same routes answer at the root as aliases
API_PREFIX = "/api/v1"
#: where the published STI-PA serves the SHAKEN CRL (and the CRL distribution point it announces)
CRL_DOWNLOAD_PATH = "/download/v1/crl"

#: The DN the observed STI-PA CRL uses, adapted (docs/requirements.md CM-12).
CRL_ISSUER_NAME = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "STI-PA"),
        x509.NameAttribute(NameOID.COMMON_NAME, "STI-PA CRL"),
    ]
)


# --- passwords -----------------------------------------------------------------------------------


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)


def hash_password(password: str) -> str:
    """scrypt (n=2^14, r=8, p=1) with a random salt: ``scrypt$<salt hex>$<hash hex>``."""
    salt = secrets.token_bytes(16)
    return f"scrypt${salt.hex()}${_scrypt(password, salt).hex()}"


#: verified against when the account does not exist, so an unknown user costs the same scrypt
#: run as a wrong password (no timing oracle for account names)
_DUMMY_HASH = "scrypt$" + "00" * 16 + "$" + "00" * 32


class LoginThrottle:
    """Failed logins per account and per source address (docs/requirements.md PA-03): after
    ``limit`` failures within ``window`` seconds, further attempts from that account or source
    are refused for ``lockout`` seconds (answered 429 with ``Retry-After``) without checking the
    password.  In memory, per process; a success clears the account's count."""

    def __init__(self, limit: int = 5, window: float = 300.0, lockout: float = 60.0, max_keys: int = 100_000):
        self.limit, self.window, self.lockout, self.max_keys = limit, window, lockout, max_keys
        self._fails: dict[str, list[float]] = {}
        self._locked: dict[str, float] = {}

    def retry_after(self, *keys: str, now: float | None = None) -> float:
        """Seconds until these keys may try again (0: now)."""
        now = time.monotonic() if now is None else now
        return max((self._locked.get(k, 0.0) - now for k in keys), default=0.0) if keys else 0.0

    def failed(self, *keys: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if len(self._fails) > self.max_keys:  # bounded: forget the oldest half
            for k in list(self._fails)[: self.max_keys // 2]:
                self._fails.pop(k, None)
        for k in keys:
            recent = [t for t in self._fails.get(k, []) if now - t < self.window] + [now]
            self._fails[k] = recent
            if len(recent) >= self.limit:
                self._locked[k] = now + self.lockout
                self._fails[k] = []

    def succeeded(self, key: str) -> None:
        self._fails.pop(key, None)
        self._locked.pop(key, None)


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, salt, want = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    return hmac.compare_digest(_scrypt(password, bytes.fromhex(salt)).hex(), want)


# --- the PA's own PKI ----------------------------------------------------------------------------


def _pa_cert(
    subject: x509.Name,
    pub: ec.EllipticCurvePublicKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    digital_signature: bool = False,
    crl_sign: bool = False,
    days: int = 3650,
) -> x509.Certificate:
    now = utcnow()
    ski = x509.SubjectKeyIdentifier.from_public_key(pub)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(pub)
        .serial_number(certs.random_serial())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=crl_sign or ca,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
        .sign(issuer_key, hashes.SHA256())
    )


@dataclass
class PAKeys:
    """The STI-PA root, its token/CA-list signing certificate and its CRL signing certificate."""

    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    signer: x509.Certificate
    signer_key: ec.EllipticCurvePrivateKey
    crl_cert: x509.Certificate
    crl_key: ec.EllipticCurvePrivateKey

    @classmethod
    def load_or_create(cls, state_dir: Path, *, org: str = "STI-PA") -> "PAKeys":
        """Load ``pa-root``, ``pa-signing`` and ``pa-crl`` (``.pem``/``.key``) or create them (0600 keys)."""
        state_dir.mkdir(parents=True, exist_ok=True)
        names = ("pa-root", "pa-signing", "pa-crl")
        if all((state_dir / f"{n}.pem").exists() and (state_dir / f"{n}.key").exists() for n in names):
            loaded = [
                (certs.load_certificates((state_dir / f"{n}.pem").read_bytes())[0], load_private_key(state_dir / f"{n}.key"))
                for n in names
            ]
            return cls(loaded[0][0], loaded[0][1], loaded[1][0], loaded[1][1], loaded[2][0], loaded[2][1])
        root_key, signer_key, crl_key = generate_private_key(), generate_private_key(), generate_private_key()
        root_name = certs.make_name("STI-PA ROOT", org)
        root = _pa_cert(root_name, root_key.public_key(), root_name, root_key, ca=True)
        signer = _pa_cert(
            certs.make_name("STI-PA SPC Token Signer", org), signer_key.public_key(), root_name, root_key,
            ca=False, digital_signature=True, days=1825,
        )
        crl_cert = _pa_cert(CRL_ISSUER_NAME, crl_key.public_key(), root_name, root_key, ca=False, crl_sign=True, days=1825)
        for n, c, k in (("pa-root", root, root_key), ("pa-signing", signer, signer_key), ("pa-crl", crl_cert, crl_key)):
            write_private_key(state_dir / f"{n}.key", k, public=False)
            (state_dir / f"{n}.pem").write_bytes(certs.pem([c]))
        return cls(root, root_key, signer, signer_key, crl_cert, crl_key)


def _session_id(token: str) -> str:
    """The key a session is stored under: SHA-256 of its access token (the token is not stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


def cert_fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


# --- configuration and service -------------------------------------------------------------------


@dataclass
class PAConfig:
    """STI-PA settings.  ``base_url`` is the externally visible URL (it goes into tokens and x5u)."""

    base_url: str
    state_dir: Path
    db_url: str | None = None
    token_lifetime: int = 86400
    session_lifetime: int = 3600
    ca_list_lifetime: int = 86400
    crl_lifetime: int = 7 * 86400
    trusted_ca_files: list[Path] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        return self.db_url or sqlite_url(str(self.state_dir / "pa.db"))


class PAError(Exception):
    """An STI-PA API error, answered as ``{"status":"error","message":...}``."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except PAError as exc:
        resp = _json({"status": "error", "message": exc.message}, exc.status)
        if exc.retry_after is not None:
            resp.headers["Retry-After"] = str(exc.retry_after)
        return resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json({"status": "error", "message": exc.reason}, exc.status)
    except Exception:  # never a stack trace on the wire
        log.exception("STI-PA internal error on %s %s", request.method, request.path)
        return _json({"status": "error", "message": "internal error"}, 500)


class PolicyAdministrator:
    """The STI-PA state and HTTP API (aiohttp).  Build with :meth:`create`, serve :attr:`app`."""

    def __init__(self, config: PAConfig, db: Database, keys: PAKeys):
        self.config = config
        self.db = db
        self.keys = keys
        self.base = config.base_url.rstrip("/")
        self._crl: x509.CertificateRevocationList | None = None
        self._ca_list: tuple[str, float] | None = None  # (jws, exp)
        self._ca_list_key: str | None = None
        self._refresher: asyncio.Task[None] | None = None
        self.throttle = LoginThrottle()
        self.app = self._make_app()

    @classmethod
    def create(cls, config: PAConfig, db: Database | None = None) -> "PolicyAdministrator":
        keys = PAKeys.load_or_create(config.state_dir)
        pa = cls(config, db or Database(config.database_url), keys)
        for path in config.trusted_ca_files:
            for cert in certs.load_certificates(Path(path).read_bytes()):
                pa.add_trusted_ca(cert)
        return pa

    # URLs
    @property
    def signer_url(self) -> str:
        return f"{self.base}/certs/pa-signing.pem"

    @property
    def crl_url(self) -> str:
        """The SHAKEN CRL distribution point: ``{base}/download/v1/crl`` (the published path)."""
        return f"{self.base}{CRL_DOWNLOAD_PATH}"

    @property
    def crl_issuer(self) -> x509.Name:
        return self.keys.crl_cert.subject

    # --- administration ---------------------------------------------------------------------
    def add_account(self, username: str, password: str, *, ocn: str | None, admin: bool = False, may_request_ca: bool = False) -> None:
        if ocn is not None and OCN_RE.fullmatch(ocn) is None:
            raise ValueError("OCN/SPC must be 1-16 digits or upper-case letters (CM-13)")
        self.db.pa_put_account(username, hash_password(password), ocn=ocn, admin=admin, may_request_ca=may_request_ca)

    def add_trusted_ca(self, cert: x509.Certificate) -> None:
        """Add an STI-CA root to the trusted-CA list (the list is re-signed with a new sequence)."""
        self.db.pa_add_trusted_ca(cert_fingerprint(cert), certs.pem([cert]).decode())

    def revoke_certificate(self, serial: int, *, issuer: str | None = None, reason: str | None = None) -> bool:
        changed = self.db.pa_revoke_cert(serial, issuer=issuer, reason=reason)
        if changed:
            self.current_crl(force=True)
        return changed

    # --- products ---------------------------------------------------------------------------
    def current_crl(self, *, force: bool = False) -> x509.CertificateRevocationList:
        """The SHAKEN CRL; re-issued when forced or when half of its lifetime has passed."""
        crl = self._crl
        now = utcnow()
        half = dt.timedelta(seconds=self.config.crl_lifetime / 2)
        if force or crl is None or crl.next_update_utc is None or crl.next_update_utc - now < half:
            revoked = [(serial, when) for serial, when, _ in self.db.pa_revoked_certs()]
            crl = certs.create_crl(
                self.keys.crl_cert, self.keys.crl_key, revoked,
                next_update=dt.timedelta(seconds=self.config.crl_lifetime), number=self.db.next_counter("crl_number"),
            )
            self._crl = crl
            try:
                (self.config.state_dir / "shaken.crl").write_bytes(crl.public_bytes(serialization.Encoding.DER))
            except OSError:  # publishing the file is a convenience
                pass
        return crl

    def current_ca_list(self) -> str:
        """The signed trusted-CA list (PA-01); a new ``sequence`` whenever the list changes."""
        pems = self.db.pa_trusted_cas()
        content = hashlib.sha256("".join(pems).encode()).hexdigest()
        now = time.time()
        if self._ca_list is not None and self._ca_list_key == content and self._ca_list[1] - now > self.config.ca_list_lifetime / 2:
            return self._ca_list[0]
        exp = int(now) + self.config.ca_list_lifetime
        payload = {"version": 1, "sequence": self.db.next_counter("ca_list_sequence"), "exp": exp, "trustList": pems}
        jws = encode_token(self.keys.signer_key, {"alg": "ES256", "typ": "JWT", "x5u": self.signer_url}, payload)
        self._ca_list, self._ca_list_key = (jws, float(exp)), content
        return jws

    def issue_token(self, ocn: str, atc: dict[str, Any]) -> tuple[str, str, int]:
        """Sign an SPC token (RFC 9448 §4); returns (JWT, jti, exp)."""
        jti = str(uuid.uuid4())
        exp = int(time.time()) + self.config.token_lifetime
        claims = {"iat": int(time.time()), "exp": exp, "jti": jti, "atc": atc}
        token = encode_token(self.keys.signer_key, {"alg": "ES256", "typ": "JWT", "x5u": self.signer_url}, claims)
        self.db.pa_add_token(jti, ocn, atc["fingerprint"], atc["tkvalue"], dt.datetime.fromtimestamp(exp, dt.timezone.utc))
        return token, jti, exp

    # --- HTTP -------------------------------------------------------------------------------
    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[access_log("pa"), _errors], client_max_size=256 * 1024)
        # the published STI-PA API shape (docs/pki.md "STI-PA API"), then the root aliases
        for prefix in (API_PREFIX, ""):
            app.router.add_post(f"{prefix}/auth/login", self.h_login)
            app.router.add_post(f"{prefix}/auth/logout", self.h_logout)
            app.router.add_post(f"{prefix}/account/{{ocn}}/token", self.h_token)
            app.router.add_post(f"{prefix}/account/{{ocn}}/token/", self.h_token)
            app.router.add_get(f"{prefix}/ca-list", self.h_ca_list)
        app.router.add_get(CRL_DOWNLOAD_PATH, self.h_crl)
        app.router.add_get("/crl", self.h_crl)
        app.router.add_get("/crl.pem", self.h_crl_pem)
        app.router.add_get("/download/v1/certificate/{name}", self.h_cert)
        app.router.add_get("/certs/{name}", self.h_cert)
        app.router.add_post("/revoke", self.h_revoke)
        app.router.add_get("/revoked-tokens", self.h_revoked_tokens)
        app.router.add_post("/admin/ca", self.h_add_ca)
        app.router.add_post("/admin/accounts", self.h_add_account)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _app: web.Application) -> None:
        self.current_crl()
        self._refresher = asyncio.create_task(self._refresh_loop())

    async def _stop(self, _app: web.Application) -> None:
        if self._refresher is not None:
            self._refresher.cancel()

    async def _refresh_loop(self) -> None:
        """Keep the CRL and the CA list current (re-issued at half their lifetime)."""
        interval = max(1.0, min(self.config.crl_lifetime, self.config.ca_list_lifetime) / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                self.current_crl()
                self.current_ca_list()
            except Exception:  # pragma: no cover - keep refreshing
                log.exception("STI-PA refresh failed")

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise PAError(400, "request body is not JSON") from None
        if not isinstance(body, dict):
            raise PAError(400, "request body must be a JSON object")
        return body

    @staticmethod
    def _access_token(request: web.Request) -> str:
        """The access token of ``Authorization``: the raw token (as the published API's clients
        send it) or ``Bearer <token>``."""
        auth = request.headers.get("Authorization", "").strip()
        return auth[7:].strip() if auth.lower().startswith("bearer ") else auth

    def _session_user(self, request: web.Request) -> Any:
        token = self._access_token(request)
        problem = None
        sess = account = None
        if not token:
            problem = "missing access token"
        else:
            sess = self.db.pa_session(_session_id(token))
            if sess is None or sess.expires < utcnow():
                problem = "invalid or expired access token"
            else:
                account = self.db.pa_account(sess.username)
                if account is None:
                    problem = "account no longer exists"
        if problem is not None:
            audit("pa", "access denied", warning=True, path=request.path[:200], reason=problem, source=request.remote or "-",
                  user=sess.username if sess is not None else None)
            raise PAError(401, problem)
        return account

    def _admin(self, request: web.Request) -> Any:
        account = self._session_user(request)
        if not account.admin:
            audit("pa", "access denied", warning=True, path=request.path[:200], reason="administrator rights needed",
                  source=request.remote or "-", user=account.username)
            raise PAError(403, "administrator rights needed")
        return account

    async def h_login(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        user = body.get("userId", body.get("username"))
        password = body.get("password")
        if not isinstance(user, str) or not isinstance(password, str):
            raise PAError(400, "userId and password are required")
        source = request.remote or "?"
        keys = (f"user:{user}", f"source:{source}")
        wait = self.throttle.retry_after(*keys)
        if wait > 0:
            audit("pa", "login failed", warning=True, user=user[:64], source=source, reason="throttled")
            raise PAError(429, f"too many failed logins; retry in {int(wait) + 1} s", retry_after=int(wait) + 1)
        account = self.db.pa_account(user)
        # scrypt runs off the event loop (about 50 ms), against a dummy hash for an unknown user
        stored = account.password_hash if account is not None else _DUMMY_HASH
        ok = await asyncio.get_running_loop().run_in_executor(None, check_password, password, stored)
        if account is None or not ok:
            self.throttle.failed(*keys)
            audit("pa", "login failed", warning=True, user=user[:64], source=source,
                  reason="unknown user" if account is None else "wrong password")
            raise PAError(401, "invalid credentials")
        self.throttle.succeeded(keys[0])
        token = secrets.token_urlsafe(32)
        expires = utcnow() + dt.timedelta(seconds=self.config.session_lifetime)
        self.db.pa_add_session(_session_id(token), account.username, expires)
        audit("pa", "login ok", user=account.username, source=source, admin=bool(account.admin))
        return _json({"status": "success", "message": "login successful", "accessToken": token, "expiresIn": self.config.session_lifetime})

    async def h_token(self, request: web.Request) -> web.Response:
        account = self._session_user(request)
        ocn = request.match_info["ocn"]
        try:
            return await self._token(request, account, ocn)
        except PAError as exc:
            audit("pa", "token refused", warning=True, user=account.username, spc=ocn[:32], reason=exc.message[:200],
                  source=request.remote or "-")
            raise

    async def _token(self, request: web.Request, account: Any, ocn: str) -> web.Response:
        if account.ocn != ocn and not account.admin:
            raise PAError(403, f"account {account.username} may not request tokens for OCN {ocn}")
        body = await self._body(request)
        atc = body.get("atc")
        if not isinstance(atc, dict):
            raise PAError(400, "'atc' object is required")
        if atc.get("tktype") != TNAUTHLIST:
            raise PAError(400, "atc.tktype must be 'TNAuthList'")
        tkvalue, fingerprint, ca = atc.get("tkvalue"), atc.get("fingerprint"), atc.get("ca", False)
        if not isinstance(tkvalue, str):
            raise PAError(400, "atc.tkvalue must be a base64 TNAuthList")
        try:
            tnal = TNAuthList.from_identifier(tkvalue)
        except TNAuthListError as exc:
            raise PAError(400, f"atc.tkvalue: {exc.description}") from None
        if not all(isinstance(e, SPC) and e.code == ocn for e in tnal.entries):
            raise PAError(403, f"the TNAuthList may only name SPC {ocn} for this account")
        if not isinstance(fingerprint, str) or FINGERPRINT_RE.fullmatch(fingerprint) is None:
            raise PAError(400, "atc.fingerprint must be 'SHA256 ' and 32 colon-separated hex bytes")
        if not isinstance(ca, bool):
            raise PAError(400, "atc.ca must be a boolean")
        if ca and not account.may_request_ca:
            raise PAError(403, "this account may not request tokens for CA certificates")
        claim = {"tktype": TNAUTHLIST, "tkvalue": tkvalue, "ca": ca, "fingerprint": "SHA256 " + fingerprint[7:].upper()}
        token, jti, exp = self.issue_token(ocn, claim)
        audit("pa", "token issued", user=account.username, spc=ocn, jti=jti, exp=exp, ca=ca, fingerprint=claim["fingerprint"],
              source=request.remote or "-")
        answer = {
            "status": "success", "message": f"SPC token for spc: {ocn} is created successfully",
            "token": token, "crl": self.crl_url, "iss": self.crl_issuer.rfc4514_string(),
        }
        resp = _json(answer)
        if JOSE_JSON in request.headers.get("Accept", ""):
            resp.content_type = JOSE_JSON
        return resp

    async def h_logout(self, request: web.Request) -> web.Response:
        """End the session of the access token in ``Authorization`` (raw token or ``Bearer``)."""
        token = self._access_token(request)
        account = self._session_user(request)
        self.db.pa_end_session(_session_id(token))
        audit("pa", "logout", user=account.username, source=request.remote or "-")
        return _json({"status": "success", "message": "logged out"})

    async def h_ca_list(self, _request: web.Request) -> web.Response:
        return _json({"status": "success", "caList": self.current_ca_list()})

    async def h_crl(self, _request: web.Request) -> web.Response:
        crl = self.current_crl()
        return web.Response(
            body=crl.public_bytes(serialization.Encoding.DER), content_type="application/pkix-crl",
            headers={"Cache-Control": "max-age=3600"},
        )

    async def h_crl_pem(self, _request: web.Request) -> web.Response:
        crl = self.current_crl()
        return web.Response(body=crl.public_bytes(serialization.Encoding.PEM), content_type="application/x-pem-file")

    async def h_cert(self, request: web.Request) -> web.Response:
        cert = {"pa-signing.pem": self.keys.signer, "pa-root.pem": self.keys.root, "pa-crl.pem": self.keys.crl_cert}.get(
            request.match_info["name"]
        )
        if cert is None:
            raise PAError(404, "no such certificate")
        return web.Response(
            body=certs.pem([cert]), content_type=PEM_CHAIN,
            headers={"Cache-Control": "public, max-age=86400"},
        )

    async def h_revoke(self, request: web.Request) -> web.Response:
        admin = self._admin(request)
        body = await self._body(request)
        reason = body.get("reason") if isinstance(body.get("reason"), str) else None
        if isinstance(body.get("jti"), str):
            if not self.db.pa_revoke_token(body["jti"]):
                raise PAError(404, "no such token")
            audit("pa", "token revoked", jti=body["jti"][:64], by=admin.username, source=request.remote or "-")
            return _json({"status": "success", "revoked": "token"})
        issuer: str | None = None
        if isinstance(body.get("certificate"), str):
            try:
                cert = certs.load_certificates(body["certificate"].encode())[0]
            except CertificateError as exc:
                raise PAError(400, exc.description) from None
            serial, issuer = cert.serial_number, cert.issuer.rfc4514_string()
        elif isinstance(body.get("serial"), str):
            try:
                serial = int(body["serial"].replace(":", ""), 16)
            except ValueError:
                raise PAError(400, "serial must be hexadecimal") from None
        else:
            raise PAError(400, "give 'serial' (hex), 'certificate' (PEM) or 'jti'")
        changed = self.revoke_certificate(serial, issuer=issuer, reason=reason)
        audit("pa", "certificate revoked", serial=format(serial, "x"), issuer=issuer, reason=reason[:32] if reason else None, new=changed,
              by=admin.username, source=request.remote or "-")
        return _json({"status": "success", "revoked": "certificate", "serial": format(serial, "x"), "new": changed})

    async def h_revoked_tokens(self, _request: web.Request) -> web.Response:
        return _json({"status": "success", "jtis": self.db.pa_revoked_tokens()})

    async def h_add_ca(self, request: web.Request) -> web.Response:
        admin = self._admin(request)
        body = await self._body(request)
        try:
            cert_list = certs.load_certificates(str(body.get("certificate", "")).encode())
        except CertificateError as exc:
            raise PAError(400, exc.description) from None
        for cert in cert_list:
            self.add_trusted_ca(cert)
        audit("pa", "trusted CA added", fingerprints=[cert_fingerprint(c) for c in cert_list], by=admin.username,
              source=request.remote or "-")
        return _json({"status": "success", "count": len(cert_list)})

    async def h_add_account(self, request: web.Request) -> web.Response:
        admin = self._admin(request)
        body = await self._body(request)
        user, password, ocn = body.get("username"), body.get("password"), body.get("ocn")
        if not isinstance(user, str) or not isinstance(password, str) or not isinstance(ocn, str):
            raise PAError(400, "username, password and ocn are required")
        try:
            self.add_account(user, password, ocn=ocn, may_request_ca=bool(body.get("may_request_ca", False)))
        except ValueError as exc:
            raise PAError(400, str(exc)) from None
        audit("pa", "account saved", user=user[:128], spc=ocn, may_request_ca=bool(body.get("may_request_ca", False)), by=admin.username,
              source=request.remote or "-")
        return _json({"status": "success"})
