"""ACME (RFC 8555) as SHAKEN uses it: the names and the problem type shared by the STI-CA
(:mod:`stirshaken.pki.ca`) and the SP-side client (:mod:`stirshaken.pki.acme_client`).

* Media types: ``application/jose+json`` for every request (RFC 8555 §6.2),
  ``application/pem-certificate-chain`` for the certificate (§9.1), ``application/problem+json``
  for errors (§6.7).
* The TNAuthList identifier type (RFC 9448 §3) and the ``tkauth-01`` challenge (RFC 9447 §3).
* :class:`AcmeProblem`: one RFC 8555 §6.7 problem type, raised by the server to answer and by the
  client when a server answered one.
* The messages (RFC 8555 §7.1, SHAKEN profile): :class:`Directory`, :class:`Identifier`,
  :class:`NewAccount` / :class:`AccountUpdate` / :class:`Account` / :class:`OrderList`,
  :class:`NewOrder` / :class:`Order`, :class:`Authorization`, :class:`Challenge`, the tkauth-01
  answer :class:`TkauthAnswer`, :class:`Finalize` and :class:`Revocation`.  Each is a frozen
  dataclass with ``to_json()`` (the JSON object to send, members in the order this server has
  always sent them, absent optional members left out) and ``from_json(doc)`` (a parsed JSON value
  in, the message out).  ``from_json`` raises :class:`AcmeProblem` ``malformed`` (HTTP 400) with
  one line ``"<member>: <what is wrong>"`` for a document that does not have the message's shape;
  members it does not know are ignored (RFC 8555 §7.1).  Checks of meaning (supported identifier
  types, contact schemes, revocation reason codes, CSR contents) are the server's, with their own
  problem types.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Mapping

import orjson

from stirshaken.core.b64 import b64url_decode
from stirshaken.core.jose import hs256_verify, load_json_object, mac_jws, parse_flattened

JOSE_JSON = "application/jose+json"
PEM_CHAIN = "application/pem-certificate-chain"
PROBLEM_JSON = "application/problem+json"
#: prefix of every RFC 8555 §6.7 error type
ERR = "urn:ietf:params:acme:error:"
#: RFC 9448 §3 identifier type
TNAUTHLIST = "TNAuthList"
#: RFC 9447 §3 challenge type
TKAUTH01 = "tkauth-01"
#: on finalize and certificate download: the STI-CR URL where the STI-CA published the chain
CERTIFICATE_LOCATION_HEADER = "X-Shaken-Certificate-Location"
#: on a certificate download: why the STI-CA's own upload of the chain to the STI-CR failed
PUBLISH_ERROR_HEADER = "X-Shaken-Publish-Error"


class AcmeProblem(Exception):
    """An RFC 8555 §6.7 problem: ``urn:ietf:params:acme:error:<kind>``, a detail and an HTTP status.

    ``kind`` is the short name (``badNonce``, ``unauthorized``, ...); :attr:`type` is the full URN.
    ``status`` is the HTTP status the server answers (or answered) with; 0 for a failure found by
    the client itself.  Extra members (``subproblems``, ``identifier``) travel in ``extra``.
    """

    def __init__(self, kind: str, detail: str, status: int = 400, **extra: Any):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status
        self.extra = extra

    @classmethod
    def from_document(cls, doc: Mapping[str, Any] | None, status: int = 0) -> "AcmeProblem":
        """The problem a server answered (``doc`` as received; anything not a problem becomes
        ``serverInternal``)."""
        doc = doc if isinstance(doc, Mapping) else {}
        t = doc.get("type")
        kind = t[len(ERR):] if isinstance(t, str) and t.startswith(ERR) else (t if isinstance(t, str) and t else "serverInternal")
        detail = doc.get("detail")
        extra = {k: v for k, v in doc.items() if k not in ("type", "detail", "status")}
        return cls(kind, detail if isinstance(detail, str) else "", status, **extra)

    @property
    def type(self) -> str:
        """The full error type URN (RFC 8555 §6.7)."""
        return self.kind if ":" in self.kind else ERR + self.kind

    def to_json(self) -> dict[str, Any]:
        """The problem document (RFC 7807 members plus ``extra``)."""
        return {"type": self.type, "detail": self.detail, "status": self.status, **self.extra}

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" + (f" (HTTP {self.status})" if self.status else "")


# --- the messages (RFC 8555 §7.1) ---------------------------------------------------------------

JSONObject = dict[str, Any]


def _malformed(member: str, what: str) -> AcmeProblem:
    return AcmeProblem("malformed", f"{member}: {what}")


def _object(doc: Any, member: str) -> Mapping[str, Any]:
    if not isinstance(doc, Mapping):
        raise _malformed(member, "must be a JSON object")
    return doc


def _where(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _str(doc: Mapping[str, Any], key: str, prefix: str = "", *, required: bool = True, nonempty: bool = False) -> Any:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise _malformed(_where(prefix, key), "must be a string" if key in doc else "is missing")
    if nonempty and not value:
        raise _malformed(_where(prefix, key), "must not be empty")
    return value


def _bool(doc: Mapping[str, Any], key: str, prefix: str = "") -> bool | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, bool):
        raise _malformed(_where(prefix, key), "must be true or false")
    return value


def _str_list(doc: Mapping[str, Any], key: str, prefix: str = "", *, required: bool = True) -> tuple[str, ...] | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _malformed(_where(prefix, key), "must be a list of strings" if key in doc else "is missing")
    return tuple(value)


def _list(doc: Mapping[str, Any], key: str, prefix: str = "", *, nonempty: bool = False) -> list[Any]:
    value = doc.get(key)
    if not isinstance(value, list):
        raise _malformed(_where(prefix, key), "must be a list" if key in doc else "is missing")
    if nonempty and not value:
        raise _malformed(_where(prefix, key), "must be a non-empty list")
    return value


def _problem_doc(doc: Mapping[str, Any], key: str, prefix: str = "") -> Mapping[str, Any] | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, Mapping):
        raise _malformed(_where(prefix, key), "must be a problem document (JSON object)")
    return value


def rfc3339(t: dt.datetime) -> str:
    """``t`` as an RFC 3339 UTC date-time with second precision (``2025-01-31T12:00:00Z``); a naive
    ``t`` is taken to be UTC already."""
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc)
    return t.replace(microsecond=0, tzinfo=None).isoformat() + "Z"  # strftime's %Y does not pad years below 1000


#: RFC 3339 §5.6 date-time (``T``, ``Z`` in either case, a space for the ``T``); the offset is
#: optional here so that a missing one gets its own message
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})?", re.ASCII)


def _time(doc: Mapping[str, Any], key: str, prefix: str = "") -> dt.datetime | None:
    """An optional RFC 3339 date-time member, as an aware UTC datetime with second precision
    (the precision :func:`rfc3339` writes, so that a message round-trips)."""
    value = doc.get(key)
    if value is None:
        return None
    where = _where(prefix, key)
    if not isinstance(value, str):
        raise _malformed(where, "must be an RFC 3339 date-time string")
    try:
        if _RFC3339.fullmatch(value) is None:  # fromisoformat alone takes ISO 8601 forms RFC 3339 has not ("03:04,05")
            raise ValueError
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00")).replace(microsecond=0)
    except ValueError:
        raise _malformed(where, f"{value[:40]!r} is not an RFC 3339 date-time") from None
    if t.tzinfo is None:
        raise _malformed(where, "needs a time zone (RFC 3339 §5.6)")
    try:
        return t.astimezone(dt.timezone.utc)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is in year 0 in UTC
        raise _malformed(where, f"{value[:40]!r} is outside the years 1-9999 in UTC") from None


def _put(out: JSONObject, key: str, value: Any) -> None:
    """Add an optional member (left out when None)."""
    if value is not None:
        out[key] = rfc3339(value) if isinstance(value, dt.datetime) else value


def _problem(doc: Mapping[str, Any] | None) -> AcmeProblem | None:
    return None if doc is None else AcmeProblem.from_document(doc)


@dataclass(frozen=True)
class DirectoryMeta:
    """RFC 8555 §7.1.1 directory ``meta``: terms of service, website, CAA identities, and whether
    an external account binding is required (§7.3.4)."""

    external_account_required: bool | None = None
    website: str | None = None
    terms_of_service: str | None = None
    caa_identities: tuple[str, ...] | None = None

    def to_json(self) -> JSONObject:
        out: JSONObject = {}
        _put(out, "externalAccountRequired", self.external_account_required)
        _put(out, "website", self.website)
        _put(out, "termsOfService", self.terms_of_service)
        _put(out, "caaIdentities", None if self.caa_identities is None else list(self.caa_identities))
        return out

    @classmethod
    def from_json(cls, doc: Any, prefix: str = "meta") -> "DirectoryMeta":
        doc = _object(doc, prefix)
        return cls(
            external_account_required=_bool(doc, "externalAccountRequired", prefix),
            website=_str(doc, "website", prefix, required=False),
            terms_of_service=_str(doc, "termsOfService", prefix, required=False),
            caa_identities=_str_list(doc, "caaIdentities", prefix, required=False),
        )


@dataclass(frozen=True)
class Directory:
    """RFC 8555 §7.1.1 directory: the URLs of the server's resources."""

    new_nonce: str
    new_account: str
    new_order: str
    revoke_cert: str | None = None
    key_change: str | None = None
    meta: DirectoryMeta | None = None

    def to_json(self) -> JSONObject:
        out: JSONObject = {"newNonce": self.new_nonce, "newAccount": self.new_account, "newOrder": self.new_order}
        _put(out, "revokeCert", self.revoke_cert)
        _put(out, "keyChange", self.key_change)
        _put(out, "meta", None if self.meta is None else self.meta.to_json())
        return out

    @classmethod
    def from_json(cls, doc: Any) -> "Directory":
        doc = _object(doc, "directory")
        meta = doc.get("meta")
        return cls(
            new_nonce=_str(doc, "newNonce"),
            new_account=_str(doc, "newAccount"),
            new_order=_str(doc, "newOrder"),
            revoke_cert=_str(doc, "revokeCert", required=False),
            key_change=_str(doc, "keyChange", required=False),
            meta=None if meta is None else DirectoryMeta.from_json(meta),
        )


@dataclass(frozen=True)
class Identifier:
    """RFC 8555 §9.7.7 identifier; SHAKEN uses ``TNAuthList`` (RFC 9448 §3) whose ``value`` is the
    base64url (or base64) DER of the TNAuthList."""

    value: str
    type: str = TNAUTHLIST

    def to_json(self) -> JSONObject:
        return {"type": self.type, "value": self.value}

    @classmethod
    def from_json(cls, doc: Any, prefix: str = "identifier") -> "Identifier":
        doc = _object(doc, prefix)
        return cls(type=_str(doc, "type", prefix), value=_str(doc, "value", prefix))


@dataclass(frozen=True)
class NewAccount:
    """RFC 8555 §7.3 newAccount request payload.  ``external_account_binding`` is carried as the
    JWS object it is (§7.3.4; :class:`ExternalAccountBinding` parses it)."""

    contact: tuple[str, ...] | None = None
    terms_of_service_agreed: bool | None = None
    only_return_existing: bool = False
    external_account_binding: Mapping[str, Any] | None = None

    def to_json(self) -> JSONObject:
        out: JSONObject = {}
        _put(out, "termsOfServiceAgreed", self.terms_of_service_agreed)
        _put(out, "contact", None if self.contact is None else list(self.contact))
        if self.only_return_existing:
            out["onlyReturnExisting"] = True
        _put(out, "externalAccountBinding", None if self.external_account_binding is None else dict(self.external_account_binding))
        return out

    @classmethod
    def from_json(cls, doc: Any) -> "NewAccount":
        doc = _object(doc, "payload")
        eab = doc.get("externalAccountBinding")
        if eab is not None and not isinstance(eab, Mapping):
            raise _malformed("externalAccountBinding", "must be a flattened JWS object")
        return cls(
            contact=_str_list(doc, "contact", required=False),
            terms_of_service_agreed=_bool(doc, "termsOfServiceAgreed"),
            only_return_existing=_bool(doc, "onlyReturnExisting") is True,
            external_account_binding=eab,
        )


@dataclass(frozen=True)
class AccountUpdate:
    """RFC 8555 §7.3.2 / §7.3.6 payload POSTed to an account URL: new contacts or
    ``status: deactivated``; the same shape deactivates an authorization (§7.5.2)."""

    status: str | None = None
    contact: tuple[str, ...] | None = None

    def to_json(self) -> JSONObject:
        out: JSONObject = {}
        _put(out, "status", self.status)
        _put(out, "contact", None if self.contact is None else list(self.contact))
        return out

    @classmethod
    def from_json(cls, doc: Any) -> "AccountUpdate":
        doc = _object(doc, "payload")
        return cls(status=_str(doc, "status", required=False), contact=_str_list(doc, "contact", required=False))


@dataclass(frozen=True)
class Account:
    """RFC 8555 §7.1.2 account object."""

    status: str
    contact: tuple[str, ...] = ()
    orders: str | None = None
    terms_of_service_agreed: bool | None = None

    def to_json(self) -> JSONObject:
        out: JSONObject = {"status": self.status, "contact": list(self.contact)}
        _put(out, "orders", self.orders)
        _put(out, "termsOfServiceAgreed", self.terms_of_service_agreed)
        return out

    @classmethod
    def from_json(cls, doc: Any) -> "Account":
        doc = _object(doc, "account")
        return cls(
            status=_str(doc, "status"),
            contact=_str_list(doc, "contact", required=False) or (),
            orders=_str(doc, "orders", required=False),
            terms_of_service_agreed=_bool(doc, "termsOfServiceAgreed"),
        )


@dataclass(frozen=True)
class OrderList:
    """RFC 8555 §7.1.2.1 the orders of an account (URLs)."""

    orders: tuple[str, ...]

    def to_json(self) -> JSONObject:
        return {"orders": list(self.orders)}

    @classmethod
    def from_json(cls, doc: Any) -> "OrderList":
        return cls(orders=_str_list(_object(doc, "orders list"), "orders") or ())


def _identifiers(doc: Mapping[str, Any]) -> tuple[Identifier, ...]:
    return tuple(Identifier.from_json(i, f"identifiers[{n}]") for n, i in enumerate(_list(doc, "identifiers", nonempty=True)))


@dataclass(frozen=True)
class NewOrder:
    """RFC 8555 §7.4 newOrder request payload; ``not_before`` / ``not_after`` are aware datetimes."""

    identifiers: tuple[Identifier, ...]
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None

    def to_json(self) -> JSONObject:
        out: JSONObject = {"identifiers": [i.to_json() for i in self.identifiers]}
        _put(out, "notBefore", self.not_before)
        _put(out, "notAfter", self.not_after)
        return out

    @classmethod
    def from_json(cls, doc: Any) -> "NewOrder":
        doc = _object(doc, "payload")
        return cls(identifiers=_identifiers(doc), not_before=_time(doc, "notBefore"), not_after=_time(doc, "notAfter"))


@dataclass(frozen=True)
class Order:
    """RFC 8555 §7.1.3 order object.  ``error`` is the problem document as sent (see
    :attr:`problem`)."""

    status: str
    identifiers: tuple[Identifier, ...]
    authorizations: tuple[str, ...]
    finalize: str
    expires: dt.datetime | None = None
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    certificate: str | None = None
    error: Mapping[str, Any] | None = None

    @property
    def problem(self) -> AcmeProblem | None:
        """``error`` as an :class:`AcmeProblem` (None when the order has none)."""
        return _problem(self.error)

    def to_json(self) -> JSONObject:
        out: JSONObject = {"status": self.status}
        _put(out, "expires", self.expires)
        out["identifiers"] = [i.to_json() for i in self.identifiers]
        out["authorizations"] = list(self.authorizations)
        out["finalize"] = self.finalize
        _put(out, "notBefore", self.not_before)
        _put(out, "notAfter", self.not_after)
        _put(out, "certificate", self.certificate)
        _put(out, "error", None if self.error is None else dict(self.error))
        return out

    @classmethod
    def from_json(cls, doc: Any) -> "Order":
        doc = _object(doc, "order")
        return cls(
            status=_str(doc, "status"),
            identifiers=_identifiers(doc),
            authorizations=_str_list(doc, "authorizations") or (),
            finalize=_str(doc, "finalize"),
            expires=_time(doc, "expires"),
            not_before=_time(doc, "notBefore"),
            not_after=_time(doc, "notAfter"),
            certificate=_str(doc, "certificate", required=False),
            error=_problem_doc(doc, "error"),
        )


@dataclass(frozen=True)
class Challenge:
    """RFC 8555 §8 challenge object; for ``tkauth-01`` (RFC 9447 §3) also ``tkauth-type``
    (``atc``, RFC 9448 §5) and ``token-authority`` (the STI-PA base URL)."""

    type: str
    url: str
    status: str
    token: str | None = None
    validated: dt.datetime | None = None
    error: Mapping[str, Any] | None = None
    tkauth_type: str | None = None
    token_authority: str | None = None

    @property
    def problem(self) -> AcmeProblem | None:
        """``error`` as an :class:`AcmeProblem` (None when the challenge has none)."""
        return _problem(self.error)

    def to_json(self) -> JSONObject:
        out: JSONObject = {"type": self.type}
        _put(out, "tkauth-type", self.tkauth_type)
        _put(out, "token-authority", self.token_authority)
        out["url"] = self.url
        _put(out, "token", self.token)
        out["status"] = self.status
        _put(out, "validated", self.validated)
        _put(out, "error", None if self.error is None else dict(self.error))
        return out

    @classmethod
    def from_json(cls, doc: Any, prefix: str = "challenge") -> "Challenge":
        doc = _object(doc, prefix)
        return cls(
            type=_str(doc, "type", prefix),
            url=_str(doc, "url", prefix),
            status=_str(doc, "status", prefix),
            token=_str(doc, "token", prefix, required=False),
            validated=_time(doc, "validated", prefix),
            error=_problem_doc(doc, "error", prefix),
            tkauth_type=_str(doc, "tkauth-type", prefix, required=False),
            token_authority=_str(doc, "token-authority", prefix, required=False),
        )


@dataclass(frozen=True)
class Authorization:
    """RFC 8555 §7.1.4 authorization object."""

    status: str
    identifier: Identifier
    challenges: tuple[Challenge, ...]
    expires: dt.datetime | None = None
    wildcard: bool | None = None

    def challenge(self, type_: str = TKAUTH01) -> Challenge | None:
        """The first challenge of ``type_`` offered, or None."""
        return next((c for c in self.challenges if c.type == type_), None)

    def to_json(self) -> JSONObject:
        out: JSONObject = {"status": self.status}
        _put(out, "expires", self.expires)
        out["identifier"] = self.identifier.to_json()
        out["challenges"] = [c.to_json() for c in self.challenges]
        _put(out, "wildcard", self.wildcard)
        return out

    @classmethod
    def from_json(cls, doc: Any) -> "Authorization":
        doc = _object(doc, "authorization")
        return cls(
            status=_str(doc, "status"),
            identifier=Identifier.from_json(doc.get("identifier")),
            challenges=tuple(Challenge.from_json(c, f"challenges[{n}]") for n, c in enumerate(_list(doc, "challenges"))),
            expires=_time(doc, "expires"),
            wildcard=_bool(doc, "wildcard"),
        )


@dataclass(frozen=True)
class TkauthAnswer:
    """The ``tkauth-01`` challenge response ``{"atc": <SPC token>}`` (RFC 9448 §5)."""

    atc: str

    def to_json(self) -> JSONObject:
        return {"atc": self.atc}

    @classmethod
    def from_json(cls, doc: Any) -> "TkauthAnswer":
        doc = _object(doc, "payload")
        if not isinstance(doc.get("atc"), str) or not doc["atc"]:
            raise _malformed("atc", "must be the SPC token as a non-empty string (RFC 9448 §5)")
        return cls(atc=doc["atc"])


@dataclass(frozen=True)
class Finalize:
    """RFC 8555 §7.4 finalize payload: ``csr`` is the base64url DER of a PKCS#10 request."""

    csr: str

    def to_json(self) -> JSONObject:
        return {"csr": self.csr}

    @classmethod
    def from_json(cls, doc: Any) -> "Finalize":
        return cls(csr=_str(_object(doc, "payload"), "csr"))


@dataclass(frozen=True)
class Revocation:
    """RFC 8555 §7.6 revokeCert payload: ``certificate`` is the base64url DER of the certificate,
    ``reason`` an RFC 5280 §5.3.1 CRLReason code."""

    certificate: str
    reason: int | None = None

    def to_json(self) -> JSONObject:
        out: JSONObject = {"certificate": self.certificate}
        _put(out, "reason", self.reason)
        return out

    @classmethod
    def from_json(cls, doc: Any) -> "Revocation":
        doc = _object(doc, "payload")
        reason = doc.get("reason")
        if reason is not None and (not isinstance(reason, int) or isinstance(reason, bool)):
            raise _malformed("reason", "must be an integer CRLReason code (RFC 5280 §5.3.1)")
        return cls(certificate=_str(doc, "certificate"), reason=reason)


# --- External Account Binding (RFC 8555 §7.3.4) ---------------------------------------------------

#: the MAC algorithm of external account bindings made and accepted here
EAB_ALG = "HS256"


def eab_hmac_key(text: str) -> bytes:
    """The MAC key of an EAB key identifier from its base64url text (as ``stirshaken ca eab-create``
    shows it and certbot takes it; ``=`` padding is tolerated); raises ``ValueError`` for text that
    is not base64url of at least 16 bytes."""
    try:
        key = b64url_decode(text.strip().rstrip("="), what="the EAB HMAC key", error=ValueError)
    except ValueError:
        raise ValueError("the EAB HMAC key is not base64url") from None
    if len(key) < 16:
        raise ValueError("the EAB HMAC key is shorter than 16 bytes")
    return key


def make_eab(kid: str, hmac_key: bytes, account_jwk: Mapping[str, Any], url: str) -> dict[str, str]:
    """The ``externalAccountBinding`` member of a newAccount payload (RFC 8555 §7.3.4): a flattened
    JWS, HS256 with ``hmac_key``, whose protected header holds ``alg``, ``kid`` and ``url`` (the
    newAccount URL, no nonce) and whose payload is the account's public JWK."""
    return mac_jws(hmac_key, {"alg": EAB_ALG, "kid": kid, "url": url}, orjson.dumps(dict(account_jwk), option=orjson.OPT_SORT_KEYS))


def _malformed_eab(message: str) -> AcmeProblem:
    return AcmeProblem("malformed", message)


@dataclass(frozen=True)
class ExternalAccountBinding:
    """A received ``externalAccountBinding`` (RFC 8555 §7.3.4), parsed but not yet verified:
    ``kid`` and ``url`` of its protected header, the JWK of its payload, and what the MAC covers.
    :meth:`from_json` raises :class:`AcmeProblem` ``malformed`` naming what is wrong."""

    kid: str
    url: str
    jwk: Mapping[str, Any]
    signing_input: bytes
    signature: bytes

    @classmethod
    def from_json(cls, doc: Any) -> "ExternalAccountBinding":
        where = "externalAccountBinding"
        jws = parse_flattened(doc, what=where, error=_malformed_eab)
        protected = jws.header
        jwk, _ = load_json_object(jws.payload, what=where, part="payload", error=_malformed_eab)
        if protected.get("alg") != EAB_ALG:
            raise _malformed(f"{where}.protected.alg", f"must be {EAB_ALG} (a MAC algorithm, RFC 8555 §7.3.4)")
        if "nonce" in protected:
            raise _malformed(f"{where}.protected", "must not carry a nonce (RFC 8555 §7.3.4)")
        kid, url = protected.get("kid"), protected.get("url")
        if not isinstance(kid, str) or not kid:
            raise _malformed(f"{where}.protected.kid", "is missing")
        if not isinstance(url, str):
            raise _malformed(f"{where}.protected.url", "is missing")
        return cls(kid=kid, url=url, jwk=jwk, signing_input=jws.signing_input, signature=jws.signature)

    def mac_ok(self, hmac_key: bytes) -> bool:
        """Whether the HS256 MAC verifies with ``hmac_key`` (RFC 7518 §3.2, constant-time comparison)."""
        return hs256_verify(hmac_key, self.signing_input, self.signature)


__all__ = [
    "CERTIFICATE_LOCATION_HEADER", "ERR", "JOSE_JSON", "PEM_CHAIN", "PROBLEM_JSON", "PUBLISH_ERROR_HEADER", "TKAUTH01", "TNAUTHLIST",
    "EAB_ALG", "ExternalAccountBinding", "eab_hmac_key", "make_eab",
    "Account", "AccountUpdate", "AcmeProblem", "Authorization", "Challenge", "Directory", "DirectoryMeta",
    "Finalize", "Identifier", "NewAccount", "NewOrder", "Order", "OrderList", "Revocation", "TkauthAnswer",
    "rfc3339",
]
