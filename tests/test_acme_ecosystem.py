"""The STI-CA against clients written by others (issue 14): the CSR subject is kept when it meets
ATIS-1000080 §6.4.1, the account key is refused as certificate key (RFC 8555 §11.1), the two named
relaxations are off by default and work when on, and external account binding (RFC 8555 §7.3.4)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from stirshaken.core import certificates as certs
from stirshaken.core.jose import es256_sign, jwk_of, sign_jws
from stirshaken.core.tnauthlist import TNAuthList, to_extension
from stirshaken.core.b64 import b64url_encode
from stirshaken.pki.acme import AcmeProblem, eab_hmac_key, make_eab
from stirshaken.pki.acme_client import AcmeClient
from stirshaken.pki.ca import mint_eab_key

from tests.test_pki_support import ERR, RawAcme, running_testbed, session_for


def _csr(key: ec.EllipticCurvePrivateKey, attrs: list[tuple[x509.ObjectIdentifier, str]], spc: str = "1234") -> bytes:
    name = x509.Name([x509.NameAttribute(oid, v) for oid, v in attrs])
    csr = (x509.CertificateSigningRequestBuilder().subject_name(name)
           .add_extension(to_extension(TNAuthList.for_spc(spc)), critical=False).sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.DER)


FULL = [(NameOID.COUNTRY_NAME, "US"), (NameOID.STATE_OR_PROVINCE_NAME, "NJ"), (NameOID.LOCALITY_NAME, "Bridgewater"),
        (NameOID.ORGANIZATION_NAME, "Acme Telecom"), (NameOID.ORGANIZATIONAL_UNIT_NAME, "Voice"),
        (NameOID.COMMON_NAME, "Acme SHAKEN 1234")]


async def _issued(acme: RawAcme, order: dict) -> x509.Certificate:
    _s, _h, order = await acme.post(order["finalize"].rsplit("/finalize", 1)[0])
    status, _h, pem = await acme.post(order["certificate"])
    assert status == 200
    return certs.load_certificates(pem)[0]


async def test_csr_subject_kept_or_badcsr_naming_the_attribute(tmp_path: Path) -> None:
    async with running_testbed(tmp_path) as tb, session_for(tb) as s:
        acme = RawAcme(tb, s)
        await acme.register()
        _url, order = await acme.ready_order()
        status, _h, body = await acme.finalize(order, _csr(ec.generate_private_key(ec.SECP256R1()), FULL))
        assert status == 200, body
        cert = await _issued(acme, order)
        assert cert.subject == x509.Name([x509.NameAttribute(o, v) for o, v in FULL])  # kept as asked
        assert certs.check_profile(cert, "sp") == []
        for attrs, words in (
            ([a for a in FULL if a[0] != NameOID.ORGANIZATION_NAME], "lacks O"),
            ([a for a in FULL if a[0] != NameOID.COMMON_NAME] + [(NameOID.COMMON_NAME, "Acme 1234")], "does not contain 'SHAKEN'"),
            ([a for a in FULL if a[0] != NameOID.COMMON_NAME] + [(NameOID.COMMON_NAME, "SHAKEN 9999")], "does not contain the SPC '1234'"),
            (FULL + [(NameOID.EMAIL_ADDRESS, "noc@acme.example")], "emailAddress is not allowed"),
        ):
            _url, order = await acme.ready_order()
            status, _h, body = await acme.finalize(order, _csr(ec.generate_private_key(ec.SECP256R1()), attrs))
            assert status == 400 and body["type"] == ERR + "badCSR" and words in body["detail"], body


async def test_account_key_reuse_refused_unless_relaxed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_testbed(tmp_path) as tb, session_for(tb) as s:
        acme = RawAcme(tb, s)
        await acme.register()
        assert tb.ca.config.allow_account_key_reuse is False  # type: ignore[union-attr]
        _url, order = await acme.ready_order()
        status, _h, body = await acme.finalize(order, _csr(acme.key, FULL))
        assert status == 400 and body["type"] == ERR + "badCSR" and "RFC 8555 §11.1" in body["detail"], body
        tb.ca.config.allow_account_key_reuse = True  # type: ignore[union-attr]
        with caplog.at_level(logging.WARNING, logger="stirshaken.pki.ca"):
            _url, order = await acme.ready_order()
            status, _h, body = await acme.finalize(order, _csr(acme.key, FULL))
        assert status == 200, body
        assert (await _issued(acme, order)).public_key() == acme.key.public_key()
        assert any("allow_account_key_reuse" in r.getMessage() for r in caplog.records)


async def test_header_only_signature_refused_unless_relaxed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A POST-as-GET whose signature covers BASE64URL(protected) alone, not ``protected + "."``."""
    async with running_testbed(tmp_path) as tb, session_for(tb) as s:
        acme = RawAcme(tb, s)
        kid = await acme.register()

        async def header_only_get(url: str) -> tuple[int, dict]:
            protected = {"alg": "ES256", "nonce": await acme.nonce(), "url": url, "kid": kid}
            body = sign_jws(acme.key, protected, None)
            body["signature"] = b64url_encode(es256_sign(acme.key, body["protected"].encode("ascii")))
            status, _h, parsed = await acme.raw(url, body)
            return status, parsed

        status, body = await header_only_get(kid)
        assert status == 400 and body["type"] == ERR + "malformed" and "does not verify" in body["detail"]
        tb.ca.config.allow_header_only_signature = True  # type: ignore[union-attr]
        with caplog.at_level(logging.WARNING, logger="stirshaken.pki.ca"):
            status, body = await header_only_get(kid)
        assert status == 200 and body["status"] == "valid", body
        assert any("allow_header_only_signature" in r.getMessage() for r in caplog.records)
        # the relaxation is for an empty payload only: a payload signed the same way stays refused
        protected = {"alg": "ES256", "nonce": await acme.nonce(), "url": kid, "kid": kid}
        body = sign_jws(acme.key, protected, b'{"contact":[]}')
        body["signature"] = b64url_encode(es256_sign(acme.key, body["protected"].encode("ascii")))
        status, _h, parsed = await acme.raw(kid, body)
        assert status == 400 and parsed["type"] == ERR + "malformed"


async def test_external_account_binding(tmp_path: Path) -> None:
    async with running_testbed(tmp_path) as tb, session_for(tb) as s:
        ca = tb.ca
        assert ca is not None
        ca.config.eab_required = True
        directory = tb.urls["ca"] + "/acme/directory"
        async with s.get(directory) as r:
            assert (await r.json())["meta"]["externalAccountRequired"] is True
        kid, hmac_key = mint_eab_key(ca.db, spc=tb.ocn, pa_account=f"sp-{tb.ocn}")
        # no binding: our client says so before sending; a raw request gets externalAccountRequired
        client = AcmeClient(directory, ec.generate_private_key(ec.SECP256R1()), s)
        with pytest.raises(AcmeProblem, match="externalAccountRequired"):
            await client.register()
        acme = RawAcme(tb, s)
        new_account = acme.url("new-account")
        status, _h, body = await acme.post(new_account, {"termsOfServiceAgreed": True}, use_jwk=True)
        assert status == 400 and body["type"] == ERR + "externalAccountRequired"
        key = ec.generate_private_key(ec.SECP256R1())
        raw_key = eab_hmac_key(hmac_key)
        bad = {
            "unknown kid": make_eab("kid-nope", raw_key, jwk_of(acme.key), new_account),
            "wrong MAC": make_eab(kid, b"x" * 32, jwk_of(acme.key), new_account),
            "url": make_eab(kid, raw_key, jwk_of(acme.key), acme.url("new-order")),
            "payload key": make_eab(kid, raw_key, jwk_of(key), new_account),
        }
        for what, eab in bad.items():
            status, _h, body = await acme.post(new_account, {"termsOfServiceAgreed": True, "externalAccountBinding": eab}, use_jwk=True)
            assert status in (401, 403) and body["type"] == ERR + "unauthorized", (what, body)
        status, _h, body = await acme.post(
            new_account, {"termsOfServiceAgreed": True, "externalAccountBinding": {"protected": "e30", "payload": "e30", "signature": ""}},
            use_jwk=True,
        )
        assert status == 400 and body["type"] == ERR + "malformed" and "HS256" in body["detail"]
        # the good binding, through our client; the kid is then used
        client = AcmeClient(directory, key, s)
        await client.register(eab=(kid, hmac_key))
        assert ca.db.ca_eab_key(kid).account_id is not None  # type: ignore[union-attr]
        other = AcmeClient(directory, ec.generate_private_key(ec.SECP256R1()), s)
        with pytest.raises(AcmeProblem, match="already used"):
            await other.register(eab=(kid, hmac_key))
        # the account is bound to its SPC
        with pytest.raises(AcmeProblem, match="rejectedIdentifier"):
            await client.new_order(TNAuthList.for_spc("5678"))
        _url, order = await client.new_order(TNAuthList.for_spc(tb.ocn))
        assert order.status == "pending"
