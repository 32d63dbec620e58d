"""STI-CA request authentication (RFC 8555 §6.2-§6.5, §7.3.4).

* :class:`NonceStore`: RFC 8555 §6.5 anti-replay nonces, single use and expiring;
* :class:`RequestAuthenticator`: §6.2 flattened JWS JSON, ES256 only (``badSignatureAlgorithm``),
  ``jwk`` for newAccount/revokeCert and ``kid`` otherwise; §6.4 the ``url`` header must equal the
  request URL (``unauthorized``); §6.5 nonces (``badNonce``); and the §7.3.4 external account
  binding of a newAccount request;
* :func:`mint_eab_key`: the EAB keys an operator hands to SPs (``stirshaken ca eab-create``).

Every refusal is an :class:`~stirshaken.pki.acme.AcmeProblem` (the server answers it as an RFC 8555
§6.7 problem document).  The one relaxation, :attr:`CAConfig.allow_header_only_signature`, is
logged (WARNING, logger ``stirshaken.pki.ca``) every time it is used.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import orjson
from aiohttp import web

from stirshaken.core.b64 import b64url_encode
from stirshaken.core.errors import SignatureError
from stirshaken.core.jose import JWKError, jwk_public_key, parse_flattened, verify_signature
from stirshaken.pki.acme import JOSE_JSON, AcmeProblem, ExternalAccountBinding, eab_hmac_key
from stirshaken.pki.ca_config import CAConfig
from stirshaken.pki.store import Database, Row

log = logging.getLogger("stirshaken.pki.ca")  # the STI-CA's logger (docs/pki.md)

NONCE_LIFETIME = 600.0
MAX_NONCES = 100_000


class NonceStore:
    """RFC 8555 §6.5 anti-replay nonces: random, single use, expiring ``lifetime`` seconds after
    issue; at most ``max_size`` are held.  ``clock`` (seconds, monotonic) is read at every call.

    Issuing and consuming cost O(1) amortised whatever the store holds (every STI-CA answer issues
    one, so this is on every response's path): nonces are kept in issue order, which with one fixed
    ``lifetime`` and a monotonic clock is also expiry order, so :meth:`issue` drops the expired ones
    from the front (each nonce is inserted and removed once) and, when the store is full of live
    nonces, the oldest.  A client whose nonce was dropped gets ``badNonce`` and retries with the
    fresh one of that answer (RFC 8555 §6.5).  Memory: about 190 bytes per nonce held
    (``bench/bench_nonce.py``).
    """

    def __init__(self, lifetime: float = NONCE_LIFETIME, max_size: int = MAX_NONCES, *,
                 clock: Callable[[], float] = time.monotonic):
        if lifetime <= 0 or max_size < 1:
            raise ValueError("a nonce store needs a positive lifetime and room for one nonce")
        self.lifetime = lifetime
        self.max_size = max_size
        self.clock = clock
        self._nonces: OrderedDict[str, float] = OrderedDict()  # nonce -> expiry, oldest first

    def __len__(self) -> int:
        return len(self._nonces)

    def issue(self) -> str:
        """A new nonce (22 base64url characters, 128 random bits)."""
        now = self.clock()
        nonces = self._nonces
        while nonces:  # drop the expired nonces at the front (an OrderedDict's first key is O(1))
            oldest = next(iter(nonces))
            if nonces[oldest] > now:
                break
            del nonces[oldest]
        while len(nonces) >= self.max_size:
            nonces.popitem(last=False)
        nonce = secrets.token_urlsafe(16)
        nonces[nonce] = now + self.lifetime
        return nonce

    def consume(self, nonce: str) -> bool:
        """Whether ``nonce`` was issued here, is unexpired and unused; it is spent either way."""
        expires = self._nonces.pop(nonce, None)
        return expires is not None and expires > self.clock()


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


def _malformed_jws(message: str) -> AcmeProblem:
    return AcmeProblem("malformed", message)


@dataclass
class Signed:
    """An authenticated ACME request (RFC 8555 §6.2)."""

    protected: dict[str, Any]
    payload: dict[str, Any] | None  # None: POST-as-GET
    jwk: dict[str, Any] | None
    account: Row | None


class RequestAuthenticator:
    """Authenticates the requests of one STI-CA: ``db`` holds its accounts and EAB keys,
    ``nonces`` the nonces it hands out, ``base`` is its base URL and ``url(path)`` the URL of
    an ACME resource (``url("acct/")`` prefixes every account URL)."""

    def __init__(self, config: CAConfig, db: Database, nonces: NonceStore, *, base: str, url: Callable[[str], str]):
        self.config = config
        self.db = db
        self.nonces = nonces
        self.base = base
        self.url = url

    async def verify(self, request: web.Request, *, jwk_mode: str = "kid") -> Signed:
        """The authenticated request, or the :class:`AcmeProblem` refusing it.  ``jwk_mode``: ``"kid"`` (account requests), ``"jwk"`` (newAccount), ``"either"`` (revokeCert)."""
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != JOSE_JSON:
            raise AcmeProblem("malformed", f"Content-Type must be {JOSE_JSON}", 415)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise AcmeProblem("malformed", "request body is not JSON") from None
        jws = parse_flattened(body, what="request body", error=_malformed_jws)
        protected, payload_raw, signature, prot_b64, pay_b64 = jws
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
            verify_signature(jws.signing_input, signature, pub)
        except SignatureError:
            if not (self.config.allow_header_only_signature and pay_b64 == "" and self.header_only(prot_b64, signature, pub)):
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
    def header_only(prot_b64: str, signature: bytes, pub: Any) -> bool:
        """Whether ``signature`` covers the base64url protected header alone (the relaxation of
        :attr:`CAConfig.allow_header_only_signature`)."""
        try:
            verify_signature(prot_b64.encode("ascii"), signature, pub)
        except SignatureError:
            return False
        return True

    def check_eab(self, doc: Mapping[str, Any] | None, jwk: Mapping[str, Any]) -> ExternalAccountBinding | None:
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


__all__ = ["MAX_NONCES", "NONCE_LIFETIME", "NonceStore", "RequestAuthenticator", "Signed", "mint_eab_key"]
