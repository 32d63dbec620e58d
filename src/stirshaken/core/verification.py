"""The verification decision of an STI-VS (RFC 8224 §6.2, ATIS-1000074 §5.3.1, ATIS-1000082).

Sans-I/O: nothing here fetches, sleeps or logs.  Verifying one Identity header is two steps so
that the caller owns the I/O between them (the h11 pattern):

1. :func:`prepare` parses the header and its PASSporT and checks everything that does not need the
   credential: syntax (E4-E7), JOSE header (E9-E13), claims (E14), freshness of iat and Date
   (E3/E15), orig/dest against the SIP request (E16).  It returns a :class:`Prepared` naming the
   x5u to dereference.
2. The caller obtains a :class:`~stirshaken.core.certificates.ValidatedCredential` for that x5u (from a
   file, a cache or a fetch plus :meth:`TrustStore.validate`), or the error that prevented it,
   and calls :func:`complete`, which checks authority and the signature (E17, E18).

:func:`decide` folds the results of every Identity header of a request into one
:class:`VerificationResult` (verstat, SIP code and reason, the RFC 9410 Reason header value).

Several Identity headers (RFC 8224 §4, RFC 8946 §4): every header is evaluated.  With
``targets`` (the request's called TNs: To and Request-URI), :func:`decide` resolves the
destination binding of the whole set (see :func:`bind_destinations`):

* a SHAKEN PASSporT passes when its ``dest`` names a request target directly, or when a chain of
  valid ``div`` PASSporTs leads from one of its ``dest`` values to a request target;
* a ``div`` PASSporT (RFC 8946 §3/§4) must carry the same ``orig`` as the SHAKEN one, its ``div``
  claim must be a ``dest`` of the SHAKEN PASSporT (or of an earlier ``div`` in the chain), and the
  last ``div`` of a chain must have a ``dest`` that is a request target.  Rationale: on
  retargeting, the retargeting entity signs "the call for <div> now goes to <dest>"; the
  original SHAKEN PASSporT still names the original called number, so its ``dest`` can only be
  matched through the ``div`` claim, while the request (R-URI, and To when it was changed)
  carries the new target, which the ``div`` PASSporT's ``dest`` must match.  Because To usually
  stays unchanged on retargeting (RFC 3261 §8.1.1.2) while the R-URI changes, both are targets;
* an ``rcd`` PASSporT (RFC 9795) must match the request's ``orig`` and a request target or the
  destination of the SHAKEN PASSporT it accompanies.

The per-header outcome is in :attr:`VerificationResult.passports`; failing headers also produce
RFC 9410 Reason values with ``ppi`` naming the PASSporT.
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from stirshaken.core.certificates import ValidatedCredential
from stirshaken.core.errors import (
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
from stirshaken.core.identity import IdentityHeader, parse_identity
from stirshaken.core.memo import BoundedCache
from stirshaken.core.passport import (
    SUPPORTED_PPT,
    PASSporT,
    check_claims,
    check_header,
    parse_jws,
)
from stirshaken.core.tn import TNError, canonicalize_tn


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
_OK_SYNTAX = Check("identity-syntax", True)
_OK_X5U = Check("x5u-equals-info", True)
_OK_CLAIMS = Check("claims", True)
_OK_DATE = Check("date-fresh", True)
_OK_IAT = Check("iat-fresh", True)
_OK_DEST = Check("dest-matches", True)
_OK_SIG = Check("signature", True)
_OK_DIV = Check("div-chain", True)
_OK_DEST_DIV = Check("dest-matches", True, "through the div PASSporT chain (RFC 8946)")


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
    """The canonical TN (RFC 8224 §8.3), or None for no value or one that is not a TN."""
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


def _new(cls: type, fields: dict[str, Any]) -> Any:
    """Build a frozen dataclass instance without its field-by-field ``object.__setattr__``
    (hot path only; ``fields`` must name every field)."""
    obj = object.__new__(cls)
    object.__setattr__(obj, "__dict__", fields)
    return obj


# Shared passing checks of the supported extensions (constants; other accepted ppt values build theirs).
_PPT_CHECK: Mapping[str, Check] = types.MappingProxyType({ppt: Check("passport-header", True, "ppt=" + ppt) for ppt in SUPPORTED_PPT})


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


_tuple_new = tuple.__new__  # Check(...) without the Python-level NamedTuple __new__ (hot path)


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
    cache: VerificationCache | None = None,
) -> Prepared:
    """Everything before the credential is needed; raises the typed error of the first defect.

    ``orig`` holds the calling identities the PASSporT may name (From and P-Asserted-Identity),
    ``dest`` the called ones (To and Request-URI user part); ``None`` entries are ignored and an
    empty/None argument skips the comparison (for offline checks of a token alone, or when the
    caller binds destinations for the whole request with ``decide(..., targets=...)``).
    ``expected_ppt`` is the extension to require (``None``: any in ``policy.accepted_ppt``).
    ``cache`` (a :class:`VerificationCache` the caller owns) saves parsing work; it changes no result.
    """
    if isinstance(identity, IdentityHeader):
        header = identity
    elif cache is None:
        header = parse_identity(identity)
    else:
        # Fast path: with the parameter tail cached, the token's digest rule is left to the strict
        # decoding of parse_jws below, which implies it.  Should anything fail before that
        # decoding succeeded, the general branch (this function without the cache) runs from the
        # start and decides, so the result and the error are exactly those without the cache (a
        # header name or folding before the token, a token that is no digest).
        header = parse_identity(identity, tail_cache=cache.tails, token_checked_later=True)
    try:
        info, param_alg, param_ppt = header.info_alg_ppt()
        if header.token.startswith(".."):  # header.is_compact
            raise CompactFormError("Identity header in compact form instead of required by SHAKEN spec full form")
        if expected_ppt is not None and param_ppt is not None and param_ppt != expected_ppt:
            raise UnsupportedPPTError(f"Identity header is received with 'ppt' parameter value that is not '{expected_ppt}'")
        if param_alg is not None and param_alg != "ES256":
            raise UnsupportedCredentialError("Identity header 'alg' parameter is not 'ES256'")
        p = parse_jws(header.token, header_cache=cache.headers if cache is not None else None)
    except StirShakenError:
        if cache is None or isinstance(identity, IdentityHeader):
            raise
        return prepare(identity, orig=orig, dest=dest, now=now, date=date, policy=policy, expected_ppt=expected_ppt)
    checks: list[Check] = [_OK_SYNTAX]
    check_header(p, ppt=expected_ppt if expected_ppt is not None else policy.accepted_ppt)
    jose = p.header  # check_header passed: "ppt" (a ppt is required here) and "x5u" are present
    ppt = jose["ppt"]
    if param_ppt is not None and ppt != param_ppt:
        raise UnsupportedPPTError("'ppt' parameter of the Identity header differs from the PASSporT's")
    pc = _PPT_CHECK.get(ppt)
    checks.append(pc if pc is not None else Check("passport-header", True, "ppt=" + str(ppt)))
    if jose["x5u"] != info:
        raise X5UMismatchError("'x5u' from PASSporT header doesn't match the 'info' parameter of identity header value")
    checks.append(_OK_X5U)
    c = p.claims
    check_claims(p)
    p.claims_checked()  # p.problems is computed when read, not here (off the hot path)
    checks.append(_OK_CLAIMS)
    if date is not None:
        check_freshness(int(date), now, policy, what="Date")
        checks.append(_OK_DATE)
    elif policy.require_date:
        raise StaleDateError("the request has no Date header and policy requires one")
    check_freshness(c["iat"], now, policy)
    checks.append(_OK_IAT)
    origs = [orig] if isinstance(orig, str) else [o for o in (orig or []) if o]
    if origs:
        o_claim = c["orig"].get("tn")
        got = _canon(o_claim) if isinstance(o_claim, str) and o_claim else None
        # usual case first: the request's TN is already canonical and equal (then got is in want)
        want = origs if got is not None and got in origs else {_canon(o) for o in origs} - {None}
        if got is None or got not in want:
            raise IdentityMismatchError(
                f"'orig' claim from PASSporT payload ({p.orig_tn}) doesn't match the request's calling number"
                f" ({', '.join(sorted(w for w in want if w)) or 'no TN'})"
            )
        checks.append(_tuple_new(Check, ("orig-matches", True, got)))
    dests = [dest] if isinstance(dest, str) else [d for d in (dest or []) if d]
    if dests:
        if not _same_tn(dests, p.dest_tns):
            raise IdentityMismatchError(
                f"'dest' claim from PASSporT payload ({', '.join(p.dest_tns)}) doesn't match the request's called number"
                f" ({', '.join(sorted(_tns(dests))) or 'no TN'})"
            )
        checks.append(_OK_DEST)
    return _new(Prepared, {"header": header, "passport": p, "x5u": info or "", "checks": tuple(checks),
                           "raw": identity if isinstance(identity, str) else ""})


# --- step 2 -----------------------------------------------------------------------------------


def check_authority(passport: PASSporT, credential: ValidatedCredential, policy: VerificationPolicy) -> Check:
    """Step V6: the orig TN lies in the certificate's TN/range entries or in the SPC's TN blocks.

    A delegate certificate (RFC 9060: TN/range entries, no SPC; ATIS-1000092) is checked on every
    call, whatever ``policy.check_authority``: an orig TN it does not cover is 438 Invalid
    Identity Header, TN-Validation-Failed (the signer is not authorized for the identity,
    RFC 8224 §6.2).  For a ``div`` PASSporT the identity is its ``div`` claim: the retargeting
    entity signs within the scope of its own credential (RFC 8946 §3), not for the caller."""
    div = passport.header.get("ppt") == "div"
    tn = _canon(passport.div_tn if div else passport.orig_tn) or ""
    what = "diverted-from number" if div else "calling number"
    if credential.delegate:
        if credential.tnauthlist.covers(tn):
            return Check("authority", True, "orig TN in the delegate certificate's TNAuthList (RFC 9060)")
        raise InvalidIdentityError(
            f"the delegate certificate does not cover {what} {tn} (RFC 9060 TNAuthList)", verstat=VERSTAT_FAILED
        )
    if credential.tnauthlist.covers(tn):
        return Check("authority", True, "orig TN in certificate TNAuthList")
    for spc in credential.tnauthlist.spcs:
        if any(tn.startswith(prefix) for prefix in policy.authority_blocks.get(spc, ())):
            return Check("authority", True, f"orig TN in the TN blocks of SPC {spc}")
    raise UnsupportedCredentialError(
        f"the certificate (SPC {credential.spc}) is not authorized for {what} {tn}", verstat=VERSTAT_FAILED
    )


def complete(
    prepared: Prepared,
    credential: ValidatedCredential | StirShakenError,
    policy: VerificationPolicy = DEFAULT_POLICY,
    *,
    cache: VerificationCache | None = None,
) -> PassportResult:
    """Finish one header with its credential (or the error that prevented getting one): the
    certificate (and its warnings), step V6 authority when the policy asks, then the signature
    (RFC 8224 §6.2 step 6, ATIS-1000082 E17/E18).  ``cache`` as for :func:`prepare`."""
    p = prepared.passport
    raw = prepared.raw or str(prepared.header)
    if type(credential) is ValidatedCredential and not credential.warnings and not policy.check_authority and not credential.delegate:
        # the usual case, as the general path below but without building a list of checks
        try:
            p.verify(credential.public_key)
        except StirShakenError as err:
            return PassportResult(raw=raw, ppt=p.ppt, ok=False, checks=prepared.checks + (_cert_check(credential, cache), Check(_check_name(err), False, err.description)),
                                  passport=p, error=err)
        return _new(PassportResult, {"raw": raw, "ppt": p.header.get("ppt"), "ok": True, "checks": prepared.checks + (_cert_check(credential, cache), _OK_SIG),
                                     "passport": p, "credential": credential, "error": None})
    checks = list(prepared.checks)
    try:
        if isinstance(credential, StirShakenError):
            raise credential
        checks.append(_cert_check(credential, cache))
        if credential.warnings:  # e.g. a CRL past its nextUpdate still in use (stirshaken.vs.trust)
            checks.extend(Check("warning", True, w) for w in credential.warnings)
        if policy.check_authority or credential.delegate:
            checks.append(check_authority(p, credential, policy))
        p.verify(credential.public_key)
        checks.append(_OK_SIG)
    except StirShakenError as err:
        checks.append(Check(_check_name(err), False, err.description))
        return PassportResult(raw=raw, ppt=p.ppt, ok=False, checks=tuple(checks), passport=p, error=err)
    return _new(PassportResult, {"raw": raw, "ppt": p.header.get("ppt"), "ok": True, "checks": tuple(checks), "passport": p,
                                 "credential": credential, "error": None})


def _cert_check(credential: ValidatedCredential, cache: VerificationCache | None) -> Check:
    """The passing ``certificate`` check naming the credential's SPC (kept in ``cache``)."""
    if cache is not None:
        hit = cache.certificate_checks.get(id(credential))
        if hit is not None and hit[0] is credential:
            return hit[1]
    check = _tuple_new(Check, ("certificate", True, f"SPC {credential.spc}"))
    if cache is not None:
        cache.certificate_checks.put(id(credential), (credential, check))
    return check


_WORD_BREAK = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _check_name(err: StirShakenError) -> str:
    """The failed check's name from the error class: ``PassportJSONError`` -> ``passport-json``,
    ``TNAuthListError`` -> ``tn-auth-list`` (acronyms stay one word)."""
    return _WORD_BREAK.sub("-", type(err).__name__.removesuffix("Error")).lower()


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
        return _failed_header(identity, err)


def _failed_header(identity: str | IdentityHeader, err: StirShakenError) -> PassportResult:
    passport = None
    if isinstance(identity, IdentityHeader):
        try:
            passport = parse_jws(identity.token)
        except StirShakenError:
            passport = None
    return failed(str(identity), err, passport=passport)


# --- the call-level decision ------------------------------------------------------------------


def _replace(r: PassportResult, *, ok: bool, check: Check, error: StirShakenError | None = None) -> PassportResult:
    return PassportResult(
        raw=r.raw, ppt=r.ppt, ok=ok, checks=r.checks + (check,), passport=r.passport,
        credential=r.credential if ok else None, error=error if not ok else None,
    )


def _tns(values: Iterable[str]) -> set[str]:
    return {t for t in (_canon(v) for v in values) if t}


def _same_tn(requested: Sequence[str], claimed: Sequence[str]) -> bool:
    """True when a requested TN and a claimed TN are one number after canonicalization (RFC 8224
    §8.3).  The usual case first: a request TN already canonical (ASCII digits) and named as such."""
    for t in requested:
        if t in claimed and t.isdigit() and t.isascii():
            return True
    return bool(_tns(requested) & _tns(claimed))


def chain_div(shaken: PassportResult, divs: Sequence[PassportResult]) -> list[PassportResult]:
    """RFC 8946 §4: each ``div`` PASSporT must continue the chain: its ``div`` claim names a
    destination of the SHAKEN (or an earlier div) PASSporT and its ``orig`` is the same.

    Chaining only, without request targets: this is :func:`bind_destinations` with none.  A
    ``shaken`` result that did not decode leaves ``divs`` as they are; one that failed leaves
    nothing to chain to, so every valid ``div`` fails."""
    if shaken.passport is None:
        return list(divs)
    return bind_destinations([shaken, *divs], ())[1:]


def _div_chain(shaken: PASSporT, divs: Sequence[PassportResult]) -> list[PassportResult]:
    """The valid ``div`` results reachable from ``shaken`` (same orig, div claim in known dests)."""
    known = _tns(shaken.dest_tns)
    orig = _canon(shaken.orig_tn)
    chained: list[PassportResult] = []
    grew = True
    while grew:
        grew = False
        for d in divs:
            if any(d is c for c in chained) or not d.ok or d.passport is None:
                continue
            p = d.passport
            if _canon(p.orig_tn) == orig and _canon(p.div_tn) in known:
                chained.append(d)
                known |= _tns(p.dest_tns)
                grew = True
    return chained


def bind_destinations(results: Sequence[PassportResult], targets: Iterable[str]) -> list[PassportResult]:
    """Bind the request's called identities (To, R-URI) to the set of PASSporTs (module docstring).

    ``targets`` are canonical (or canonicalizable) TNs; when empty, only ``div`` chaining is
    checked.  Returns the results in the same order with ``dest``/``div-chain`` checks added and
    failures (438, ATIS-1000082 E16) where the binding does not hold.
    """
    targets = [t for t in targets if t]
    check = bool(targets)  # targets given but none a TN: nothing can match
    want = _tns(targets)
    results = list(results)
    divs = [r for r in results if r.ppt == "div"]
    shaken_ok = [r for r in results if r.ppt == "shaken" and r.ok and r.passport is not None]
    # choose the SHAKEN PASSporT whose chain reaches the request (normally there is one)
    chosen: PassportResult | None = None
    chain: list[PassportResult] = []
    for s in shaken_ok:
        c = _div_chain(s.passport, divs)  # type: ignore[arg-type]
        reach = _tns(s.passport.dest_tns) | {t for d in c for t in _tns(d.passport.dest_tns)}  # type: ignore[union-attr]
        if chosen is None or not check or (want & reach):
            chosen, chain = s, c
            if not check or want & reach:
                break
    out: list[PassportResult] = []
    for r in results:
        p = r.passport
        if not r.ok or p is None:
            out.append(r)
            continue
        if r.ppt == "shaken":
            if not check:
                out.append(r)
                continue
            direct = _tns(p.dest_tns) & want
            via = r is chosen and any(_tns(d.passport.dest_tns) & want for d in chain)  # type: ignore[union-attr]
            if direct:
                out.append(_replace(r, ok=True, check=_OK_DEST))
            elif via:
                out.append(_replace(r, ok=True, check=_OK_DEST_DIV))
            else:
                err = IdentityMismatchError(
                    f"'dest' claim from PASSporT payload ({', '.join(p.dest_tns)}) doesn't match the request's called"
                    f" number ({', '.join(sorted(want)) or 'no TN'}), directly or through a 'div' PASSporT"
                )
                out.append(_replace(r, ok=False, check=Check("dest-matches", False, err.description), error=err))
        elif r.ppt == "div":
            if chosen is None:
                err = InvalidIdentityError("'div' PASSporT without a valid SHAKEN PASSporT to chain to (RFC 8946 §4)")
                out.append(_replace(r, ok=False, check=Check("div-chain", False, err.description), error=err))
            elif not any(r is d for d in chain):
                err = InvalidIdentityError(
                    "'div' PASSporT does not chain to the call's SHAKEN PASSporT: its 'div' claim is not a 'dest' of"
                    " it (or of an earlier div) or its 'orig' differs (RFC 8946 §4)"
                )
                out.append(_replace(r, ok=False, check=Check("div-chain", False, err.description), error=err))
            else:
                dests = _tns(p.dest_tns)
                continued = any(_canon(d.passport.div_tn) in dests for d in chain if d is not r)  # type: ignore[union-attr]
                if check and not (dests & want) and not continued:
                    err = IdentityMismatchError(
                        f"'dest' claim of the 'div' PASSporT ({', '.join(p.dest_tns)}) doesn't match the request's"
                        f" called number ({', '.join(sorted(want)) or 'no TN'})"
                    )
                    out.append(_replace(r, ok=False, check=Check("dest-matches", False, err.description), error=err))
                else:
                    out.append(_replace(r, ok=True, check=_OK_DIV))
        else:  # rcd and other supported extensions: request target or the SHAKEN destination
            allowed = set(want)
            if chosen is not None and chosen.passport is not None:
                allowed |= _tns(chosen.passport.dest_tns)
            if check and not (_tns(p.dest_tns) & allowed):
                err = IdentityMismatchError(
                    f"'dest' claim of the '{r.ppt}' PASSporT ({', '.join(p.dest_tns)}) doesn't match the request's called number"
                )
                out.append(_replace(r, ok=False, check=Check("dest-matches", False, err.description), error=err))
            else:
                out.append(r)
    return out


def decide(
    results: Sequence[PassportResult],
    policy: VerificationPolicy = DEFAULT_POLICY,
    *,
    targets: Iterable[str] | None = None,
) -> VerificationResult:
    """Fold the per-header results of one request into the call's verdict.

    No Identity header: 428 (RFC 8224 §6.2.2).  With ``targets`` the destinations are bound first
    (:func:`bind_destinations`).  A valid SHAKEN PASSporT makes the call ``TN-Validation-Passed``
    with its attestation; without ``targets``, ``div`` PASSporTs are only checked to chain to it.
    Otherwise the first SHAKEN failure (or, without any SHAKEN header, the first failure) gives
    verstat, SIP code and reason.  Every failing header yields an RFC 9410 Reason value, with
    ``ppi`` naming the PASSporT (compact form) when there are several headers (RFC 9410 §4).
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
    if targets is not None and not isinstance(targets, list):
        targets = list(targets)  # read once: both the shortcut and bind_destinations use it
    if len(results) == 1:
        only = results[0]
        p0 = only.passport
        if only.ok and only.ppt == "shaken" and p0 is not None:
            # hot path: one valid SHAKEN PASSporT (the general path below gives the same result),
            # its destination bound directly when targets are given
            hit = True
            if targets is not None:
                hit = not targets or _same_tn(targets, p0.dest_tns)
                if hit and targets:
                    checks = only.checks + (_OK_DEST,)
                    only = _new(PassportResult, {**only.__dict__, "checks": checks})
            if hit:
                claims = p0.claims
                return _new(VerificationResult, {
                    "verstat": VERSTAT_PASSED, "attest": claims.get("attest"), "sip_code": None, "reason": None,
                    "description": None, "reason_header": None, "checks": only.checks, "passports": (only,),
                    "origid": claims.get("origid"),
                })
    if targets is not None:
        results = bind_destinations(results, targets)
    shaken = [r for r in results if r.ppt == "shaken" or (r.ppt is None and r.passport is None)]
    passed = next((r for r in shaken if r.ok), None)
    if targets is None:
        divs = [r for r in results if r.ppt == "div"]
        if divs and passed is not None:
            chained = iter(chain_div(passed, divs))
            results = [next(chained) if r.ppt == "div" else r for r in results]
    all_results = tuple(results)
    if len(all_results) == 1:
        checks = all_results[0].checks
    else:
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
    first = next((r for r in shaken if not r.ok), None) or next((r for r in all_results if not r.ok), None)
    if first is not None and first.error is not None:
        err = first.error
    else:
        err = InvalidIdentityError("no valid SHAKEN PASSporT in the request (ATIS-1000074 §5.3.1)")
        if first is None and all_results:
            first = all_results[0]
    verstat = err.verstat if err.verstat in (VERSTAT_FAILED, VERSTAT_NONE) else VERSTAT_NONE
    # No attestation on failure (ATIS-1000082 verificationResponse): the claims of a failed token
    # are not trustworthy.  origid only from a token whose signature verified (for correlation).
    p = first.passport if first is not None and _OK_SIG in first.checks else None
    if not reasons:
        reasons = [reason_header(err, protocol=policy.reason_protocol)]
    return VerificationResult(
        verstat=verstat,
        sip_code=err.sip_code,
        reason=err.reason,
        description=err.description,
        reason_header=", ".join(reasons),
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
    cache: VerificationCache | None = None,
) -> VerificationResult:
    """Verify one Identity header against an already-validated credential (or its error);
    ``cache`` as for :func:`prepare`."""
    try:
        prep = prepare(identity, orig=orig, dest=dest, now=now, date=date, policy=policy, cache=cache)
    except StirShakenError as err:
        return decide([_failed_header(identity, err)], policy)
    return decide([complete(prep, credential, policy, cache=cache)], policy)


__all__ = [
    "BadIdentityInfoError",
    "Check",
    "bind_destinations",
    "chain_div",
    "VerificationCache",
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
