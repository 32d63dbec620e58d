"""STI-CA: an RFC 8555 ACME server issuing SHAKEN certificates for TNAuthList identifiers.

* RFC 8555 §7.1 directory, §7.2 ``newNonce`` (HEAD/GET), §7.3 ``newAccount`` (incl.
  ``onlyReturnExisting``), §7.4 ``newOrder`` / finalize / POST-as-GET certificate download
  (``application/pem-certificate-chain``), §7.6 ``revokeCert``.
* §6.2-§6.5 request authentication (JWS, ``url``, nonces) and the §7.3.4 external account
  binding: :mod:`stirshaken.pki.ca_auth`.  ``Replay-Nonce`` and ``Link: <directory>;rel="index"``
  on every response, §6.7 problem documents (``application/problem+json``) for every error, never
  a stack trace.
* RFC 9448 §3 TNAuthList identifiers (base64url per RFC 9448; base64 accepted too, AC-02) and
  the ``tkauth-01`` challenge (RFC 9447 §3, RFC 9448 §5) answered with ``{"atc": <SPC token>}``;
  the token is validated as docs/requirements.md AC-03 lists (:class:`stirshaken.pki.spc_token.TokenValidator`).
* Issued certificates follow ATIS-1000080 §6.4.1 (:mod:`stirshaken.pki.ca_issuance`: the CSR check
  and :func:`certificates.create_sp_certificate`) with the STI-PA's CRL distribution point and
  ``cRLIssuer`` (CM-12) and the authorized TNAuthList (AC-04).  Settings and keys:
  :mod:`stirshaken.pki.ca_config`.  State lives in :class:`~stirshaken.pki.store.Database`.
* Finalize records before it issues: the certificate is signed in memory, recorded with the
  order's move to ``valid`` in one transaction (:meth:`Database.ca_record_certificate`, whose
  conditional UPDATE also finalizes an order at most once), and only then answered, downloadable
  and published to the STI-CR.  A failed commit discards it (``serverInternal``, the order stays
  ``ready``); on start, orders an earlier version left in ``processing`` are completed or reset
  (:meth:`Database.ca_recover_orders`).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from typing import Any, Awaitable, Callable, Mapping

import orjson
from aiohttp import web
from cryptography import x509

from stirshaken.core import certificates as certs
from stirshaken.core.b64 import b64url_decode
from stirshaken.core.errors import PassportEncodingError, TNAuthListError
from stirshaken.core.jose import jwk_public_key, thumbprint
from stirshaken.core.tnauthlist import SPC, TNAuthList
from stirshaken.pki.acme import (
    CERTIFICATE_LOCATION_HEADER, ERR, PEM_CHAIN, PROBLEM_JSON, PUBLISH_ERROR_HEADER, TKAUTH01, TNAUTHLIST, Account,
    AccountUpdate, AcmeProblem, Authorization, Challenge, Directory, DirectoryMeta, Identifier, NewAccount, NewOrder, Order,
    OrderList, Revocation, TkauthAnswer,
)
from stirshaken.pki.ca_auth import NonceStore, RequestAuthenticator, Signed, mint_eab_key
from stirshaken.pki.ca_config import CAConfig, CAKeys
from stirshaken.pki.ca_issuance import check_csr, issue_certificate
from stirshaken.pki.records import access_log, audit
from stirshaken.pki.spc_token import TokenValidator
from stirshaken.pki.store import Database, Row, utcnow

log = logging.getLogger("stirshaken.pki.ca")

#: publishes a certificate chain (file name, PEM) to the STI-CR; returns its URL
Publisher = Callable[[str, bytes], Awaitable[str]]
#: tells the STI-PA of a revocation (certificate, RFC 5280 reason code or None)
RevocationHook = Callable[[x509.Certificate, "int | None"], Awaitable[None]]


def _check_contact(contact: tuple[str, ...] | list[str]) -> list[str]:
    """The account contacts if every one is a ``mailto:`` or ``tel:`` URL (RFC 8555 §7.3);
    ``invalidContact`` otherwise."""
    for c in contact:
        if not c.startswith(("mailto:", "tel:")):
            raise AcmeProblem("invalidContact", f"contact {c[:60]!r} is not a mailto: or tel: URL")
    return list(contact)


def _first_line(exc: BaseException) -> str:
    """The first line of an error's message, at most 200 characters (database drivers add the
    statement and a documentation link on further lines)."""
    return (str(exc).strip().splitlines() or [""])[0][:200]


#: RFC 5280 §5.3.1 CRLReason codes accepted by revokeCert (RFC 8555 §7.6)
REVOCATION_REASONS = frozenset({0, 1, 3, 4, 5, 9, 10})


# --- the ACME server ---------------------------------------------------------------------------


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
        self.auth = RequestAuthenticator(config, db, self.nonces, base=self.base, url=self.url)
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
        app.on_startup.append(self._recover_orders)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _recover_orders(self, _app: web.Application) -> None:
        """On start: orders left in ``processing`` (:meth:`Database.ca_recover_orders`) are
        completed when their certificate is recorded, else put back to ``ready``."""
        completed, reset = self.db.ca_recover_orders()
        if completed or reset:
            log.warning("STI-CA start: %d unfinished order(s) completed (certificate recorded): %s; %d back to ready "
                        "(their clients finalize again): %s", len(completed), " ".join(completed), len(reset), " ".join(reset))

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


    # --- requests (authenticated by ca_auth, RFC 8555 §6.2-§6.5) -------------------------------
    async def _account_request(self, request: web.Request) -> tuple[Signed, Row]:
        signed = await self.auth.verify(request)
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
        signed = await self.auth.verify(request, jwk_mode="jwk")
        assert signed.jwk is not None
        req = NewAccount.from_json(signed.payload or {})
        tp = thumbprint(signed.jwk)
        existing = self.db.ca_account_by_thumbprint(tp)
        if req.only_return_existing and existing is None:
            raise AcmeProblem("accountDoesNotExist", "no account exists for this key")
        if existing is not None:
            return self._json(self._account(existing), 200, {"Location": self.account_url(existing.id)})
        contact = _check_contact(req.contact or ())
        eab = self.auth.check_eab(req.external_account_binding, signed.jwk)
        acct, created = self.db.ca_create_account(tp, signed.jwk, contact)
        if eab is not None and created and not self.db.ca_eab_bind(eab.kid, acct.id):
            self.db.ca_update_account(acct.id, status="deactivated")
            raise AcmeProblem("unauthorized", f"externalAccountBinding: key identifier {eab.kid!r} was used by another account", 403)
        return self._json(self._account(acct), 201 if created else 200, {"Location": self.account_url(acct.id)})


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


    async def h_finalize(self, request: web.Request) -> web.Response:
        signed, acct = await self._account_request(request)
        order = self._owned(self.db.ca_order(request.match_info["id"]), acct, "order")
        if order.status != "ready":
            raise AcmeProblem("orderNotReady", f"order is {order.status}, not ready", 403)
        csr = check_csr(self.config, signed.payload, order, acct)
        cert, tnal, chain_pem = self._sign(csr, order)
        row = self._record(order, acct, cert, chain_pem)
        cr_url = await self._publish(order, row, tnal, cert, chain_pem)
        audit("ca", "certificate issued", serial=format(cert.serial_number, "x"), spc=tnal.spc, account=acct.id, order=order.id, x5u=cr_url)
        order = self.db.ca_order(order.id) or order
        headers = {"Location": self.url(f"order/{order.id}")}
        if cr_url:
            headers[CERTIFICATE_LOCATION_HEADER] = cr_url
        return self._json(self._order(order), 200, headers)

    # --- finalize, in order: sign (memory only), record (one transaction), then publish -------
    def _sign(self, csr: x509.CertificateSigningRequest, order: Row) -> tuple[x509.Certificate, TNAuthList, bytes]:
        """The certificate for ``csr``, in memory only: nothing is served or published before
        :meth:`_record`.  A failure to sign makes the order ``invalid`` (``serverInternal``)."""
        try:
            return issue_certificate(self.config, self.keys, csr, order)
        except Exception:
            log.exception("issuance failed for order %s", order.id)
            try:
                self.db.ca_fail_order(order.id, {"type": ERR + "serverInternal", "detail": "issuance failed"})
            except Exception as exc:  # the order stays ready; the answer below says what happened
                log.error("order %s: could not be marked invalid: %s", order.id, _first_line(exc))
            raise AcmeProblem("serverInternal", "issuance failed", 500) from None

    def _record(self, order: Row, acct: Row, cert: x509.Certificate, chain_pem: bytes) -> Row:
        """Record the certificate and make the order ``valid`` in one transaction
        (:meth:`Database.ca_record_certificate`, RFC 8555 §7.4); returns the certificate row.  The
        certificate exists for clients only once this has committed.

        Raises :class:`AcmeProblem` ``serverInternal`` (500) when the database cannot commit: the
        certificate is discarded (never served or published, so nothing unrecorded is out) and the
        order stays ``ready`` for the client to finalize again; ``orderNotReady`` (403) when a
        concurrent finalize recorded first."""
        try:
            row = self.db.ca_record_certificate(order.id, acct.id, cert.serial_number, chain_pem.decode(), cert.not_valid_after_utc)
        except Exception as exc:
            log.error("finalize of order %s: the certificate (serial %x) could not be recorded (%s: %s); discarded, "
                      "not issued; the order stays ready", order.id, cert.serial_number, type(exc).__name__, _first_line(exc))
            raise AcmeProblem(
                "serverInternal", "the certificate could not be recorded, so none was issued; the order is still ready: finalize again later", 500
            ) from None
        if row is None:
            raise AcmeProblem("orderNotReady", "order is no longer ready (finalized concurrently)", 403)
        return row

    async def _publish(self, order: Row, row: Row, tnal: TNAuthList, cert: x509.Certificate, chain_pem: bytes) -> str | None:
        """Publish the recorded certificate's chain to the STI-CR, if configured; its URL, or None.
        A failure does not undo the issuance: the download then says why (``PUBLISH_ERROR_HEADER``)
        and the SP can upload the chain itself."""
        if self.publisher is None:
            return None
        try:
            cr_url = await self.publisher(f"{tnal.spc or 'SP'}-{cert.serial_number:x}.pem", chain_pem)
        except Exception as exc:
            log.warning("publishing to the STI-CR failed: %s", exc)
            self._publish_errors[order.id] = f"the STI-CA could not publish it to the STI-CR: {str(exc)[:200]}"
            return None
        try:
            self.db.ca_set_cr_url(row.id, cr_url)
        except Exception as exc:  # published and recorded; only the download's Location header is missing
            log.warning("certificate %s is published at %s, but noting that failed: %s", row.id, cr_url, _first_line(exc))
        return cr_url

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
        signed = await self.auth.verify(request, jwk_mode="either")
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


__all__ = ["CAConfig", "CAKeys", "CertificateAuthority", "NonceStore", "Publisher", "RevocationHook", "mint_eab_key"]
