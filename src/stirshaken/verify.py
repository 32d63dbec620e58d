"""The verification decision of an STI-VS (RFC 8224 §6.2, ATIS-1000074 §5.3.1, ATIS-1000082).

Sans-I/O: nothing here fetches, sleeps or logs.  Verifying one Identity header is two steps so
that the caller owns the I/O between them (the h11 pattern):

1. :func:`prepare` parses the header and its PASSporT and checks everything that does not need the
   credential: syntax (E4-E7), JOSE header (E9-E13), claims (E14), freshness of iat and Date
   (E3/E15), orig/dest against the SIP request (E16).  It returns a :class:`Prepared` naming the
   x5u to dereference.
2. The caller obtains a :class:`~stirshaken.certificates.ValidatedCredential` for that x5u (from a
   file, a cache or a fetch plus :meth:`TrustStore.validate`), or the error that prevented it,
   and calls :func:`complete`, which checks authority and the signature (E17, E18).

:func:`decide` folds the results of every Identity header of a request into one
:class:`VerificationResult` (verstat, SIP code and reason, the RFC 9410 Reason header value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .certificates import ValidatedCredential
from .errors import (
    VERSTAT_FAILED,
    VERSTAT_NONE,
    VERSTAT_PASSED,
    BadIdentityInfoError,
    CompactFormError,
    IdentityMismatchError,
    InvalidIdentityError,
    MissingIdentityError,
    StaleDateError,
    StirShakenError,
    UnsupportedCredentialError,
    UnsupportedPPTError,
    X5UMismatchError,
)
from .identity import IdentityHeader, parse_identity
from .passport import SUPPORTED_PPT, PASSporT, check_claims, check_header, parse_jws, problems
from .tn import TNError, canonicalize_tn


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


@dataclass(frozen=True)
class Check:
    """One check made, its outcome and a short detail."""

    name: str
    ok: bool
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class Prepared:
    """An Identity header that passed every check not needing its credential."""

    header: IdentityHeader
    passport: PASSporT
    x5u: str
    checks: tuple[Check, ...]


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
            out["header"] = self.passport.header
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

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"verstat": self.verstat}
        if self.attest:
            out["attest"] = self.attest
        if self.sip_code is not None:
            out.update(reasoncode=self.sip_code, reasontext=self.reason, reasondesc=self.description)
        if self.reason_header:
            out["reason_header"] = self.reason_header
        out["checks"] = [c.to_json() for c in self.checks]
        out["passports"] = [p.to_json() for p in self.passports]
        return out


# --- helpers ----------------------------------------------------------------------------------


def _canon(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return canonicalize_tn(value)
    except TNError:
        return None


def check_freshness(iat: int, now: float, policy: VerificationPolicy = DEFAULT_POLICY, *, what: str = "iat") -> None:
    """RFC 8224 §6.2 step 4: ``iat`` (or Date) within ``max_age`` of now; raises StaleDateError."""
    age = now - iat
    if age > policy.max_age:
        raise StaleDateError(f"'{what}' from PASSporT payload is not fresh ({int(age)} s old, max {policy.max_age} s)"
                             if what == "iat" else f"Received '{what}' value is not fresh ({int(age)} s old)")
    if -age > policy.future_skew:
        raise StaleDateError(f"'{what}' lies {int(-age)} s in the future (allowed skew {policy.future_skew} s)")


def reason_header(err: StirShakenError, *, protocol: str = "STIR", ppi: str | None = None) -> str:
    """The RFC 9410 Reason header value: ``STIR ;cause=438 ;text="Invalid Identity Header"``."""
    text = err.reason.replace('"', "'")
    value = f'{protocol} ;cause={err.sip_code} ;text="{text}"'
    if ppi:
        value += f' ;ppi="{ppi}"'
    return value


# --- step 1 -----------------------------------------------------------------------------------


def prepare(
    identity: str | IdentityHeader,
    *,
    orig: str | Sequence[str | None] | None,
    dest: str | Sequence[str | None] | None,
    now: float,
    date: float | None = None,
    policy: VerificationPolicy = DEFAULT_POLICY,
    expected_ppt: str | None = "shaken",
) -> Prepared:
    """Everything before the credential is needed; raises the typed error of the first defect.

    ``orig`` holds the calling identities the PASSporT may name (From and P-Asserted-Identity),
    ``dest`` the called ones (To and Request-URI user part); ``None`` entries are ignored and an
    empty/None argument skips the comparison (for offline checks of a token alone).
    ``expected_ppt`` is the extension to require (``None``: any supported one).
    """
    checks: list[Check] = []
    header = identity if isinstance(identity, IdentityHeader) else parse_identity(identity)
    checks.append(Check("identity-syntax", True))
    if header.is_compact:
        raise CompactFormError("Identity header in compact form instead of required by SHAKEN spec full form")
    param_ppt = header.ppt
    if expected_ppt is not None and param_ppt is not None and param_ppt != expected_ppt:
        raise UnsupportedPPTError(f"Identity header is received with 'ppt' parameter value that is not '{expected_ppt}'")
    if header.alg is not None and header.alg != "ES256":
        raise UnsupportedCredentialError("Identity header 'alg' parameter is not 'ES256'")
    p = parse_jws(header.token)
    check_header(p, ppt=expected_ppt if expected_ppt is not None else policy.accepted_ppt)
    if param_ppt is not None and p.ppt != param_ppt:
        raise UnsupportedPPTError("'ppt' parameter of the Identity header differs from the PASSporT's")
    checks.append(Check("passport-header", True, f"ppt={p.ppt}"))
    if p.x5u != header.info:
        raise X5UMismatchError("'x5u' from PASSporT header doesn't match the 'info' parameter of identity header value")
    checks.append(Check("x5u-equals-info", True))
    check_claims(p)
    found = problems(p)
    if found:
        object.__setattr__(p, "problems", tuple(found))
    checks.append(Check("claims", True))
    if date is not None:
        check_freshness(int(date), now, policy, what="Date")
        checks.append(Check("date-fresh", True))
    elif policy.require_date:
        raise StaleDateError("the request has no Date header and policy requires one")
    check_freshness(p.iat, now, policy)  # type: ignore[arg-type]
    checks.append(Check("iat-fresh", True, f"age {int(now - p.iat)} s"))  # type: ignore[operator]
    origs = [orig] if isinstance(orig, str) else [o for o in (orig or []) if o]
    if origs:
        want = {_canon(o) for o in origs} - {None}
        got = _canon(p.orig_tn) if p.orig_tn else None
        if got is None or got not in want:
            raise IdentityMismatchError(
                f"'orig' claim from PASSporT payload ({p.orig_tn}) doesn't match the request's calling number"
                f" ({', '.join(sorted(w for w in want if w))})"
            )
        checks.append(Check("orig-matches", True, got))
    dests = [dest] if isinstance(dest, str) else [d for d in (dest or []) if d]
    if dests:
        want = {_canon(d) for d in dests} - {None}
        got_set = {_canon(t) for t in p.dest_tns} - {None}
        if not (want & got_set):
            raise IdentityMismatchError(
                f"'dest' claim from PASSporT payload ({', '.join(p.dest_tns)}) doesn't match the request's called number"
                f" ({', '.join(sorted(w for w in want if w))})"
            )
        checks.append(Check("dest-matches", True))
    return Prepared(header=header, passport=p, x5u=header.info or "", checks=tuple(checks))


# --- step 2 -----------------------------------------------------------------------------------


def check_authority(passport: PASSporT, credential: ValidatedCredential, policy: VerificationPolicy) -> Check:
    """Step V6: the orig TN lies in the certificate's TN/range entries or in the SPC's TN blocks."""
    tn = _canon(passport.orig_tn) or ""
    if credential.tnauthlist.covers(tn):
        return Check("authority", True, "orig TN in certificate TNAuthList")
    for spc in credential.tnauthlist.spcs:
        if any(tn.startswith(prefix) for prefix in policy.authority_blocks.get(spc, ())):
            return Check("authority", True, f"orig TN in the TN blocks of SPC {spc}")
    raise UnsupportedCredentialError(
        f"the certificate (SPC {credential.spc}) is not authorized for calling number {tn}", verstat=VERSTAT_FAILED
    )


def complete(prepared: Prepared, credential: ValidatedCredential | StirShakenError, policy: VerificationPolicy = DEFAULT_POLICY) -> PassportResult:
    """Finish one header with its credential (or the error that prevented getting one)."""
    checks = list(prepared.checks)
    p = prepared.passport
    try:
        if isinstance(credential, StirShakenError):
            raise credential
        checks.append(Check("certificate", True, f"SPC {credential.spc}"))
        if policy.check_authority:
            checks.append(check_authority(p, credential, policy))
        p.verify(credential.public_key)
        checks.append(Check("signature", True))
    except StirShakenError as err:
        checks.append(Check(_check_name(err), False, err.description))
        return PassportResult(raw=str(prepared.header), ppt=p.ppt, ok=False, checks=tuple(checks), passport=p, error=err)
    return PassportResult(raw=str(prepared.header), ppt=p.ppt, ok=True, checks=tuple(checks), passport=p, credential=credential)


def _check_name(err: StirShakenError) -> str:
    name = type(err).__name__.removesuffix("Error")
    return "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")


def failed(raw: str, err: StirShakenError, checks: Iterable[Check] = (), passport: PASSporT | None = None) -> PassportResult:
    """The result of a header that failed before its credential was needed."""
    checks = list(checks) + [Check(_check_name(err), False, err.description)]
    ppt = passport.ppt if passport is not None else None
    return PassportResult(raw=raw, ppt=ppt, ok=False, checks=tuple(checks), passport=passport, error=err)


def verify_prepared_or_error(
    identity: str | IdentityHeader, **kwargs: Any
) -> Prepared | PassportResult:
    """:func:`prepare`, turning its typed error into a failed :class:`PassportResult`."""
    try:
        return prepare(identity, **kwargs)
    except StirShakenError as err:
        passport = None
        if isinstance(identity, IdentityHeader):
            try:
                passport = parse_jws(identity.token)
            except StirShakenError:
                passport = None
        return failed(str(identity), err, passport=passport)


# --- the call-level decision ------------------------------------------------------------------


def chain_div(shaken: PassportResult, divs: Sequence[PassportResult]) -> list[PassportResult]:
    """RFC 8946 §4: each ``div`` PASSporT must continue the chain: its ``div`` claim names a
    destination of the SHAKEN (or an earlier div) PASSporT and its ``orig`` is the same."""
    out: list[PassportResult] = []
    if shaken.passport is None:
        return list(divs)
    known_dests = set(shaken.passport.dest_tns)
    orig = _canon(shaken.passport.orig_tn)
    for d in divs:
        if not d.ok or d.passport is None:
            out.append(d)
            continue
        p = d.passport
        if p.div_tn not in known_dests or _canon(p.orig_tn) != orig:
            err = InvalidIdentityError("'div' PASSporT does not chain to the call's SHAKEN PASSporT (RFC 8946 §4)")
            out.append(PassportResult(raw=d.raw, ppt=d.ppt, ok=False, checks=d.checks + (Check("div-chain", False, err.description),), passport=p, error=err))
            continue
        known_dests |= set(p.dest_tns)
        out.append(PassportResult(raw=d.raw, ppt=d.ppt, ok=True, checks=d.checks + (Check("div-chain", True),), passport=p, credential=d.credential))
    return out


def decide(results: Sequence[PassportResult], policy: VerificationPolicy = DEFAULT_POLICY) -> VerificationResult:
    """Fold the per-header results of one request into the call's verdict.

    No Identity header: 428.  A valid SHAKEN PASSporT makes the call ``TN-Validation-Passed`` with
    its attestation; ``div`` PASSporTs are checked to chain to it.  Otherwise the first SHAKEN
    failure (or the first failure at all) gives verstat, SIP code and reason.  Every failing header
    also yields an RFC 9410 Reason value (with ``ppi`` naming it when there are several).
    """
    if not results:
        err = MissingIdentityError("no Identity header in the request")
        return VerificationResult(
            verstat=VERSTAT_NONE,
            sip_code=err.sip_code,
            reason=err.reason,
            description=err.description,
            reason_header=reason_header(err, protocol=policy.reason_protocol),
            checks=(Check("identity-present", False, err.description),),
        )
    shaken = [r for r in results if r.ppt == "shaken" or (r.ppt is None and r.passport is None)]
    divs = [r for r in results if r.ppt == "div"]
    others = [r for r in results if r not in shaken and r not in divs]
    passed = next((r for r in shaken if r.ok), None)
    if passed is not None and divs:
        divs = chain_div(passed, divs)
    all_results = tuple(shaken + divs + others)
    checks = tuple(c for r in all_results for c in r.checks)
    several = len(all_results) > 1
    reasons = [
        reason_header(r.error, protocol=policy.reason_protocol, ppi=r.compact if several else None)
        for r in all_results
        if r.error is not None
    ]
    if passed is not None:
        p = passed.passport
        assert p is not None
        return VerificationResult(
            verstat=VERSTAT_PASSED,
            attest=p.attest,
            checks=checks,
            passports=all_results,
            origid=p.origid,
            reason_header=", ".join(reasons) or None,
        )
    first = next((r for r in shaken if r.error is not None), None) or next(r for r in all_results if r.error is not None or not r.ok)
    err = first.error or InvalidIdentityError("no valid SHAKEN PASSporT in the request")
    if not shaken:
        err = first.error or err
    verstat = err.verstat if err.verstat in (VERSTAT_FAILED, VERSTAT_NONE) else VERSTAT_NONE
    p = first.passport
    return VerificationResult(
        verstat=verstat,
        attest=p.attest if p is not None and isinstance(p.attest, str) else None,
        sip_code=err.sip_code,
        reason=err.reason,
        description=err.description,
        reason_header=", ".join(reasons) or reason_header(err, protocol=policy.reason_protocol),
        checks=checks,
        passports=all_results,
        origid=p.origid if p is not None and isinstance(p.origid, str) else None,
    )


def verify_offline(
    identity: str,
    credential: ValidatedCredential | StirShakenError,
    *,
    orig: str | Sequence[str | None] | None = None,
    dest: str | Sequence[str | None] | None = None,
    now: float,
    date: float | None = None,
    policy: VerificationPolicy = DEFAULT_POLICY,
) -> VerificationResult:
    """Verify one Identity header against an already-validated credential (or its error)."""
    prep = verify_prepared_or_error(identity, orig=orig, dest=dest, now=now, date=date, policy=policy)
    if isinstance(prep, PassportResult):
        return decide([prep], policy)
    return decide([complete(prep, credential, policy)], policy)


__all__ = [
    "BadIdentityInfoError",
    "Check",
    "PassportResult",
    "Prepared",
    "VerificationPolicy",
    "VerificationResult",
    "check_freshness",
    "complete",
    "decide",
    "prepare",
    "reason_header",
    "verify_offline",
]
