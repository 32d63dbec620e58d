"""``stirshaken inspect``: everything a verifier sees of one call, for troubleshooting.

The verdict comes from the STI-VS itself (:meth:`stirshaken.vs.verifier.Verifier.averify`, the
code ``verify`` and ``serve`` run), with a fresh verifier so that the x5u fetch is made and
recorded (:attr:`Verifier.trace`) and the chain it used is read back
(:meth:`Verifier.chain_for`).  This module only adds explanation around that verdict: the
decoded token, the time of ``iat``, a fix for each failed check, the route to the x5u host under
the SSRF rules (:func:`stirshaken.vs.x5u.check_url`, the same resolver guard as the fetcher), and
per certificate its validity, key, TNAuthList (RFC 8226), CRL status, presence on the STI-PA CA
list and its deviations from the ATIS-1000080 profile
(:func:`stirshaken.core.certificates.check_profile`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import time

from typing import Any, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from stirshaken.core import errors as E
from stirshaken.core.certificates import check_profile, crl_urls
from stirshaken.core.identity import parse_identity
from stirshaken.core.passport import PASSporT, parse_jws
from stirshaken.core.tnauthlist import SPC, TN, TNRange, from_certificate
from stirshaken.core.verification import PassportResult, VerificationResult, check_authority
from stirshaken.analysis.inputs import Call
from stirshaken.vs.verifier import Verifier, VerifierConfig, call_tn
from stirshaken.vs.x5u import BlockedAddressError, GuardedResolver, check_url

#: What would fix a failed check, by the error's class (most specific first).
FIXES: tuple[tuple[type[E.StirShakenError], str], ...] = (
    (E.ReplayError, "the same PASSporT was seen before within the freshness window: the call was replayed or "
                    "forked without re-signing; the signer must sign each call afresh"),
    (E.SignatureError, "the token was changed after signing, or signed with a key that is not the key of the "
                       "certificate at x5u: compare the signer's key with the published chain, and check that no "
                       "element on the path rewrites the Identity header"),
    (E.IdentityMismatchError, "the PASSporT's orig/dest do not match From/P-Asserted-Identity/To/Request-URI: "
                              "check number normalization (E.164 digits, no '+'), the PAI the signer used, and "
                              "whether the call was diverted without a 'div' PASSporT (RFC 8946)"),
    (E.StaleDateError, "iat or Date is outside the freshness window (max_age): check NTP on the signer and here; "
                       "for a capture or log, verify at the call's time (--at / the Date header)"),
    (E.FetchError, "the certificate at x5u could not be fetched: check the URL is https on port 443/8443 and "
                   "public (not a private address), that it answers 200 with a PEM chain without redirects, "
                   "and that the x5u host's TLS certificate is trusted (--x5u-ca-bundle)"),
    (E.X5UMismatchError, "the 'info' parameter of the Identity header must equal the PASSporT's x5u claim: "
                         "the signer builds the header from another URL than it signed"),
    (E.MissingHeaderParameterError, "the Identity header lacks a required parameter (info=<URL>, ppt): fix "
                                    "the signer's header formatting (RFC 8224 §4)"),
    (E.TNAuthListError, "the leaf certificate must carry a non-critical TNAuthList with an SPC "
                        "(ATIS-1000080 §6.4.1): the STI-CA issued a non-SHAKEN certificate"),
    (E.UntrustedCertificateError, "the chain does not lead to a trusted STI-CA root, or a certificate is "
                                  "expired or revoked: add the STI-CA root to the trust anchors or load the "
                                  "STI-PA CA list; make sure x5u serves leaf + intermediates"),
    (E.UnsupportedAlgorithmError, "SHAKEN requires alg ES256 (ATIS-1000074 §5.2.1): the signer uses another algorithm"),
    (E.UnsupportedTypeError, "the JOSE header needs typ 'passport' (RFC 8225 §4.1)"),
    (E.UnsupportedPPTError, "ppt must be 'shaken' (or div/rcd with a SHAKEN PASSporT alongside)"),
    (E.CertificateError, "the certificate at x5u cannot be used for SHAKEN (ATIS-1000080): see the chain below"),
    (E.MissingClaimError, "a mandatory claim is missing (attest, dest, iat, orig, origid: ATIS-1000074 §5.2.2)"),
    (E.InvalidClaimError, "a claim has a wrong value: see the detail (attest A/B/C, origid a UUID, TNs digits)"),
    (E.PassportFormatError, "the token is not a well-formed JWS (three base64url parts, JSON objects): the "
                            "header was truncated or mangled on the way (check SIP message size limits)"),
    (E.IdentityHeaderSyntaxError, "the Identity header does not follow RFC 8224 §4: token;info=<URL>;alg=ES256;ppt=shaken"),
    (E.MissingIdentityError, "the call carries no Identity header: the originating network did not sign it"),
)


def fix_for(err: E.StirShakenError | None) -> str:
    """The advice for an error (empty when there is none)."""
    if err is None:
        return ""
    for cls, text in FIXES:
        if isinstance(err, cls):
            return text
    return ""


def _iso(t: float | dt.datetime | None) -> str | None:
    if t is None:
        return None
    if isinstance(t, dt.datetime):
        return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _key(cert: x509.Certificate) -> str:
    k = cert.public_key()
    if isinstance(k, ec.EllipticCurvePublicKey):
        return f"EC {k.curve.name}"
    if isinstance(k, rsa.RSAPublicKey):
        return f"RSA {k.key_size}"
    return type(k).__name__


def _tnauthlist(cert: x509.Certificate) -> dict[str, Any] | None:
    try:
        got = from_certificate(cert)
    except E.StirShakenError as exc:
        return {"error": exc.description}
    if got is None:
        return None
    tnal, critical = got
    return {
        "spc": [e.code for e in tnal.entries if isinstance(e, SPC)],
        "tn": [e.number for e in tnal.entries if isinstance(e, TN)],
        "range": [f"{e.start}+{e.count}" for e in tnal.entries if isinstance(e, TNRange)],
        "critical": critical,
    }


def _crl_status(cert: x509.Certificate, crls: Sequence[x509.CertificateRevocationList]) -> str:
    for crl in crls:
        if crl.issuer != cert.issuer:
            continue
        rev = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        nu = crl.next_update_utc
        if rev is not None:
            return f"REVOKED on {_iso(rev.revocation_date_utc)} (CRL of {crl.issuer.rfc4514_string()})"
        return f"not revoked (CRL of {crl.issuer.rfc4514_string()}, nextUpdate {_iso(nu)})"
    dps = crl_urls(cert)
    return "no CRL loaded for its issuer" + (f" (distribution point {', '.join(dps)})" if dps else "")


def describe_chain(verifier: Verifier, certs: Sequence[x509.Certificate], at: float) -> list[dict[str, Any]]:
    """Per certificate (leaf first): names, validity at ``at``, key, TNAuthList, CRL status,
    STI-PA CA-list presence and ATIS-1000080 profile deviations."""
    when = dt.datetime.fromtimestamp(at, dt.timezone.utc)
    crls = verifier.crls.crls
    ca_list = verifier.trust.ca_list
    ca_subjects = {c.subject for c in ca_list.anchors} if ca_list is not None else None
    anchors = {c.subject for c in verifier.trust.file_anchors}
    out = []
    for i, cert in enumerate(certs):
        issuer = certs[i + 1] if i + 1 < len(certs) else None
        nb, na = cert.not_valid_before_utc, cert.not_valid_after_utc
        valid = "valid" if nb <= when <= na else ("not yet valid" if when < nb else "expired")
        entry: dict[str, Any] = {
            "subject": cert.subject.rfc4514_string(),
            "issuer": cert.issuer.rfc4514_string(),
            "serial": format(cert.serial_number, "x"),
            "not_before": _iso(nb),
            "not_after": _iso(na),
            "validity": valid,
            "key": _key(cert),
            "tnauthlist": _tnauthlist(cert),
            "crl": _crl_status(cert, crls),
            "issuer_is_trust_anchor": cert.issuer in anchors,
            "profile": check_profile(cert, "sp" if i == 0 else None, issuer=issuer),
        }
        if ca_subjects is not None:
            entry["issuer_on_ca_list"] = cert.issuer in ca_subjects or cert.subject in ca_subjects
        out.append(entry)
    return out


async def x5u_route(url: str, verifier: Verifier) -> dict[str, Any]:
    """The SSRF decision for ``url`` under the verifier's x5u policy: the URL rules
    (:func:`check_url`) and the addresses the guarded resolver lets the fetcher connect to."""
    policy = verifier.x5u_policy
    try:
        parts = check_url(url, policy)
    except E.FetchError as exc:
        return {"decision": f"refused: {exc.description}", "addresses": []}
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        got = await asyncio.wait_for(GuardedResolver(policy.allow_private).resolve(host, port, socket.AF_UNSPEC), policy.connect_timeout + 1)
    except BlockedAddressError as exc:
        return {"decision": f"refused: {exc}", "addresses": []}
    except (OSError, asyncio.TimeoutError) as exc:
        return {"decision": f"unresolvable: {exc or type(exc).__name__}", "addresses": []}
    addrs = sorted({r["host"] for r in got})
    note = " (private addresses allowed by allow_private_x5u)" if policy.allow_private else ""
    return {"decision": "allowed" + note, "addresses": addrs}


def _fetch_record(verifier: Verifier, url: str, static: bool) -> dict[str, Any]:
    if static:
        return {"source": "static chain (--cert / --certs): nothing fetched"}
    for rec in reversed(verifier.trace or []):
        if rec["url"] != url:
            continue
        out: dict[str, Any] = {"source": "fetched", "seconds": round(rec["seconds"], 4)}
        if "error" in rec:
            out["error"] = str(rec["error"])
            return out
        res = rec["result"]
        out.update(status=200, content_type=res.content_type, bytes=len(res.body), certificates=rec["certificates"],
                   cache_ttl=round(rec["ttl"], 1),
                   cache_headers={k: v for k, v in res.headers.items() if k in ("cache-control", "expires", "age", "date", "last-modified", "etag")})
        return out
    return {"source": "not fetched (an earlier check failed, or the credential was cached)"}


def _decode(raw: str) -> tuple[dict[str, Any], PASSporT | None, list[str]]:
    """Header parameters and the decoded token of a value the verifier could not parse (display only)."""
    problems: list[str] = []
    params: dict[str, Any] = {}
    token = raw.split(";", 1)[0].strip()
    try:
        hdr = parse_identity(raw)
        params = {k: v for k, v in hdr.params}
        token = hdr.token
    except E.StirShakenError as exc:
        problems.append(str(exc))
    try:
        return params, parse_jws(token), problems
    except E.StirShakenError as exc:
        problems.append(str(exc))
        return params, None, problems


def _passport_report(pr: PassportResult, verifier: Verifier, now: float, origs: list[str], routes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    params, p, problems = _decode(pr.raw)
    if pr.passport is not None:
        p = pr.passport
    out: dict[str, Any] = {"ok": pr.ok, "ppt": pr.ppt or (p.ppt if p is not None else None), "raw": pr.raw, "params": params}
    checks = []
    for c in pr.checks:
        item = {"check": c.name, "ok": c.ok, "detail": c.detail}
        if not c.ok:
            item["fix"] = fix_for(pr.error)
        checks.append(item)
    out["checks"] = checks
    if pr.error is not None:
        out["error"] = {"code": pr.error.sip_code, "reason": pr.error.reason, "description": pr.error.description, "fix": fix_for(pr.error)}
    if p is None:
        out["problems"] = problems
        return out
    out["header"] = dict(p.header)
    out["claims"] = p.claims
    out["problems"] = problems + list(p.problems)
    iat = p.claims.get("iat")
    if isinstance(iat, (int, float)) and not isinstance(iat, bool):
        out["iat"] = {"value": iat, "date": _iso(float(iat)), "age_seconds": round(now - float(iat), 1)}
    x5u = p.x5u
    if isinstance(x5u, str) and x5u:
        static = verifier.is_static(x5u)
        out["x5u"] = {"url": x5u, "route": routes.get(x5u), "fetch": _fetch_record(verifier, x5u, static)}
        certs = verifier.chain_for(x5u, now)
        if certs:
            out["chain"] = describe_chain(verifier, certs, now)
    sig = next((c for c in pr.checks if c.name == "signature"), None)
    out["signature"] = ({"ok": sig.ok, "detail": sig.detail or ("ES256 signature verifies with the leaf key" if sig.ok else "")}
                        if sig is not None else {"ok": None, "detail": "not checked: no usable credential"})
    if pr.credential is not None:
        try:
            c = check_authority(p, pr.credential, verifier.policy)
            out["authority"] = {"ok": True, "detail": c.detail, "enforced": verifier.policy.check_authority}
        except E.StirShakenError as exc:
            out["authority"] = {"ok": False, "detail": exc.description, "enforced": verifier.policy.check_authority}
    out["orig_vs_request"] = {"passport": p.orig_tn, "request": origs}
    return out


def build_report(call: Call, result: VerificationResult, verifier: Verifier, now: float,
                 routes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The inspection report (a JSON-able dict): verdict first, then input, then per PASSporT."""
    info = call.info
    verdict: dict[str, Any] = {"ok": result.ok, "verstat": result.verstat, "attest": result.attest}
    if result.sip_code is not None:
        verdict.update(sip_code=result.sip_code, reason=result.reason, description=result.description,
                       reason_header=result.reason_header)
        failing = next((p.error for p in result.passports if p.error is not None and not p.ok), None)
        if failing is None and result.sip_code == 428:
            failing = E.MissingIdentityError("no Identity header")
        verdict["fix"] = fix_for(failing)
    origs = [t for t in (call_tn(info.from_), call_tn(info.pai)) if t]
    to = info.to if isinstance(info.to, (list, tuple)) else [info.to]
    return {
        "verdict": verdict,
        "verified_at": _iso(now),
        "input": {
            "source": call.source, "call_id": call.call_id or None,
            "from": info.from_, "pai": info.pai, "to": info.to, "ruri": info.ruri,
            "date": _iso(info.date) if info.date is not None else None,
            "calling_tns": origs, "called_tns": [t for t in (call_tn(x) for x in list(to) + [info.ruri]) if t],
            "identity_headers": len(info.identities),
        },
        "passports": [_passport_report(pr, verifier, now, origs, routes) for pr in result.passports if pr.raw or pr.passport],
        "trust": {
            "anchors": [c.subject.rfc4514_string() for c in verifier.trust.file_anchors],
            "ca_list": (f"{len(verifier.trust.ca_list.anchors)} CAs" if verifier.trust.ca_list is not None
                        else (verifier.trust.ca_list_error.description if verifier.trust.ca_list_error else "not configured")),
            "crls": len(verifier.crls.crls),
        },
    }


async def ainspect(call: Call, config: VerifierConfig, *, static_chain: list[x509.Certificate] | None = None,
                   now: float | None = None) -> dict[str, Any]:
    """Verify ``call`` with a fresh :class:`Verifier` built from ``config`` (Redis and replay
    detection off: an inspection must not count as a call) and report everything it saw.

    ``static_chain`` stands for the x5u of every header (``--cert``); ``now`` is the
    verification time (epoch seconds; default: the current time, as ``verify`` and ``serve``).
    """
    cfg = config.model_copy(update={"redis": None, "replay_detection": False})
    verifier = Verifier(cfg)
    verifier.trace = []
    when = now if now is not None else time.time()
    try:
        if static_chain:
            for v in call.info.identities:
                try:
                    info = parse_identity(v).info
                except E.StirShakenError:
                    continue
                if info:
                    verifier.add_static_chain(info, static_chain)
        result = await verifier.averify(call.info, now=when)
        urls = {pr.passport.x5u for pr in result.passports if pr.passport is not None and isinstance(pr.passport.x5u, str)}
        routes = {}
        for u in sorted(urls):
            routes[u] = {"decision": "not used: static chain", "addresses": []} if verifier.is_static(u) else await x5u_route(u, verifier)
        return build_report(call, result, verifier, when, routes)
    finally:
        await verifier.aclose()


def inspect(call: Call, config: VerifierConfig, **kw: Any) -> dict[str, Any]:
    """:func:`ainspect` for synchronous callers (runs its own event loop)."""
    return asyncio.run(ainspect(call, config, **kw))


__all__ = ["FIXES", "ainspect", "build_report", "describe_chain", "fix_for", "inspect", "x5u_route"]
