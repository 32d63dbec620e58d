"""The call-level decision of an STI-VS: binding destinations and the verdict
(RFC 8224 §4/§6.2, RFC 8946 §3/§4, RFC 9795, RFC 9410, ATIS-1000074 §5.3.1, ATIS-1000082).

:func:`bind_destinations` resolves the destination binding of every Identity header of a request
(the rules are in the :mod:`stirshaken.core.verification` package docstring), :func:`chain_div`
the ``div`` chain alone; :func:`decide` folds the per-header results into one
:class:`~stirshaken.core.verification.results.VerificationResult` (verstat, SIP code and reason,
the RFC 9410 Reason header value of :func:`reason_header`).  :func:`verify_offline` runs the
three steps for one header and a credential at hand.  Pure: no I/O.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from stirshaken.core.certificates import ValidatedCredential
from stirshaken.core.errors import (
    VERSTAT_FAILED,
    VERSTAT_NONE,
    VERSTAT_PASSED,
    IdentityMismatchError,
    InvalidIdentityError,
    MissingIdentityError,
    StirShakenError,
)
from stirshaken.core.passport import PASSporT
from stirshaken.core.verification.completion import complete, failed_header
from stirshaken.core.verification.preparation import canon, prepare, same_tn, tn_set
from stirshaken.core.verification.results import (
    DEFAULT_POLICY,
    OK_DEST,
    OK_DEST_DIV,
    OK_DIV,
    OK_SIG,
    Check,
    PassportResult,
    VerificationCache,
    VerificationPolicy,
    VerificationResult,
    new_frozen,
)


def reason_header(err: StirShakenError, *, protocol: str = "STIR", ppi: str | None = None) -> str:
    """The RFC 9410 Reason header value: ``STIR ;cause=438 ;text="Invalid Identity Header"``."""
    text = err.reason.replace('"', "'")
    value = f'{protocol} ;cause={err.sip_code} ;text="{text}"'
    if ppi:
        value += f' ;ppi="{ppi}"'
    return value


def _replace(r: PassportResult, *, ok: bool, check: Check, error: StirShakenError | None = None) -> PassportResult:
    return PassportResult(
        raw=r.raw, ppt=r.ppt, ok=ok, checks=r.checks + (check,), passport=r.passport,
        credential=r.credential if ok else None, error=error if not ok else None,
    )


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
    known = tn_set(shaken.dest_tns)
    orig = canon(shaken.orig_tn)
    chained: list[PassportResult] = []
    grew = True
    while grew:
        grew = False
        for d in divs:
            if any(d is c for c in chained) or not d.ok or d.passport is None:
                continue
            p = d.passport
            if canon(p.orig_tn) == orig and canon(p.div_tn) in known:
                chained.append(d)
                known |= tn_set(p.dest_tns)
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
    want = tn_set(targets)
    results = list(results)
    divs = [r for r in results if r.ppt == "div"]
    shaken_ok = [r for r in results if r.ppt == "shaken" and r.ok and r.passport is not None]
    # choose the SHAKEN PASSporT whose chain reaches the request (normally there is one)
    chosen: PassportResult | None = None
    chain: list[PassportResult] = []
    for s in shaken_ok:
        c = _div_chain(s.passport, divs)  # type: ignore[arg-type]
        reach = tn_set(s.passport.dest_tns) | {t for d in c for t in tn_set(d.passport.dest_tns)}  # type: ignore[union-attr]
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
            direct = tn_set(p.dest_tns) & want
            via = r is chosen and any(tn_set(d.passport.dest_tns) & want for d in chain)  # type: ignore[union-attr]
            if direct:
                out.append(_replace(r, ok=True, check=OK_DEST))
            elif via:
                out.append(_replace(r, ok=True, check=OK_DEST_DIV))
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
                dests = tn_set(p.dest_tns)
                continued = any(canon(d.passport.div_tn) in dests for d in chain if d is not r)  # type: ignore[union-attr]
                if check and not (dests & want) and not continued:
                    err = IdentityMismatchError(
                        f"'dest' claim of the 'div' PASSporT ({', '.join(p.dest_tns)}) doesn't match the request's"
                        f" called number ({', '.join(sorted(want)) or 'no TN'})"
                    )
                    out.append(_replace(r, ok=False, check=Check("dest-matches", False, err.description), error=err))
                else:
                    out.append(_replace(r, ok=True, check=OK_DIV))
        else:  # rcd and other supported extensions: request target or the SHAKEN destination
            allowed = set(want)
            if chosen is not None and chosen.passport is not None:
                allowed |= tn_set(chosen.passport.dest_tns)
            if check and not (tn_set(p.dest_tns) & allowed):
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
                hit = not targets or same_tn(targets, p0.dest_tns)
                if hit and targets:
                    checks = only.checks + (OK_DEST,)
                    only = new_frozen(PassportResult, {**only.__dict__, "checks": checks})
            if hit:
                claims = p0.claims
                return new_frozen(VerificationResult, {
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
    p = first.passport if first is not None and OK_SIG in first.checks else None
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
        return decide([failed_header(identity, err)], policy)
    return decide([complete(prep, credential, policy, cache=cache)], policy)


__all__ = ["bind_destinations", "chain_div", "decide", "reason_header", "verify_offline"]
