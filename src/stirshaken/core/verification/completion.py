"""Step 2 of verifying an Identity header: the credential, authority and signature
(RFC 8224 §6.2 step 6, ATIS-1000074 §5.3.1 step V6, ATIS-1000082 E17/E18, RFC 9060).

The caller has obtained the :class:`~stirshaken.core.certificates.ValidatedCredential` of the
x5u named by :func:`~stirshaken.core.verification.preparation.prepare` (or the error that
prevented it); :func:`complete` checks the certificate's warnings, authority
(:func:`check_authority`) and the ES256 signature.  :func:`failed` builds the result of a header
that failed before.  Pure: no I/O.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from stirshaken.core.certificates import ValidatedCredential
from stirshaken.core.errors import VERSTAT_FAILED, InvalidIdentityError, StirShakenError, UnsupportedCredentialError
from stirshaken.core.identity import IdentityHeader
from stirshaken.core.passport import PASSporT, parse_jws
from stirshaken.core.verification.preparation import canon, prepare
from stirshaken.core.verification.results import (
    DEFAULT_POLICY,
    OK_SIG,
    Check,
    PassportResult,
    Prepared,
    VerificationCache,
    VerificationPolicy,
    new_frozen,
    tuple_new,
)


def check_authority(passport: PASSporT, credential: ValidatedCredential, policy: VerificationPolicy) -> Check:
    """Step V6: the orig TN lies in the certificate's TN/range entries or in the SPC's TN blocks.

    A delegate certificate (RFC 9060: TN/range entries, no SPC; ATIS-1000092) is checked on every
    call, whatever ``policy.check_authority``: an orig TN it does not cover is 438 Invalid
    Identity Header, TN-Validation-Failed (the signer is not authorized for the identity,
    RFC 8224 §6.2).  For a ``div`` PASSporT the identity is its ``div`` claim: the retargeting
    entity signs within the scope of its own credential (RFC 8946 §3), not for the caller."""
    div = passport.header.get("ppt") == "div"
    tn = canon(passport.div_tn if div else passport.orig_tn) or ""
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
        return new_frozen(PassportResult, {"raw": raw, "ppt": p.header.get("ppt"), "ok": True, "checks": prepared.checks + (_cert_check(credential, cache), OK_SIG),
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
        checks.append(OK_SIG)
    except StirShakenError as err:
        checks.append(Check(_check_name(err), False, err.description))
        return PassportResult(raw=raw, ppt=p.ppt, ok=False, checks=tuple(checks), passport=p, error=err)
    return new_frozen(PassportResult, {"raw": raw, "ppt": p.header.get("ppt"), "ok": True, "checks": tuple(checks), "passport": p,
                                 "credential": credential, "error": None})


def _cert_check(credential: ValidatedCredential, cache: VerificationCache | None) -> Check:
    """The passing ``certificate`` check naming the credential's SPC (kept in ``cache``)."""
    if cache is not None:
        hit = cache.certificate_checks.get(id(credential))
        if hit is not None and hit[0] is credential:
            return hit[1]
    check = tuple_new(Check, ("certificate", True, f"SPC {credential.spc}"))
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
        return failed_header(identity, err)


def failed_header(identity: str | IdentityHeader, err: StirShakenError) -> PassportResult:
    passport = None
    if isinstance(identity, IdentityHeader):
        try:
            passport = parse_jws(identity.token)
        except StirShakenError:
            passport = None
    return failed(str(identity), err, passport=passport)


__all__ = ["check_authority", "complete", "failed", "failed_header", "verify_prepared_or_error"]
