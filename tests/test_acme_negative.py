"""Every STI-CA validation has a negative test asserting the RFC 8555 §6.7 problem type:
JWS/nonce/url checks (§6.2-§6.5), identifiers (RFC 9448 §3), the SPC token checks of
docs/requirements.md AC-03 (RFC 9447/9448) and the finalize CSR checks (AC-04)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core import certificates as certs
from stirshaken.core.jose import jwk_of, sign_jws
from stirshaken.pki.pa_client import PAClient
from stirshaken.core.b64 import b64url_encode
from stirshaken.pki.pa import PAConfig, PolicyAdministrator, account_key_fingerprint
from stirshaken.lab.testbed import Testbed, bind, serve_on, url_of
from stirshaken.core.tnauthlist import SPC, TN, TNAuthList

from tests.test_pki_support import ERR, RawAcme, csr_der, forge_token, running_testbed, session_for


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[Testbed, RawAcme]]:
    async with running_testbed(tmp_path) as tb:
        async with session_for(tb) as s:
            acme = RawAcme(tb, s)
            await acme.register()
            yield tb, acme


def _ptype(body: Any) -> str:
    assert isinstance(body, dict), body
    return str(body.get("type"))


# --- RFC 8555 §6.2-§6.5: request authentication ---------------------------------------------------


async def test_unknown_nonce(env: tuple[Testbed, RawAcme]) -> None:
    _tb, acme = env
    status, headers, body = await acme.post(acme.url("new-order"), {"identifiers": []}, nonce="bm90LWEtbm9uY2U")
    assert status == 400 and _ptype(body) == ERR + "badNonce"
    assert headers["Content-Type"] == "application/problem+json" and headers["Replay-Nonce"]


async def test_reused_nonce(env: tuple[Testbed, RawAcme]) -> None:
    _tb, acme = env
    nonce = await acme.nonce()
    status, _h, _b = await acme.post(acme.kid, None, nonce=nonce)  # type: ignore[arg-type]
    assert status == 200
    status, _h, body = await acme.post(acme.kid, None, nonce=nonce)  # type: ignore[arg-type]
    assert status == 400 and _ptype(body) == ERR + "badNonce"


async def test_missing_nonce(env: tuple[Testbed, RawAcme]) -> None:
    _tb, acme = env
    protected = {"alg": "ES256", "url": acme.kid, "kid": acme.kid}
    status, _h, body = await acme.raw(acme.kid, sign_jws(acme.key, protected, None))  # type: ignore[arg-type]
    assert status == 400 and _ptype(body) == ERR + "badNonce"


async def test_expired_nonce(env: tuple[Testbed, RawAcme]) -> None:
    tb, acme = env
    nonce = await acme.nonce()
    tb.ca.nonces._nonces[nonce] = time.monotonic() - 1  # type: ignore[union-attr]
    status, _h, body = await acme.post(acme.kid, None, nonce=nonce)  # type: ignore[arg-type]
    assert status == 400 and _ptype(body) == ERR + "badNonce"


async def test_wrong_url_header(env: tuple[Testbed, RawAcme]) -> None:
    _tb, acme = env
    status, _h, body = await acme.post(acme.url("new-order"), {"identifiers": []}, url_header=acme.url("new-account"))
    assert status == 401 and _ptype(body) == ERR + "unauthorized"


async def test_bad_algorithm(env: tuple[Testbed, RawAcme]) -> None:
    _tb, acme = env
    for alg in ("RS256", "HS256", "none", "ES384"):
        status, _h, body = await acme.post(acme.kid, None, alg=alg)  # type: ignore[arg-type]
        assert status == 400 and _ptype(body) == ERR + "badSignatureAlgorithm", alg
        assert body["algorithms"] == ["ES256"]


async def test_bad_signature(env: tuple[Testbed, RawAcme]) -> None:
    _tb, acme = env
    other = ec.generate_private_key(ec.SECP256R1())
    nonce = await acme.nonce()
    protected = {"alg": "ES256", "nonce": nonce, "url": acme.kid, "kid": acme.kid}
    status, _h, body = await acme.raw(acme.kid, sign_jws(other, protected, None))  # type: ignore[arg-type]
    assert status == 400 and _ptype(body) == ERR + "malformed" and "signature" in body["detail"]


async def test_wrong_content_type_and_shape(env: tuple[Testbed, RawAcme]) -> None:
    _tb, acme = env
    nonce = await acme.nonce()
    jws = sign_jws(acme.key, {"alg": "ES256", "nonce": nonce, "url": acme.kid, "kid": acme.kid}, None)
    status, _h, body = await acme.raw(acme.kid, jws, content_type="application/json")  # type: ignore[arg-type]
    assert status == 415 and _ptype(body) == ERR + "malformed"
    status, _h, body = await acme.raw(acme.kid, {**jws, "header": {}})  # type: ignore[arg-type]
    assert status == 400 and _ptype(body) == ERR + "malformed"
    status, _h, body = await acme.raw(acme.kid, b"[1,2]")  # type: ignore[arg-type]
    assert status == 400 and _ptype(body) == ERR + "malformed"


async def test_jwk_and_kid_rules(env: tuple[Testbed, RawAcme]) -> None:
    _tb, acme = env
    # account requests must use kid
    status, _h, body = await acme.post(acme.url("new-order"), {"identifiers": []}, use_jwk=True)
    assert status == 400 and _ptype(body) == ERR + "malformed"
    # newAccount must use jwk
    status, _h, body = await acme.post(acme.url("new-account"), {})
    assert status == 400 and _ptype(body) == ERR + "malformed"
    # both at once
    status, _h, body = await acme.post(acme.url("new-order"), {"identifiers": []}, extra={"jwk": jwk_of(acme.key)})
    assert status == 400 and _ptype(body) == ERR + "malformed"
    # a non-P-256 jwk
    status, _h, body = await acme.post(acme.url("new-account"), {}, use_jwk=True, extra={"jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}})
    assert status == 400 and _ptype(body) == ERR + "badPublicKey"


async def test_unknown_kid_and_only_return_existing(env: tuple[Testbed, RawAcme]) -> None:
    _tb, acme = env
    status, _h, body = await acme.post(acme.url("new-order"), {"identifiers": []}, kid=acme.url("acct/nope"))
    assert status == 400 and _ptype(body) == ERR + "accountDoesNotExist"
    stranger = RawAcme(acme.tb, acme.session)
    status, _h, body = await stranger.post(stranger.url("new-account"), {"onlyReturnExisting": True}, use_jwk=True)
    assert status == 400 and _ptype(body) == ERR + "accountDoesNotExist"
    status, headers, body = await acme.post(acme.url("new-account"), {"onlyReturnExisting": True}, use_jwk=True)
    assert status == 200 and headers["Location"] == acme.kid and body["status"] == "valid"


async def test_deactivated_account(env: tuple[Testbed, RawAcme]) -> None:
    _tb, acme = env
    status, _h, body = await acme.post(acme.kid, {"status": "deactivated"})  # type: ignore[arg-type]
    assert status == 200 and body["status"] == "deactivated"
    status, _h, body = await acme.post(acme.url("new-order"), {"identifiers": []})
    assert status == 403 and _ptype(body) == ERR + "unauthorized"


# --- RFC 9448 §3: identifiers ----------------------------------------------------------------------


async def test_identifier_rules(env: tuple[Testbed, RawAcme]) -> None:
    _tb, acme = env
    cases = [
        ([{"type": "dns", "value": "example.com"}], "unsupportedIdentifier"),
        ([{"type": "TNAuthList", "value": "!!notbase64"}], "malformed"),
        ([{"type": "TNAuthList", "value": "MAA"}], "malformed"),  # empty SEQUENCE is not a TNAuthList
        ([{"type": "TNAuthList", "value": TNAuthList((TN("12155551212"),)).to_base64url()}], "rejectedIdentifier"),
        ([{"type": "TNAuthList", "value": TNAuthList((SPC("1234"), SPC("5678"))).to_base64url()}], "rejectedIdentifier"),
        ([{"type": "TNAuthList", "value": TNAuthList.for_spc("abc").to_base64url()}], "rejectedIdentifier"),
        ([{"type": "TNAuthList", "value": TNAuthList.for_spc("1234").to_base64url()}] * 2, "rejectedIdentifier"),
        ([], "malformed"),
    ]
    for ids, kind in cases:
        status, _h, body = await acme.post(acme.url("new-order"), {"identifiers": ids})
        assert status == 400 and _ptype(body) == ERR + kind, (ids, body)
    status, _h, body = await acme.post(
        acme.url("new-order"),
        {"identifiers": [{"type": "TNAuthList", "value": TNAuthList.for_spc("1234").to_base64()}], "notAfter": "yesterday"},
    )
    assert status == 400 and _ptype(body) == ERR + "malformed"


# --- RFC 9447/9448 token validation (AC-03): challenge error carries the problem -------------------


async def _challenge_error(acme: RawAcme, token: str) -> dict[str, Any]:
    order_url, order = await acme.new_order()
    chall = await acme.answer(order, token)
    assert chall["status"] == "invalid", chall
    _s, _h, order = await acme.post(order_url)
    assert order["status"] == "invalid"
    _s, _h, authz = await acme.post(order["authorizations"][0])
    assert authz["status"] == "invalid"
    return chall["error"]


async def test_good_token_validates(env: tuple[Testbed, RawAcme]) -> None:
    _tb, acme = env
    _url, order = await acme.ready_order()
    assert order["status"] == "ready"


async def test_expired_token(env: tuple[Testbed, RawAcme]) -> None:
    tb, acme = env
    err = await _challenge_error(acme, forge_token(tb, exp=int(time.time()) - 5, account_key=acme.key))
    assert err["type"] == ERR + "unauthorized" and "expired" in err["detail"]


async def test_token_for_another_account_key(env: tuple[Testbed, RawAcme]) -> None:
    _tb, acme = env
    token = await acme.spc_token(key=ec.generate_private_key(ec.SECP256R1()))  # real PA token, other fingerprint
    err = await _challenge_error(acme, token)
    assert err["type"] == ERR + "unauthorized" and "fingerprint" in err["detail"]


async def test_replayed_jti(env: tuple[Testbed, RawAcme]) -> None:
    _tb, acme = env
    token = await acme.spc_token()
    _o1, order1 = await acme.new_order()
    assert (await acme.answer(order1, token))["status"] == "valid"
    err = await _challenge_error(acme, token)
    assert err["type"] == ERR + "unauthorized" and "jti" in err["detail"]


async def test_token_from_untrusted_pa(env: tuple[Testbed, RawAcme], tmp_path: Path) -> None:
    """A rogue STI-PA with its own root, even under an allowed x5u prefix, is not trusted."""
    tb, acme = env
    sock = bind()
    rogue = PolicyAdministrator.create(PAConfig(base_url=url_of(sock), state_dir=tmp_path / "rogue"), tb.pa.db)  # type: ignore[union-attr]
    runner = await serve_on(rogue.app, sock, tb.tls.server_context())  # type: ignore[union-attr]
    try:
        tb.ca.tokens.prefixes.append(rogue.base + "/")  # type: ignore[union-attr]
        token = forge_token(tb, key=rogue.keys.signer_key, x5u=rogue.signer_url, account_key=acme.key)
        err = await _challenge_error(acme, token)
        assert err["type"] == ERR + "unauthorized" and "chain" in err["detail"]
    finally:
        await runner.cleanup()


async def test_token_x5u_outside_token_authority(env: tuple[Testbed, RawAcme]) -> None:
    tb, acme = env
    err = await _challenge_error(acme, forge_token(tb, x5u="https://127.0.0.1:9/pa.pem", account_key=acme.key))
    assert err["type"] == ERR + "unauthorized" and "x5u" in err["detail"]


async def test_token_bad_signature(env: tuple[Testbed, RawAcme]) -> None:
    tb, acme = env
    token = forge_token(tb, key=ec.generate_private_key(ec.SECP256R1()), account_key=acme.key)
    err = await _challenge_error(acme, token)
    assert err["type"] == ERR + "unauthorized" and "signature" in err["detail"]


async def test_token_tkvalue_mismatch(env: tuple[Testbed, RawAcme]) -> None:
    tb, acme = env
    atc = {"tktype": "TNAuthList", "tkvalue": TNAuthList.for_spc("9999").to_base64url(), "ca": False,
           "fingerprint": account_key_fingerprint(acme.key)}
    err = await _challenge_error(acme, forge_token(tb, atc=atc))
    assert err["type"] == ERR + "unauthorized" and "tkvalue" in err["detail"]


async def test_token_tkvalue_base64_is_der_equal(env: tuple[Testbed, RawAcme]) -> None:
    """tkvalue in standard base64 matches a base64url identifier: DER equality (AC-02/AC-03)."""
    tb, acme = env
    atc = {"tktype": "TNAuthList", "tkvalue": TNAuthList.for_spc("1234").to_base64(), "ca": False,
           "fingerprint": account_key_fingerprint(acme.key)}
    _url, order = await acme.new_order()
    assert (await acme.answer(order, forge_token(tb, atc=atc)))["status"] == "valid"


async def test_token_ca_flag_and_tktype(env: tuple[Testbed, RawAcme]) -> None:
    tb, acme = env
    base = {"tktype": "TNAuthList", "tkvalue": TNAuthList.for_spc("1234").to_base64url(), "ca": False,
            "fingerprint": account_key_fingerprint(acme.key)}
    err = await _challenge_error(acme, forge_token(tb, atc={**base, "ca": True}))
    assert err["type"] == ERR + "unauthorized" and "ca" in err["detail"]
    err = await _challenge_error(acme, forge_token(tb, atc={**base, "tktype": "SPC"}))
    assert err["type"] == ERR + "unauthorized" and "tktype" in err["detail"]


async def test_token_garbage_and_missing_atc(env: tuple[Testbed, RawAcme]) -> None:
    tb, acme = env
    err = await _challenge_error(acme, "not.a.jwt")
    assert err["type"] == ERR + "unauthorized"
    _url, order = await acme.new_order()
    chall = await acme.challenge_of(order)
    status, _h, body = await acme.post(chall["url"], {"keyAuthorization": "x"})
    assert status == 400 and _ptype(body) == ERR + "malformed"


async def test_token_revoked_at_pa(env: tuple[Testbed, RawAcme]) -> None:
    tb, acme = env
    token = await acme.spc_token()
    jti = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["jti"]
    async with session_for(tb) as s:
        pa = PAClient(tb.urls["pa"], s)
        await pa.login("admin", tb.admin_password)
        await pa.revoke(jti=jti)
    err = await _challenge_error(acme, token)
    assert err["type"] == ERR + "unauthorized" and "revoked" in err["detail"]


# --- finalize (AC-04) and access control ---------------------------------------------------------


async def test_finalize_before_ready(env: tuple[Testbed, RawAcme]) -> None:
    _tb, acme = env
    _url, order = await acme.new_order()
    status, _h, body = await acme.finalize(order, csr_der())
    assert status == 403 and _ptype(body) == ERR + "orderNotReady"


async def test_csr_checks(env: tuple[Testbed, RawAcme]) -> None:
    _tb, acme = env
    order_url, order = await acme.ready_order()
    p384 = ec.generate_private_key(ec.SECP384R1())
    no_tn = (
        x509.CertificateSigningRequestBuilder().subject_name(certs.make_name("SHAKEN 1234", "X"))
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()).public_bytes(serialization.Encoding.DER)
    )
    good = bytearray(csr_der())
    good[-3] ^= 0x01  # break the CSR signature
    bad_cases = {
        "TNAuthList mismatch": csr_der(spc="9999"),
        "P-384": certs.build_csr(p384, spc="1234").public_bytes(serialization.Encoding.DER),
        "no TNAuthList": no_tn,
        "bad signature": bytes(good),
        "garbage": b"\x30\x03\x02\x01\x00",
    }
    for name, der in bad_cases.items():
        status, _h, body = await acme.finalize(order, der)
        assert status == 400 and _ptype(body) == ERR + "badCSR", (name, body)
    status, _h, body = await acme.post(order["finalize"], {"csr": "***"})
    assert status == 400 and _ptype(body) == ERR + "badCSR"
    status, _h, body = await acme.post(order["finalize"], {})
    assert status == 400 and _ptype(body) == ERR + "malformed"
    # the order is still ready after rejected CSRs and can be finalized
    status, headers, body = await acme.finalize(order, csr_der())
    assert status == 200 and body["status"] == "valid" and headers["Location"] == order_url
    status, _h, body = await acme.finalize(order, csr_der())
    assert status == 403 and _ptype(body) == ERR + "orderNotReady"


async def test_other_account_cannot_touch_order(env: tuple[Testbed, RawAcme]) -> None:
    tb, acme = env
    order_url, order = await acme.ready_order()
    _s, _h, done = await acme.finalize(order, csr_der())
    other = RawAcme(tb, acme.session)
    await other.register()
    for url in (order_url, order["authorizations"][0], done["certificate"]):
        status, _h, body = await other.post(url)
        assert status == 403 and _ptype(body) == ERR + "unauthorized", url
    status, _h, body = await other.finalize(order, csr_der())
    assert status == 403 and _ptype(body) == ERR + "unauthorized"


async def test_revoke_cert_rules(env: tuple[Testbed, RawAcme]) -> None:
    tb, acme = env
    _url, order = await acme.ready_order()
    cert_key = ec.generate_private_key(ec.SECP256R1())
    _s, _h, done = await acme.finalize(order, csr_der(cert_key))
    status, headers, body = await acme.post(done["certificate"])
    assert status == 200 and headers["Content-Type"] == "application/pem-certificate-chain"
    leaf = certs.load_certificates(body if isinstance(body, bytes) else str(body).encode())[0]
    der = b64url_encode(leaf.public_bytes(serialization.Encoding.DER))
    other = RawAcme(tb, acme.session)
    await other.register()
    status, _h, body = await other.post(other.url("revoke-cert"), {"certificate": der})
    assert status == 403 and _ptype(body) == ERR + "unauthorized"
    status, _h, body = await acme.post(acme.url("revoke-cert"), {"certificate": der, "reason": 7})
    assert status == 400 and _ptype(body) == ERR + "badRevocationReason"
    # revocation with the certificate key (jwk) is allowed
    status, _h, body = await acme.post(acme.url("revoke-cert"), {"certificate": der}, use_jwk=True, key=cert_key)
    assert status == 200, body
    status, _h, body = await acme.post(acme.url("revoke-cert"), {"certificate": der})
    assert status == 400 and _ptype(body) == ERR + "alreadyRevoked"
