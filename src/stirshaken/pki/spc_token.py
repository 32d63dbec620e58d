"""SPC token validation for the STI-CA's ``tkauth-01`` challenge.

The TNAuthList Authority Token (RFC 9447 §3) a client presents in ``{"atc": <token>}`` (RFC 9448
§5) is checked as RFC 9448 §4-§5 and docs/requirements.md AC-03 require; see :class:`TokenValidator`.
Its x5u and the token authority's revocation list are fetched through
:func:`stirshaken.net.http.client_session` (5 s total, bodies capped at 256 KiB).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import TYPE_CHECKING

import aiohttp
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core import certificates as certs
from stirshaken.core.errors import CertificateError, TNAuthListError
from stirshaken.core.jose import account_key_fingerprint, parse_compact, verify_x5u_jws
from stirshaken.core.tnauthlist import TNAuthList
from stirshaken.net.http import ResponseTooLargeError, client_session, read_capped
from stirshaken.pki.acme import TNAUTHLIST, AcmeProblem
from stirshaken.pki.store import Database, utcnow

if TYPE_CHECKING:
    from stirshaken.pki.ca_config import CAConfig

#: total seconds for one fetch of a token x5u or of the revocation list
FETCH_TIMEOUT = 5.0
#: largest x5u chain or revocation list accepted (bytes)
MAX_FETCH_BYTES = 256 * 1024
#: seconds a fetched x5u chain is reused
X5U_CACHE_SECONDS = 300


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

    def __init__(self, config: "CAConfig", db: Database):
        self.config = config
        self.db = db
        self.prefixes = config.x5u_prefixes or [config.token_authority.rstrip("/") + "/"]
        self._session: aiohttp.ClientSession | None = None
        self._x5u_cache: dict[str, tuple[float, list[x509.Certificate]]] = {}

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = client_session(ca_bundle=self.config.ca_bundle, timeout=FETCH_TIMEOUT, connect_timeout=None)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _fetch(self, url: str) -> bytes:
        try:
            async with self.session().get(url, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise _unauth(f"token x5u {url} answered HTTP {resp.status}")
                return await read_capped(resp, MAX_FETCH_BYTES)
        except ResponseTooLargeError as exc:
            raise _unauth(f"{url}: {exc}") from None
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
        self._x5u_cache[x5u] = (now + X5U_CACHE_SECONDS, chain)
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


__all__ = ["TokenValidator"]
