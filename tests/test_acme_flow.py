"""End-to-end ACME over loopback HTTPS: STI-PA SPC token -> STI-CA (RFC 8555 + RFC 9448
tkauth-01) -> STI-CR, with the ATIS-1000080 profile checked on what was issued."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from stirshaken.core import certificates as certs
from stirshaken.pki.enrollment import AcmeConfig, current_certificate, ensure_certificate, obtain_certificate
from stirshaken.core.tnauthlist import TNAuthList, from_certificate

from tests.test_pki_support import ERR, RawAcme, running_testbed, session_for


async def test_full_flow_profile_and_cr(tmp_path: Path) -> None:
    async with running_testbed(tmp_path) as tb:
        st = await obtain_certificate(tb.acme_config("sp"))
        assert st.renewed and st.x5u and st.x5u.startswith(tb.urls["cr"])
        chain = certs.load_certificates(st.chain_path.read_bytes())
        leaf, inter = chain
        assert certs.check_profile(leaf, "sp", issuer=inter) == []
        assert certs.check_profile(inter, "intermediate", issuer=tb.ca.keys.root) == []  # type: ignore[union-attr]
        assert certs.check_profile(tb.ca.keys.root, "root") == []  # type: ignore[union-attr]
        tn = from_certificate(leaf)
        assert tn is not None and tn[0] == TNAuthList.for_spc("1234") and tn[1] is False
        dp = leaf.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS).value[0]
        assert dp.full_name[0].value == tb.pa.crl_url  # type: ignore[union-attr]
        assert dp.crl_issuer == [x509.DirectoryName(tb.pa.crl_issuer)]  # type: ignore[union-attr]
        assert oct(st.key_path.stat().st_mode & 0o777) == "0o600"
        assert oct((tb.state_dir / "sp" / "account.key").stat().st_mode & 0o777) == "0o600"
        # the chain validates to the STI-CA root
        certs.TrustStore([tb.ca.keys.root]).validate(chain)  # type: ignore[union-attr]
        # STI-CR: CR-01..CR-03
        async with session_for(tb) as s:
            async with s.get(st.x5u, allow_redirects=False) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "application/pem-certificate-chain"
                cc = r.headers["Cache-Control"]
                assert "max-age=" in cc and int(cc.split("max-age=")[1].split(",")[0]) >= 86400
                assert "no-cache" not in cc and "private" not in cc
                assert certs.load_certificates(await r.read()) == chain


async def test_base64_identifier_and_sp_upload(tmp_path: Path) -> None:
    """AC-02: standard base64 identifiers work; without CA publication the SP PUTs to the CR."""
    async with running_testbed(tmp_path) as tb:
        tb.ca.publisher = None  # type: ignore[union-attr]
        cfg = tb.acme_config("sp")
        cfg.identifier_encoding = "base64"
        st = await obtain_certificate(cfg)
        assert st.x5u == f"{tb.urls['cr']}/1234-{st.serial:x}.pem"
        async with session_for(tb) as s:
            async with s.get(st.x5u) as r:
                assert r.status == 200
            # unauthenticated or wrong-token uploads are refused
            async with s.put(tb.urls["cr"] + "/evil.pem", data=st.chain_path.read_bytes()) as r:
                assert r.status == 401
            async with s.put(tb.urls["cr"] + "/evil.pem", data=st.chain_path.read_bytes(), headers={"Authorization": "Bearer nope"}) as r:
                assert r.status == 401
            async with s.put(tb.urls["cr"] + "/x.pem", data=b"junk", headers={"Authorization": f"Bearer {tb.cr_token}"}) as r:
                assert r.status == 400
            async with s.get(tb.urls["cr"] + "/missing.pem") as r:
                assert r.status == 404


async def test_renewal(tmp_path: Path) -> None:
    """AC-05: nothing happens while the certificate is fresh; renewal inside the window."""
    async with running_testbed(tmp_path) as tb:
        cfg = tb.acme_config("sp")
        first = await ensure_certificate(cfg, renew_before_days=30)
        assert first.renewed
        again = await ensure_certificate(cfg, renew_before_days=30)
        assert not again.renewed and again.serial == first.serial
        renewed = await ensure_certificate(cfg, renew_before_days=400)
        assert renewed.renewed and renewed.serial != first.serial
        cur = current_certificate(cfg.state_dir)
        assert cur is not None and cur.serial == renewed.serial


async def test_headers_on_every_response(tmp_path: Path) -> None:
    """RFC 8555 §6.5 Replay-Nonce and Link rel=index everywhere, §6.7 problem documents."""
    async with running_testbed(tmp_path) as tb:
        async with session_for(tb) as s:
            acme = RawAcme(tb, s)
            async with s.get(acme.url("directory")) as r:
                d = await r.json()
                assert r.headers["Replay-Nonce"] and 'rel="index"' in r.headers["Link"]
                assert set(d) >= {"newNonce", "newAccount", "newOrder", "revokeCert"}
            async with s.get(acme.url("new-nonce")) as r:
                assert r.status == 204 and r.headers["Replay-Nonce"] and r.headers["Cache-Control"] == "no-store"
            async with s.get(acme.url("nowhere")) as r:
                assert r.status == 404 and r.headers["Content-Type"] == "application/problem+json"
                assert (await r.json())["type"] == ERR + "malformed" and r.headers["Replay-Nonce"]
            status, headers, body = await acme.raw(acme.url("new-order"), b"{not json")
            assert status == 400 and body["type"] == ERR + "malformed" and "Traceback" not in str(body)
            assert headers["Content-Type"] == "application/problem+json" and headers["Replay-Nonce"]
            await acme.register()
            order_url, order = await acme.new_order()
            assert order["status"] == "pending" and order["identifiers"][0]["type"] == "TNAuthList"
            status, headers, authz = await acme.post(order["authorizations"][0])
            ch = authz["challenges"][0]
            assert ch["type"] == "tkauth-01" and ch["tkauth-type"] == "atc" and ch["token-authority"] == tb.urls["pa"]
            assert ch["token"] and ch["url"].startswith(tb.urls["ca"])
            assert headers.get("Retry-After")


async def test_not_after_and_revocation_reaches_crl(tmp_path: Path) -> None:
    async with running_testbed(tmp_path) as tb:
        cfg = tb.acme_config("sp")
        cfg.days = 30
        st = await obtain_certificate(cfg)
        assert st.not_after - dt.datetime.now(dt.timezone.utc) < dt.timedelta(days=31)
        await tb.revoke_via_acme("sp")
        async with session_for(tb) as s:
            async with s.get(tb.pa.crl_url) as r:  # type: ignore[union-attr]
                crl = x509.load_der_x509_crl(await r.read())
        assert crl.issuer == tb.pa.crl_issuer  # type: ignore[union-attr]
        assert crl.get_revoked_certificate_by_serial_number(st.serial) is not None
        assert crl.is_signature_valid(tb.pa.keys.crl_cert.public_key())  # type: ignore[union-attr]
        with pytest.raises(Exception) as exc:
            await tb.revoke_via_acme("sp")
        assert "alreadyRevoked" in str(exc.value)


async def test_cli_acme_unreachable_is_one_line(tmp_path: Path) -> None:
    """The client reports failures as exceptions the CLI turns into one line."""
    cfg = AcmeConfig(directory_url="https://127.0.0.1:1/acme/directory", pa_url="https://127.0.0.1:1", ocn="1234",
                     username="u", password="p", state_dir=tmp_path / "sp")
    with pytest.raises((aiohttp.ClientError, OSError)):
        await obtain_certificate(cfg)
