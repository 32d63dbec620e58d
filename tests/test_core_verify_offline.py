"""Offline verification: verify.verify_offline with a credential from certificates.TrustStore
(signature, path validation, validity dates, CRL revocation, TNAuthList present, iat freshness)."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from stirshaken.core import certificates as C
from stirshaken.core.b64 import b64url_decode, b64url_encode
from stirshaken.core.errors import VERSTAT_FAILED, VERSTAT_NONE, VERSTAT_PASSED, StirShakenError
from stirshaken.core.passport import Signer, canonical_json
from stirshaken.core.tnauthlist import TNAuthList
from stirshaken.core.verification import VerificationPolicy, verify_offline

try:
    from tests import _core_support as V
except ImportError:
    import _core_support as V  # type: ignore[no-redef]

X5U = "https://cr.example.net/sp-chain.pem"
NOW_DT = dt.datetime.now(dt.timezone.utc)


@pytest.fixture(scope="module")
def chain():
    return V.make_chain()


@pytest.fixture(scope="module")
def cred(chain):
    return chain.trust().validate(chain.x5u_chain)


def sign(chain, iat=None, **kw):
    args = dict(orig="12155551212", dest=["12155551213"], attest="A", iat=int(time.time()) if iat is None else iat)
    args.update(kw)
    return Signer(chain.sp_key, X5U).identity(**args)


def credential_or_error(store, certs, **kw):
    try:
        return store.validate(certs, **kw)
    except StirShakenError as err:
        return err


def test_passes(chain, cred):
    r = verify_offline(sign(chain), cred, orig="+1 215 555 1212", dest="tel:+1-215-555-1213", now=time.time())
    assert r.ok and r.verstat == VERSTAT_PASSED and r.attest == "A" and r.sip_code is None
    names = [c.name for c in r.checks]
    for n in ("identity-syntax", "passport-header", "x5u-equals-info", "claims", "iat-fresh", "orig-matches",
              "dest-matches", "certificate", "signature"):
        assert n in names


def test_bad_signature(chain, cred):
    value = sign(chain)
    token, params = value.split(";", 1)
    h, p, s = token.split(".")
    claims = __import__("orjson").loads(b64url_decode(p))
    claims["attest"] = "B"  # upgrade attempt... downgrade, same thing: the bytes changed
    tampered = f"{h}.{b64url_encode(canonical_json(claims))}.{s};{params}"
    r = verify_offline(tampered, cred, now=time.time())
    assert not r.ok and r.sip_code == 438 and r.verstat == VERSTAT_FAILED and "signature" in r.description.lower()
    other = V.make_chain()
    r = verify_offline(Signer(other.sp_key, X5U).identity(orig="12155551212", dest="12155551213", attest="A"), cred, now=time.time())
    assert r.sip_code == 438 and r.verstat == VERSTAT_FAILED


@pytest.mark.parametrize("age,code", [(0, None), (59, None), (61, 403), (3600, 403), (-5, None), (-3600, 403)])
def test_iat_freshness(chain, cred, age, code):
    now = time.time()
    r = verify_offline(sign(chain, iat=int(now) - age), cred, now=now)
    assert r.sip_code == code
    if code:
        assert r.reason == "Stale Date" and r.verstat == VERSTAT_NONE


def test_freshness_window_is_policy(chain, cred):
    now = time.time()
    r = verify_offline(sign(chain, iat=int(now) - 100), cred, now=now, policy=VerificationPolicy(max_age=300))
    assert r.ok


def test_untrusted_chain(chain):
    other = V.make_chain()
    err = credential_or_error(other.trust(), chain.x5u_chain)
    r = verify_offline(sign(chain), err, now=time.time())
    assert not r.ok and r.sip_code == 437 and r.reason == "Unsupported Credential" and r.verstat == VERSTAT_FAILED


def test_expired_and_not_yet_valid_certificate(chain):
    expired = C.create_sp_certificate(chain.sp_key, chain.inter, chain.inter_key, spc="1234",
                                      not_before=NOW_DT - dt.timedelta(days=30), not_after=NOW_DT - dt.timedelta(days=1))
    r = verify_offline(sign(chain), credential_or_error(chain.trust(), [expired, chain.inter]), now=time.time())
    assert r.sip_code == 437 and "expired" in r.description
    future = C.create_sp_certificate(chain.sp_key, chain.inter, chain.inter_key, spc="1234", not_before=NOW_DT + dt.timedelta(days=2))
    r = verify_offline(sign(chain), credential_or_error(chain.trust(), [future, chain.inter]), now=time.time())
    assert r.sip_code == 437


def test_revoked_by_crl(chain):
    crl = C.create_crl(chain.inter, chain.inter_key, [(chain.sp.serial_number, NOW_DT)])
    r = verify_offline(sign(chain), credential_or_error(chain.trust(crls=[crl]), chain.x5u_chain), now=time.time())
    assert r.sip_code == 437 and "revoked" in r.description and r.verstat == VERSTAT_FAILED


def test_tnauthlist_required(chain):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    sp = chain.sp
    b = (x509.CertificateBuilder().subject_name(sp.subject).issuer_name(sp.issuer).public_key(sp.public_key())
         .serial_number(C.random_serial()).not_valid_before(sp.not_valid_before_utc).not_valid_after(sp.not_valid_after_utc))
    for ext in sp.extensions:
        if ext.oid != C.TNAUTHLIST_OID:
            b = b.add_extension(ext.value, ext.critical)
    no_tn = b.sign(chain.inter_key, hashes.SHA256())
    r = verify_offline(sign(chain), credential_or_error(chain.trust(), [no_tn, chain.inter]), now=time.time())
    assert r.sip_code == 437 and "TNAuthList" in r.description


def test_identity_and_passport_errors_surface(chain, cred):
    now = time.time()
    good = sign(chain)
    token = good.split(";", 1)[0]
    cases = {
        token: 436,  # no info
        token + ";info=<https://elsewhere.example/x.pem>": 436,  # x5u != info
        good.replace("ppt=shaken", "ppt=div"): 438,
        ".." + token.split(".")[2] + f";info=<{X5U}>": 438,  # compact form
        V.SIGNALWIRE_BAD_PASSPORT + ";info=<http://3.17.177.174/stir_shaken/sp.pem>": 438,
    }
    for value, code in cases.items():
        r = verify_offline(value, cred, now=now)
        assert r.sip_code == code, (value[-60:], r.description)
    r = verify_offline(good, cred, orig="12155550000", now=now)
    assert r.sip_code == 438 and "orig" in r.description
    r = verify_offline(good, cred, dest="19995550000", now=now)
    assert r.sip_code == 438 and "dest" in r.description


def test_several_destinations(chain, cred):
    value = sign(chain, dest=["12155551213", "12155551214"])
    assert verify_offline(value, cred, dest="12155551214", now=time.time()).ok


def test_sp_certificate_for_other_spc_still_verifies_signature(cred):
    assert cred.tnauthlist == TNAuthList.for_spc("1234")


def test_decide_single_valid_shaken_shortcut_equals_general_result(chain, cred):
    """decide() answers one valid SHAKEN PASSporT without the general fold; the result is the
    one the general path builds (VerificationResult(verstat, attest, checks, passports, origid))."""
    from stirshaken.core import verification as VF

    now = time.time()
    prep = VF.prepare(sign(chain, attest="B", origid="123e4567-e89b-12d3-a456-426655440000"),
                      orig="12155551212", dest="12155551213", now=now)
    r = VF.complete(prep, cred)
    got = VF.decide([r])
    assert got == VF.VerificationResult(verstat=VERSTAT_PASSED, attest="B", checks=r.checks, passports=(r,),
                                        origid="123e4567-e89b-12d3-a456-426655440000", reason_header=None)
    # with targets: the destination check is added; a target elsewhere goes the general way (fails)
    bound = VF.decide([r], targets=["12155551213"])
    assert bound.ok and [c.name for c in bound.checks][-1] == "dest-matches"
    assert not VF.decide([r], targets=["19995550000"]).ok


def test_decide_single_shaken_destination_shortcut_equals_bind_destinations(chain, cred):
    """decide()'s shortcut for one SHAKEN PASSporT binds the destination exactly as the general
    bind_destinations does: canonical TNs only (a non-TN string equal to the claim binds nothing)."""
    from stirshaken.core import verification as VF

    now = time.time()
    for claim, targets in ((["12155551213"], ["12155551213"]), (["12155551213"], ["+1 215 555 1213"]),
                           (["sip:bob@example.net"], ["sip:bob@example.net"]), (["12155551213"], ["19995550000"])):
        r = VF.complete(VF.prepare(sign(chain, dest=claim), orig=None, dest=None, now=now), cred)
        assert r.ok
        general = VF.bind_destinations([r], targets)[0].ok
        assert VF.decide([r], targets=targets).ok == general, (claim, targets)
        # targets as a one-shot iterable: read once, the same verdict (not "no targets")
        assert VF.decide([r], targets=iter(targets)).ok == general, (claim, targets)
