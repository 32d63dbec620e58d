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
  the token is validated as docs/requirements.md AC-03 lists (:class:`stirshaken.pki.spc_token.TokenValidator`).
* Issued certificates follow ATIS-1000080 §6.4.1 (:func:`certificates.create_sp_certificate`) with
  the STI-PA's CRL distribution point and ``cRLIssuer`` (CM-12) and the authorized TNAuthList
  (AC-04).  State lives in :class:`~stirshaken.pki.store.Database`; an order is finalized at most once
  (conditional UPDATE, :meth:`Database.claim_order`).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

import orjson
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core import certificates as certs
from stirshaken.core.b64 import b64url_decode, b64url_encode
from stirshaken.core.errors import CertificateError, PassportEncodingError, SignatureError, TNAuthListError
from stirshaken.core.jose import JWKError, jwk_public_key, thumbprint, verify_signature
from stirshaken.core.keys import generate_private_key, load_private_key, write_private_key
from stirshaken.core.tnauthlist import SPC, TNAuthList
from stirshaken.pki.acme import (
    CERTIFICATE_LOCATION_HEADER, ERR, JOSE_JSON, PEM_CHAIN, PROBLEM_JSON, PUBLISH_ERROR_HEADER, TKAUTH01, TNAUTHLIST, Account,
    AccountUpdate, AcmeProblem, Authorization, Challenge, Directory, DirectoryMeta, ExternalAccountBinding, Finalize, Identifier,
    NewAccount, NewOrder, Order, OrderList, Revocation, TkauthAnswer, eab_hmac_key,
)
from stirshaken.pki.records import access_log, audit
from stirshaken.pki.spc_token import TokenValidator
from stirshaken.pki.store import Database, Row, sqlite_url, utcnow

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

    Relaxations, each off by default and logged (WARNING) every time it is used:

    ``allow_account_key_reuse``: issue for a CSR whose key is the ordering account's key, which
    RFC 8555 §11.1 says a CA should refuse (``badCSR`` otherwise); some SP clients reuse the key.
    ``allow_header_only_signature``: accept a POST-as-GET whose ES256 signature covers the
    base64url protected header alone instead of ``protected || "." || ""`` (RFC 7515 §5.1), as
    one commercial client signs it (``malformed`` otherwise).

    ``eab_required``: newAccount needs an external account binding (RFC 8555 §7.3.4) made with a
    key minted by ``stirshaken ca eab-create``; the directory says ``externalAccountRequired``.
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
    allow_account_key_reuse: bool = False
    allow_header_only_signature: bool = False
    eab_required: bool = False

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


def _check_contact(contact: tuple[str, ...] | list[str]) -> list[str]:
    """The account contacts if every one is a ``mailto:`` or ``tel:`` URL (RFC 8555 §7.3);
    ``invalidContact`` otherwise."""
    for c in contact:
        if not c.startswith(("mailto:", "tel:")):
            raise AcmeProblem("invalidContact", f"contact {c[:60]!r} is not a mailto: or tel: URL")
    return list(contact)


def mint_eab_key(db: Database, *, spc: str | None = None, pa_account: str | None = None) -> tuple[str, str]:
    """Mint an external account binding key (RFC 8555 §7.3.4) for an SP: a new key identifier and
    a 256-bit HMAC key, stored in ``db`` bound to ``spc`` (the SPC the account may order for) and
    / or the STI-PA account ``pa_account``.  Returns ``(kid, hmac_key)`` with the key as base64url,
    the one time it is shown.  Raises ``ValueError`` when neither is given."""
    if not spc and not pa_account:
        raise ValueError("an EAB key is bound to an SPC (--spc) or an STI-PA account (--account)")
    kid = "kid-" + secrets.token_urlsafe(12)
    key = b64url_encode(secrets.token_bytes(32))
    db.ca_eab_create(kid, key, spc=spc, pa_account=pa_account)
    return kid, key


#: RFC 5280 §5.3.1 CRLReason codes accepted by revokeCert (RFC 8555 §7.6)
REVOCATION_REASONS = frozenset({0, 1, 3, 4, 5, 9, 10})


# --- the ACME server ---------------------------------------------------------------------------


@dataclass
class Signed:
    """An authenticated ACME request (RFC 8555 §6.2)."""

    protected: dict[str, Any]
    payload: dict[str, Any] | None  # None: POST-as-GET
    jwk: dict[str, Any] | None
    account: Row | None


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
        self._publish_errors: dict[str, str] = {}  # order id -> why publishing its chain failed (since start)
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
        app = web.Application(middlewares=[access_log("ca"), self._middleware], client_max_size=64 * 1024)
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
            resp = self._problem(AcmeProblem("malformed", exc.reason or "request rejected", exc.status))
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
    def _json(msg: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
        """``msg`` (an :mod:`stirshaken.pki.acme` message) as an ``application/json`` response."""
        return web.Response(body=orjson.dumps(msg.to_json()), status=status, content_type="application/json", headers=headers)

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
            if not (self.config.allow_header_only_signature and pay_b64 == "" and self._header_only(prot_b64, signature, pub)):
                raise AcmeProblem("malformed", "JWS signature does not verify") from None
            log.warning(
                "allow_header_only_signature: accepted a POST-as-GET to %s signed over the protected header alone "
                "(not RFC 7515 §5.1)", request.path,
            )
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

    @staticmethod
    def _header_only(prot_b64: str, signature: bytes, pub: Any) -> bool:
        """Whether ``signature`` covers the base64url protected header alone (the relaxation of
        :attr:`CAConfig.allow_header_only_signature`)."""
        try:
            verify_signature(prot_b64.encode("ascii"), signature, pub)
        except SignatureError:
            return False
        return True

    async def _account_request(self, request: web.Request) -> tuple[Signed, Row]:
        signed = await self._verify(request)
        assert signed.account is not None
        return signed, signed.account

    # --- representations ---------------------------------------------------------------------
    def _account(self, acct: Row) -> Account:
        return Account(status=acct.status, contact=tuple(acct.contact), orders=self.account_url(acct.id) + "/orders")

    def _order(self, order: Row) -> Order:
        return Order(
            status=order.status,
            expires=order.expires,
            identifiers=(Identifier(order.identifier),),
            authorizations=tuple(self.url(f"authz/{a.id}") for a in self.db.ca_authzs_of(order.id)),
            finalize=self.url(f"order/{order.id}/finalize"),
            not_before=order.not_before or None,
            not_after=order.not_after or None,
            certificate=self.url(f"cert/{order.cert_id}") if order.cert_id else None,
            error=order.error or None,
        )

    def _challenge(self, authz: Row) -> Challenge:
        return Challenge(
            type=TKAUTH01,
            tkauth_type="atc",
            token_authority=self.config.token_authority,
            url=self.url(f"chall/{authz.id}"),
            token=authz.challenge_token,
            status=authz.challenge_status,
            validated=authz.validated if authz.validated and authz.challenge_status == "valid" else None,
            error=authz.error or None,
        )

    def _authz(self, authz: Row, order: Row) -> Authorization:
        return Authorization(
            status=authz.status, expires=authz.expires, identifier=Identifier(order.identifier), challenges=(self._challenge(authz),)
        )

    def _owned(self, row: Row | None, account: Row, what: str) -> Row:
        if row is None:
            raise AcmeProblem("malformed", f"no such {what}", 404)
        if row.account_id != account.id:
            raise AcmeProblem("unauthorized", f"the {what} belongs to another account", 403)
        return row

    # --- handlers ----------------------------------------------------------------------------
    async def h_directory(self, _request: web.Request) -> web.Response:
        return self._json(
            Directory(
                new_nonce=self.url("new-nonce"),
                new_account=self.url("new-account"),
                new_order=self.url("new-order"),
                revoke_cert=self.url("revoke-cert"),
                meta=DirectoryMeta(external_account_required=self.config.eab_required, website=self.base),
            )
        )

    async def h_nonce(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if request.method == "HEAD" else 204)

    async def h_new_account(self, request: web.Request) -> web.Response:
        signed = await self._verify(request, jwk_mode="jwk")
        assert signed.jwk is not None
        req = NewAccount.from_json(signed.payload or {})
        tp = thumbprint(signed.jwk)
        existing = self.db.ca_account_by_thumbprint(tp)
        if req.only_return_existing and existing is None:
            raise AcmeProblem("accountDoesNotExist", "no account exists for this key")
        if existing is not None:
            return self._json(self._account(existing), 200, {"Location": self.account_url(existing.id)})
        contact = _check_contact(req.contact or ())
        eab = self._check_eab(req.external_account_binding, signed.jwk)
        acct, created = self.db.ca_create_account(tp, signed.jwk, contact)
        if eab is not None and created and not self.db.ca_eab_bind(eab.kid, acct.id):
            self.db.ca_update_account(acct.id, status="deactivated")
            raise AcmeProblem("unauthorized", f"externalAccountBinding: key identifier {eab.kid!r} was used by another account", 403)
        return self._json(self._account(acct), 201 if created else 200, {"Location": self.account_url(acct.id)})

    def _check_eab(self, doc: Mapping[str, Any] | None, jwk: Mapping[str, Any]) -> ExternalAccountBinding | None:
        """Verify an external account binding (RFC 8555 §7.3.4): an HS256 JWS whose protected
        ``url`` is the newAccount URL, whose ``kid`` was minted here and is unused, whose MAC
        verifies with that kid's key and whose payload is the account key (the outer ``jwk``).
        Without one: ``externalAccountRequired`` when :attr:`CAConfig.eab_required`, else None."""
        if doc is None:
            if self.config.eab_required:
                raise AcmeProblem("externalAccountRequired", "this STI-CA requires an external account binding (RFC 8555 §7.3.4)")
            return None
        eab = ExternalAccountBinding.from_json(doc)
        if eab.url != self.url("new-account"):
            raise AcmeProblem("unauthorized", f"externalAccountBinding: url {eab.url[:100]!r} is not the newAccount URL", 401)
        row = self.db.ca_eab_key(eab.kid)
        if row is None:
            raise AcmeProblem("unauthorized", f"externalAccountBinding: unknown key identifier {eab.kid[:64]!r}", 401)
        if row.account_id is not None:
            raise AcmeProblem("unauthorized", f"externalAccountBinding: key identifier {eab.kid!r} was already used", 403)
        if not eab.mac_ok(eab_hmac_key(row.hmac_key)):
            raise AcmeProblem("unauthorized", "externalAccountBinding: the HS256 MAC does not verify with the key of this kid", 401)
        try:
            same = jwk_public_key(eab.jwk) == jwk_public_key(jwk)
        except JWKError:
            same = False
        if not same:
            raise AcmeProblem("unauthorized", "externalAccountBinding: the payload is not the account key (the outer jwk)", 401)
        return eab

    async def h_account(self, request: web.Request) -> web.Response:
        signed, acct = await self._account_request(request)
        if acct.id != request.match_info["id"]:
            raise AcmeProblem("unauthorized", "kid does not match the account URL", 403)
        if signed.payload:
            update = AccountUpdate.from_json(signed.payload)
            values: dict[str, Any] = {}
            if update.status == "deactivated":
                values["status"] = "deactivated"
            elif update.status is not None:
                raise AcmeProblem("malformed", "status: only 'deactivated' can be requested (RFC 8555 §7.3.6)")
            if update.contact is not None:
                values["contact"] = _check_contact(update.contact)
            if values:
                self.db.ca_update_account(acct.id, **values)
                acct = self.db.ca_account(acct.id) or acct
        return self._json(self._account(acct), 200, {"Location": self.account_url(acct.id)})

    async def h_account_orders(self, request: web.Request) -> web.Response:
        _signed, acct = await self._account_request(request)
        if acct.id != request.match_info["id"]:
            raise AcmeProblem("unauthorized", "kid does not match the account URL", 403)
        return self._json(OrderList(tuple(self.url(f"order/{o.id}") for o in self.db.ca_orders_of(acct.id))))

    async def h_new_order(self, request: web.Request) -> web.Response:
        signed, acct = await self._account_request(request)
        req = NewOrder.from_json(signed.payload)
        if len(req.identifiers) != 1:
            raise AcmeProblem("rejectedIdentifier", "an order holds exactly one TNAuthList identifier (RFC 9448 §3)")
        ident = req.identifiers[0]
        if ident.type != TNAUTHLIST:
            raise AcmeProblem("unsupportedIdentifier", f"identifier type {ident.type[:30]!r} is not supported; use TNAuthList")
        try:
            tnal = TNAuthList.from_identifier(ident.value)
        except TNAuthListError as exc:
            raise AcmeProblem("malformed", f"identifiers[0].value: {exc.description}") from None
        if len(tnal.entries) != 1 or not isinstance(tnal.entries[0], SPC):
            raise AcmeProblem("rejectedIdentifier", "SHAKEN certificates carry exactly one SPC (ATIS-1000080 §6.4.1)")
        code = tnal.entries[0].code
        if not code.isalnum() or code != code.upper():
            raise AcmeProblem("rejectedIdentifier", "SPC must be digits and upper-case letters (ATIS-1000080 §6.4.1)")
        binding = self.db.ca_eab_of_account(acct.id)
        if binding is not None and binding.spc and binding.spc != code:
            raise AcmeProblem("rejectedIdentifier", f"this account's external account binding is for SPC {binding.spc}, not {code}", 403)
        now = utcnow()
        nb, na = req.not_before, req.not_after
        start = nb or now
        if na is not None and na <= start:
            raise AcmeProblem("malformed", "notAfter must be after notBefore")
        if na is not None and na - start > dt.timedelta(days=self.config.max_cert_days):
            raise AcmeProblem("malformed", f"validity may not exceed {self.config.max_cert_days} days")
        if nb is not None and nb > now + dt.timedelta(days=30):
            raise AcmeProblem("malformed", "notBefore too far in the future")
        order, _authz = self.db.ca_create_order(
            acct.id, ident.value, tnal.to_der(),
            expires=now + dt.timedelta(seconds=self.config.order_lifetime), not_before=nb, not_after=na,
            challenge_token=secrets.token_urlsafe(16),
        )
        return self._json(self._order(order), 201, {"Location": self.url(f"order/{order.id}")})

    async def h_order(self, request: web.Request) -> web.Response:
        _signed, acct = await self._account_request(request)
        order = self._owned(self.db.ca_order(request.match_info["id"]), acct, "order")
        headers = {"Location": self.url(f"order/{order.id}")}
        if order.status == "processing":
            headers["Retry-After"] = "1"
        return self._json(self._order(order), 200, headers)

    async def h_authz(self, request: web.Request) -> web.Response:
        signed, acct = await self._account_request(request)
        authz = self._owned(self.db.ca_authz(request.match_info["id"]), acct, "authorization")
        if signed.payload and AccountUpdate.from_json(signed.payload).status == "deactivated":
            self.db.ca_authz_result(authz.id, valid=False, error={"type": ERR + "unauthorized", "detail": "deactivated by the client"})
            authz = self.db.ca_authz(authz.id) or authz
        order = self.db.ca_order(authz.order_id)
        assert order is not None
        headers = {"Retry-After": "1"} if authz.status == "pending" else {}
        return self._json(self._authz(authz, order), 200, headers)

    async def h_challenge(self, request: web.Request) -> web.Response:
        signed, acct = await self._account_request(request)
        authz = self._owned(self.db.ca_authz(request.match_info["id"]), acct, "challenge")
        headers = {"Link": f'<{self.url("authz/" + authz.id)}>;rel="up"'}
        if signed.payload is None or authz.status != "pending":
            return self._json(self._challenge(authz), 200, headers)
        atc = TkauthAnswer.from_json(signed.payload).atc
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
        return self._json(self._challenge(authz), 200, headers)

    def _check_csr(self, payload: Mapping[str, Any] | None, order: Row, account: Row) -> x509.CertificateSigningRequest:
        csr_b64 = Finalize.from_json(payload).csr
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
        if pub == jwk_public_key(account.jwk):
            if not self.config.allow_account_key_reuse:
                raise AcmeProblem("badCSR", "the CSR key is the account key; use a new key for the certificate (RFC 8555 §11.1)")
            log.warning("allow_account_key_reuse: issuing for order %s with the key of account %s (RFC 8555 §11.1 says refuse)",
                        order.id, account.id)
        try:
            tnal = certs.csr_tnauthlist(csr)
        except TNAuthListError as exc:
            raise AcmeProblem("badCSR", exc.description) from None
        if tnal.to_der() != order.tnauthlist:
            raise AcmeProblem("badCSR", "CSR TNAuthList differs from the authorized identifier (RFC 9448 §6)")
        spc = tnal.spc
        for finding in certs.check_sp_subject(csr.subject, spc):  # ATIS-1000080 §6.4.1: the subject is kept as asked
            raise AcmeProblem("badCSR", f"CSR subject: {finding.removeprefix('CM-06 ')} (ATIS-1000080 §6.4.1)")
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
        csr = self._check_csr(signed.payload, order, acct)
        if not self.db.claim_order(order.id):
            raise AcmeProblem("orderNotReady", "order is no longer ready (finalized concurrently)", 403)
        try:
            tnal = TNAuthList.from_der(order.tnauthlist)
            cert = certs.create_sp_certificate(
                csr, self.keys.intermediate, self.keys.intermediate_key,
                tnauthlist=tnal, subject=csr.subject, days=self.config.cert_days,
                crl_url=self.config.crl_url, crl_issuer=self.config.crl_issuer,
                not_before=order.not_before, not_after=order.not_after,
            )
            chain_pem = certs.pem([cert, self.keys.intermediate])
            cr_url = None
            if self.publisher is not None:
                spc = tnal.spc or "SP"
                try:
                    cr_url = await self.publisher(f"{spc}-{cert.serial_number:x}.pem", chain_pem)
                except Exception as exc:  # the certificate is still issued; the SP can publish it
                    log.warning("publishing to the STI-CR failed: %s", exc)
                    self._publish_errors[order.id] = f"the STI-CA could not publish it to the STI-CR: {str(exc)[:200]}"
            self.db.ca_store_certificate(order.id, acct.id, cert.serial_number, chain_pem.decode(), cert.not_valid_after_utc, cr_url)
            audit("ca", "certificate issued", serial=format(cert.serial_number, "x"), spc=tnal.spc, account=acct.id, order=order.id, x5u=cr_url)
        except Exception:
            log.exception("issuance failed for order %s", order.id)
            self.db.release_order(order.id, status="invalid", error={"type": ERR + "serverInternal", "detail": "issuance failed"})
            raise AcmeProblem("serverInternal", "issuance failed", 500) from None
        order = self.db.ca_order(order.id) or order
        headers = {"Location": self.url(f"order/{order.id}")}
        if cr_url:
            headers[CERTIFICATE_LOCATION_HEADER] = cr_url
        return self._json(self._order(order), 200, headers)

    async def h_cert(self, request: web.Request) -> web.Response:
        _signed, acct = await self._account_request(request)
        row = self._owned(self.db.ca_certificate(request.match_info["id"]), acct, "certificate")
        headers = {"Link": f'<{self.url("issuer.pem")}>;rel="up"'}
        if row.cr_url:
            headers[CERTIFICATE_LOCATION_HEADER] = row.cr_url
        elif row.order_id in self._publish_errors:  # tell the SP's client, not only this log
            headers[PUBLISH_ERROR_HEADER] = self._publish_errors[row.order_id]
        return web.Response(body=row.chain_pem.encode(), content_type=PEM_CHAIN, headers=headers)

    async def h_revoke(self, request: web.Request) -> web.Response:
        signed = await self._verify(request, jwk_mode="either")
        req = Revocation.from_json(signed.payload)
        try:
            cert = x509.load_der_x509_certificate(b64url_decode(req.certificate, what="certificate"))
        except (PassportEncodingError, ValueError):
            raise AcmeProblem("malformed", "certificate: not the base64url DER of a certificate") from None
        reason = req.reason
        if reason is not None and reason not in REVOCATION_REASONS:
            raise AcmeProblem("badRevocationReason", f"reason {reason} is not supported; use one of {sorted(REVOCATION_REASONS)}")
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
        audit("ca", "certificate revoked", serial=format(cert.serial_number, "x"), reason=reason, account=row.account_id, by_key=signed.account is None)
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
