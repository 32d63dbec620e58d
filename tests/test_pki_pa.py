"""STI-PA API (docs/requirements.md PA-01..PA-05): login, SPC tokens, signed CA list, SHAKEN CRL,
revocation and access control."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core import certificates as certs
from stirshaken.pki.pa_client import PAClient
from stirshaken.pki.pa import account_key_fingerprint, check_password, hash_password
from stirshaken.core.passport import verify_signature
from stirshaken.vs.trust import verify_ca_list
from stirshaken.core.tnauthlist import TNAuthList

from tests.test_pki_support import running_testbed, session_for


def _b64json(seg: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))


async def _call(s: aiohttp.ClientSession, method: str, url: str, body: object = None, token: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with s.request(method, url, json=body, headers=headers) as r:
        return r.status, await r.json()


def test_password_hashing() -> None:
    h = hash_password("pw")
    assert check_password("pw", h) and not check_password("px", h) and not check_password("pw", "md5$x$y")


async def test_spc_token_shape(tmp_path: Path) -> None:
    """PA-04 request/response and PA-05 token shape (RFC 9448 §4)."""
    async with running_testbed(tmp_path) as tb:
        key = ec.generate_private_key(ec.SECP256R1())
        fp = account_key_fingerprint(key)
        assert fp.startswith("SHA256 ") and len(fp) == 7 + 32 * 3 - 1
        async with session_for(tb) as s:
            pa = PAClient(tb.urls["pa"], s)
            await pa.login(f"sp-{tb.ocn}", tb.sp_password)
            tkvalue = TNAuthList.for_spc("1234").to_base64()
            out = await pa.spc_token("1234", tkvalue, fp.replace("SHA256 ", "SHA256 ").lower().replace("sha256", "SHA256"))
            assert out["status"] == "success" and out["crl"] == tb.pa.crl_url  # type: ignore[union-attr]
            assert out["iss"] == tb.pa.crl_issuer.rfc4514_string()  # type: ignore[union-attr]
            h, p, sig = out["token"].split(".")
            header, claims = _b64json(h), _b64json(p)
            assert header == {"alg": "ES256", "typ": "JWT", "x5u": tb.pa.signer_url}  # type: ignore[union-attr]
            assert claims["exp"] > time.time() and claims["jti"]
            assert claims["atc"] == {"tktype": "TNAuthList", "tkvalue": tkvalue, "ca": False, "fingerprint": fp}
            async with s.get(header["x5u"]) as r:
                signer = certs.load_certificates(await r.read())[0]
            verify_signature(f"{h}.{p}".encode(), base64.urlsafe_b64decode(sig + "=="), signer.public_key())  # type: ignore[arg-type]


async def test_pa_access_control(tmp_path: Path) -> None:
    async with running_testbed(tmp_path) as tb:
        base = tb.urls["pa"]
        tb.pa.add_account("sp-5678", "pw5678", ocn="5678")  # type: ignore[union-attr]
        fp = account_key_fingerprint(ec.generate_private_key(ec.SECP256R1()))
        atc = {"atc": {"tktype": "TNAuthList", "tkvalue": TNAuthList.for_spc("1234").to_base64url(), "ca": False, "fingerprint": fp}}
        async with session_for(tb) as s:
            st, body = await _call(s, "POST", base + "/auth/login", {"userId": "sp-1234", "password": "wrong"})
            assert st == 401 and body["status"] == "error"
            st, body = await _call(s, "POST", base + "/account/1234/token", atc)
            assert st == 401
            st, body = await _call(s, "POST", base + "/account/1234/token", atc, token="forged")
            assert st == 401
            st, body = await _call(s, "POST", base + "/auth/login", {"userId": "sp-5678", "password": "pw5678"})
            other = body["accessToken"]
            st, body = await _call(s, "POST", base + "/account/1234/token", atc, token=other)
            assert st == 403  # another SP's OCN
            st, body = await _call(s, "POST", base + "/account/5678/token", atc, token=other)
            assert st == 403  # TNAuthList names an SPC the account does not hold
            st, body = await _call(s, "POST", base + "/auth/login", {"username": "sp-1234", "password": tb.sp_password})
            mine = body["accessToken"]
            for bad in (
                {"atc": {**atc["atc"], "fingerprint": "SHA256 XY"}},
                {"atc": {**atc["atc"], "tktype": "SPC"}},
                {"atc": {**atc["atc"], "tkvalue": "***"}},
                {"atc": {**atc["atc"], "ca": "no"}},
                {"nothing": 1},
            ):
                st, body = await _call(s, "POST", base + "/account/1234/token", bad, token=mine)
                assert st == 400 and body["status"] == "error", bad
            st, body = await _call(s, "POST", base + "/account/1234/token", {"atc": {**atc["atc"], "ca": True}}, token=mine)
            assert st == 403
            # admin-only operations
            st, body = await _call(s, "POST", base + "/revoke", {"serial": "01"}, token=mine)
            assert st == 403
            st, body = await _call(s, "POST", base + "/admin/ca", {"certificate": "x"}, token=mine)
            assert st == 403
            async with s.post(base + "/auth/login", data=b"not json") as r:
                assert r.status == 400 and (await r.json())["status"] == "error"


async def test_ca_list_and_crl(tmp_path: Path) -> None:
    """PA-01 signed trusted-CA list (verified with the VS's verifier) and PA-02 CRL updates."""
    async with running_testbed(tmp_path) as tb:
        async with session_for(tb) as s:
            pa = PAClient(tb.urls["pa"], s)
            jws = await pa.ca_list()
            header = _b64json(jws.split(".")[0])
            async with s.get(header["x5u"]) as r:
                signer_chain = certs.load_certificates(await r.read())
            cal = verify_ca_list(jws, signer_chain, [tb.pa.keys.root])  # type: ignore[union-attr]
            assert list(cal.anchors) == [tb.ca.keys.root] and cal.exp and cal.exp > time.time()  # type: ignore[union-attr]
            seq1 = cal.sequence
            assert await pa.ca_list() == jws  # unchanged list, same JWS
            # adding a CA bumps the sequence
            await pa.login("admin", tb.admin_password)
            await pa.add_trusted_ca(certs.pem([tb.pa.keys.root]).decode())  # type: ignore[union-attr]
            cal2 = verify_ca_list(await pa.ca_list(), signer_chain, [tb.pa.keys.root])  # type: ignore[union-attr]
            assert cal2.sequence is not None and seq1 is not None and cal2.sequence > seq1 and len(cal2.anchors) == 2
            # CRL: DER and PEM, signed by the PA CRL key, updated on revocation
            crl1 = await pa.crl()
            assert crl1.issuer == tb.pa.crl_issuer and crl1.is_signature_valid(tb.pa.keys.crl_cert.public_key())  # type: ignore[union-attr]
            await pa.revoke(serial=0xABCDEF123456789, reason="keyCompromise")
            crl2 = await pa.crl()
            assert crl2.get_revoked_certificate_by_serial_number(0xABCDEF123456789) is not None
            n1 = crl1.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            n2 = crl2.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
            assert n2 > n1
            async with s.get(tb.urls["pa"] + "/crl.pem") as r:
                assert certs.load_crl(await r.read()).get_revoked_certificate_by_serial_number(0xABCDEF123456789)
            async with s.get(tb.urls["pa"] + "/revoked-tokens") as r:
                assert (await r.json())["jtis"] == []


async def test_crl_reissued_when_stale(tmp_path: Path) -> None:
    async with running_testbed(tmp_path) as tb:
        pa = tb.pa
        assert pa is not None
        first = pa.current_crl()
        assert pa.current_crl() is first
        pa.config.crl_lifetime = 20 * 86400  # half-life now exceeds the time left: re-issue
        assert pa.current_crl() is not first
