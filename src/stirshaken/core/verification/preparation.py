"""Step 1 of verifying an Identity header: everything that does not need the credential
(RFC 8224 §6.2 steps 1-5, ATIS-1000074 §5.3.1, ATIS-1000082 E3-E16).

:func:`prepare` checks syntax (E4-E7), the JOSE header (E9-E13), the claims (E14), freshness of
``iat`` and Date (E3/E15, :func:`check_freshness`) and ``orig``/``dest`` against the SIP request
(E16), and returns a :class:`~stirshaken.core.verification.results.Prepared` naming the x5u to
dereference.  The TN comparisons (RFC 8224 §8.3 canonical form) shared with the later steps are
:func:`canon`, :func:`tn_set` and :func:`same_tn`.  Pure: no I/O.
"""

from __future__ import annotations

import types
from typing import Iterable, Mapping, Sequence

from stirshaken.core.errors import (
    CompactFormError,
    IdentityMismatchError,
    StaleDateError,
    StirShakenError,
    UnsupportedCredentialError,
    UnsupportedPPTError,
    X5UMismatchError,
)
from stirshaken.core.identity import IdentityHeader, parse_identity
from stirshaken.core.passport import SUPPORTED_PPT, check_claims, check_header, parse_jws
from stirshaken.core.tn import MAX_TN_LENGTH, TNError, canonicalize_tn
from stirshaken.core.verification.results import (
    DEFAULT_POLICY,
    OK_CLAIMS,
    OK_DATE,
    OK_DEST,
    OK_IAT,
    OK_SYNTAX,
    OK_X5U,
    Check,
    Prepared,
    VerificationCache,
    VerificationPolicy,
    new_frozen,
    tuple_new,
)


def canon(value: str | None) -> str | None:
    """The canonical TN (RFC 8224 §8.3), or None for no value or one that is not a TN."""
    if value is None:
        return None
    try:
        return canonicalize_tn(value)
    except TNError:
        return None


def tn_set(values: Iterable[str]) -> set[str]:
    return {t for t in (canon(v) for v in values) if t}


def same_tn(requested: Sequence[str], claimed: Sequence[str]) -> bool:
    """True when a requested TN and a claimed TN are one number after canonicalization (RFC 8224
    §8.3; at most :data:`~stirshaken.core.tn.MAX_TN_LENGTH` digits, E.164 §6.1).  Arguments are
    sequences of strings; raises nothing.

    The usual case first: a request TN already canonical (ASCII digits, not too long) and named as
    such in the claim.  It decides only a match; anything else falls through to the general branch
    (``tn_set(requested) & tn_set(claimed)``), whose answer it equals (property-tested).
    """
    for t in requested:
        if t in claimed and t.isdigit() and t.isascii() and len(t) <= MAX_TN_LENGTH:
            return True
    return bool(tn_set(requested) & tn_set(claimed))


def check_freshness(iat: int, now: float, policy: VerificationPolicy = DEFAULT_POLICY, *, what: str = "iat") -> None:
    """RFC 8224 §6.2 step 4: ``iat`` (or Date) within ``max_age`` of now; raises StaleDateError."""
    age = now - iat
    if age > policy.max_age:
        raise StaleDateError(f"'{what}' from PASSporT payload is not fresh ({int(age)} s old, max {policy.max_age} s)"
                             if what == "iat" else f"Received '{what}' value is not fresh ({int(age)} s old)")
    if -age > policy.future_skew:
        raise StaleDateError(f"'{what}' lies {int(-age)} s in the future (allowed skew {policy.future_skew} s)")


# Shared passing checks of the supported extensions (constants; other accepted ppt values build theirs).
_PPT_CHECK: Mapping[str, Check] = types.MappingProxyType({ppt: Check("passport-header", True, "ppt=" + ppt) for ppt in SUPPORTED_PPT})


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
    checks: list[Check] = [OK_SYNTAX]
    check_header(p, ppt=expected_ppt if expected_ppt is not None else policy.accepted_ppt)
    jose = p.header  # check_header passed: "ppt" (a ppt is required here) and "x5u" are present
    ppt = jose["ppt"]
    if param_ppt is not None and ppt != param_ppt:
        raise UnsupportedPPTError("'ppt' parameter of the Identity header differs from the PASSporT's")
    pc = _PPT_CHECK.get(ppt)
    checks.append(pc if pc is not None else Check("passport-header", True, "ppt=" + str(ppt)))
    if jose["x5u"] != info:
        raise X5UMismatchError("'x5u' from PASSporT header doesn't match the 'info' parameter of identity header value")
    checks.append(OK_X5U)
    c = p.claims
    check_claims(p)
    p.claims_checked()  # p.problems is computed when read, not here (off the hot path)
    checks.append(OK_CLAIMS)
    if date is not None:
        check_freshness(int(date), now, policy, what="Date")
        checks.append(OK_DATE)
    elif policy.require_date:
        raise StaleDateError("the request has no Date header and policy requires one")
    check_freshness(c["iat"], now, policy)
    checks.append(OK_IAT)
    origs = [orig] if isinstance(orig, str) else [o for o in (orig or []) if o]
    if origs:
        o_claim = c["orig"].get("tn")
        got = canon(o_claim) if isinstance(o_claim, str) and o_claim else None
        # usual case first: the request's TN is already canonical and equal (then got is in want)
        want = origs if got is not None and got in origs else {canon(o) for o in origs} - {None}
        if got is None or got not in want:
            raise IdentityMismatchError(
                f"'orig' claim from PASSporT payload ({p.orig_tn}) doesn't match the request's calling number"
                f" ({', '.join(sorted(w for w in want if w)) or 'no TN'})"
            )
        checks.append(tuple_new(Check, ("orig-matches", True, got)))
    dests = [dest] if isinstance(dest, str) else [d for d in (dest or []) if d]
    if dests:
        # check_claims passed: 'dest' is an object whose 'tn', when present, is a list of strings
        if not same_tn(dests, c["dest"].get("tn", ())):
            raise IdentityMismatchError(
                f"'dest' claim from PASSporT payload ({', '.join(p.dest_tns)}) doesn't match the request's called number"
                f" ({', '.join(sorted(tn_set(dests))) or 'no TN'})"
            )
        checks.append(OK_DEST)
    return new_frozen(Prepared, {"header": header, "passport": p, "x5u": info or "", "checks": tuple(checks),
                           "raw": identity if isinstance(identity, str) else ""})


__all__ = ["canon", "check_freshness", "prepare", "same_tn", "tn_set"]
