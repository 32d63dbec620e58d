"""The types of the verification decision (RFC 8224 §6.2, ATIS-1000074 §5.3.1, ATIS-1000082).

:class:`VerificationPolicy` (the verifier's local policy), :class:`Check` (one check made),
:class:`Prepared` (a header that passed step 1), :class:`PassportResult` (one header's outcome),
:class:`VerificationResult` (the call's verdict, ATIS-1000082 verificationResponse) and
:class:`VerificationCache` (the parsing caches a verifier owns).  Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

from stirshaken.core.certificates import ValidatedCredential
from stirshaken.core.errors import VERSTAT_PASSED, StirShakenError
from stirshaken.core.identity import IdentityHeader
from stirshaken.core.memo import BoundedCache
from stirshaken.core.passport import SUPPORTED_PPT, PASSporT


@dataclass(frozen=True)
class VerificationPolicy:
    """Local policy of the verifier; every relaxation is an explicit, named option.

    ``max_age``: freshness window in seconds for iat and Date (RFC 8224 §6.2 step 4: 60 s
    recommended).  ``future_skew``: how far iat/Date may lie in the future (clock skew).
    ``require_date``: reject calls without a Date (otherwise iat-only mode).
    ``check_authority``: step V6, orig TN must be covered by the certificate's TN entries or by
    ``authority_blocks`` (SPC -> TN prefixes).  ``reason_protocol``: ``STIR`` (RFC 9410) or ``SIP``.
    """

    max_age: int = 60
    future_skew: int = 10
    require_date: bool = False
    check_authority: bool = False
    authority_blocks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    reason_protocol: str = "STIR"
    accepted_ppt: frozenset[str] = SUPPORTED_PPT


DEFAULT_POLICY = VerificationPolicy()


class Check(NamedTuple):
    """One check made, its outcome and a short detail (an immutable tuple: cheap on the hot path)."""

    name: str
    ok: bool
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


# Shared instances of the passing checks without detail (the hot path builds none of them).
OK_SYNTAX = Check("identity-syntax", True)
OK_X5U = Check("x5u-equals-info", True)
OK_CLAIMS = Check("claims", True)
OK_DATE = Check("date-fresh", True)
OK_IAT = Check("iat-fresh", True)
OK_DEST = Check("dest-matches", True)
OK_SIG = Check("signature", True)
OK_DIV = Check("div-chain", True)
OK_DEST_DIV = Check("dest-matches", True, "through the div PASSporT chain (RFC 8946)")


@dataclass(frozen=True)
class Prepared:
    """An Identity header that passed every check not needing its credential."""

    header: IdentityHeader
    passport: PASSporT
    x5u: str
    checks: tuple[Check, ...]
    raw: str = ""  # the header value as received (saves re-serializing it)


@dataclass(frozen=True)
class PassportResult:
    """The outcome for one Identity header."""

    raw: str
    ppt: str | None
    ok: bool
    checks: tuple[Check, ...]
    passport: PASSporT | None = None
    credential: ValidatedCredential | None = None
    error: StirShakenError | None = None

    @property
    def compact(self) -> str | None:
        return self.passport.compact if self.passport is not None else None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ppt": self.ppt, "ok": self.ok, "checks": [c.to_json() for c in self.checks]}
        if self.passport is not None:
            out["claims"] = self.passport.claims
            out["header"] = dict(self.passport.header)  # a read-only mapping (passport.parse_jws)
        if self.credential is not None:
            out["spc"] = self.credential.spc
        if self.error is not None:
            out["error"] = {"code": self.error.sip_code, "reason": self.error.reason, "description": self.error.description}
        return out


@dataclass(frozen=True)
class VerificationResult:
    """What a VS reports for a call (ATIS-1000082 verificationResponse plus detail)."""

    verstat: str
    attest: str | None = None
    sip_code: int | None = None
    reason: str | None = None
    description: str | None = None
    reason_header: str | None = None
    checks: tuple[Check, ...] = ()
    passports: tuple[PassportResult, ...] = ()
    origid: str | None = None

    @property
    def ok(self) -> bool:
        return self.verstat == VERSTAT_PASSED

    @property
    def warnings(self) -> tuple[str, ...]:
        """The details of the ``warning`` checks of every PASSporT, each once: what the result
        relied on that is not as it should be (a CRL not available or past its nextUpdate, a
        revocation status unknown, the CA list past its ``exp``; docs/requirements.md VS-10)."""
        out: dict[str, None] = {}
        for p in self.passports:
            for c in p.checks:
                if c.name == "warning":
                    out[c.detail] = None
        return tuple(out)

    @property
    def rich_call_data(self) -> tuple[dict[str, Any], ...]:
        """The rich call data of the call (RFC 9795), one entry per PASSporT carrying an ``rcd``
        claim: ``{"ppt", "ok", "rcd", "crn"?, "detail"}``; ``ok`` says whether it may be shown
        (its PASSporT verified and its ``rcdi`` digests matched; docs/requirements.md RC-02)."""
        out = []
        for p in self.passports:
            pp = p.passport
            if pp is None or "rcd" not in pp.claims:
                continue
            check = next((c for c in p.checks if c.name == "rcd-integrity"), None)
            ok = p.ok and check is not None and check.ok
            detail = check.detail if check is not None else (p.error.description if p.error is not None else "not checked")
            entry: dict[str, Any] = {"ppt": p.ppt, "ok": ok, "rcd": pp.claims["rcd"], "detail": detail}
            if "crn" in pp.claims:
                entry["crn"] = pp.claims["crn"]
            out.append(entry)
        return tuple(out)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"verstat": self.verstat}
        if self.attest:
            out["attest"] = self.attest
        if self.sip_code is not None:
            out.update(reasoncode=self.sip_code, reasontext=self.reason, reasondesc=self.description)
        if self.reason_header:
            out["reason_header"] = self.reason_header
        rcd = self.rich_call_data
        if rcd:
            out["rcd"] = list(rcd)
        out["checks"] = [c.to_json() for c in self.checks]
        out["passports"] = [p.to_json() for p in self.passports]
        return out


def new_frozen(cls: type, fields: dict[str, Any]) -> Any:
    """Build a frozen dataclass instance without its field-by-field ``object.__setattr__``
    (hot path only; ``fields`` must name every field)."""
    obj = object.__new__(cls)
    object.__setattr__(obj, "__dict__", fields)
    return obj


class VerificationCache:
    """The caches of one verifier, owned by it and passed to :func:`prepare` and :func:`complete`
    (``cache=``); without one, everything is computed the general way.

    Identity headers from one signer share their parameter tail (``;info=<x5u>;alg=ES256;
    ppt=shaken``) and their PASSporT header segment: ``tails`` holds parsed tails for
    :func:`~stirshaken.core.identity.parse_identity`, ``headers`` decoded JOSE headers for
    :func:`~stirshaken.core.passport.parse_jws`, and ``certificate_checks`` the passing
    ``certificate`` check of a credential object; each an :class:`~stirshaken.core.memo.BoundedCache` of at
    most ``max_size`` entries.  They hold only what passed, and a hit gives what the general path
    computes: results, error types, reasons and checks are the same with or without the cache.
    """

    __slots__ = ("tails", "headers", "certificate_checks")

    def __init__(self, max_size: int = 4096) -> None:
        self.tails: BoundedCache[str, Any] = BoundedCache(max_size)
        self.headers: BoundedCache[str, Any] = BoundedCache(max_size)
        # id(credential) -> (credential, check): the credential is kept so that its id stays its own
        self.certificate_checks: BoundedCache[int, tuple[ValidatedCredential, Check]] = BoundedCache(max_size)

    def clear(self) -> None:
        self.tails.clear()
        self.headers.clear()
        self.certificate_checks.clear()


tuple_new = tuple.__new__  # Check(...) without the Python-level NamedTuple __new__ (hot path)


__all__ = [
    "DEFAULT_POLICY", "OK_CLAIMS", "OK_DATE", "OK_DEST", "OK_DEST_DIV", "OK_DIV", "OK_IAT", "OK_SIG", "OK_SYNTAX", "OK_X5U",
    "Check", "PassportResult", "Prepared", "VerificationCache", "VerificationPolicy", "VerificationResult", "new_frozen",
    "tuple_new",
]
