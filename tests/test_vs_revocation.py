"""Revocation and trust sources of the STI-VS against real loopback servers (docs/requirements.md
VS-10): CRLs fetched under their own rules (http allowed, address rules kept), only for chains
that validate, within the request's fetch budget; distribution points forgotten when unused;
every trust problem a warning check (``crl_policy = "soft"``) or 437 (``"hard"``) and a
``trust_problems`` line; the trust sources read again, all or nothing."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from stirshaken.core.certificates import create_crl, create_intermediate  # noqa: E402
from stirshaken.vs.credentials import TrustReloadError  # noqa: E402
from stirshaken.vs.crl import CRLStore  # noqa: E402
from stirshaken.core.errors import FetchError  # noqa: E402
from stirshaken.vs.verifier import CallInfo, Verifier, VerifierConfig  # noqa: E402
from stirshaken.vs.x5u import check_url  # noqa: E402

from tests.test_vs_support import DEST, ORIG, Repo, crl_der, make_pki, revoke_crl  # noqa: E402


def call_for(identity: str | list[str]) -> CallInfo:
    ids = [identity] if isinstance(identity, str) else identity
    return CallInfo(identities=ids, from_=f"<sip:+{ORIG}@as.example>;tag=1", to=f"<sip:{DEST}@vs.example>")


def ident(pki, x5u: str, key=None) -> str:  # type: ignore[no-untyped-def]
    return pki.signer(x5u, key).identity(orig=ORIG, dest=[DEST], attest="A")


@pytest.fixture
async def repo():
    r = Repo()
    await r.start()
    yield r
    await r.stop()


def dp_pki(tmp: Path, crl_url: str):  # type: ignore[no-untyped-def]
    """Root → intermediate → SP whose SP certificate names ``crl_url`` (the intermediate's CRL)."""
    pki = make_pki(tmp)
    pki.sp_key, pki.sp = pki.sp_cert(crl_url=crl_url)
    return pki


def config(pki, **kw) -> VerifierConfig:  # type: ignore[no-untyped-def]
    base = dict(trust_anchors=[str(pki.dir / "root.pem")], allow_private_x5u=True, allow_http_x5u=True)
    base.update(kw)
    return VerifierConfig(**base)  # type: ignore[arg-type]


# --- fetch rules -----------------------------------------------------------------------------------


async def test_http_distribution_point_is_fetched_without_allow_http_x5u(tmp_path: Path, repo: Repo) -> None:
    """A CRL is signed: its http distribution point is fetched although x5u must be https."""
    crl_url = repo.url("/files/inter.crl")
    pki = dp_pki(tmp_path / "pki", crl_url)
    key, revoked = pki.sp_cert(crl_url=crl_url)
    repo.files["inter.crl"] = (crl_der(revoke_crl(pki, revoked.serial_number)), "application/pkix-crl")
    x5u = "https://cr.example.net/revoked.pem"  # a static chain: nothing fetched for the x5u
    v = Verifier(config(pki, allow_http_x5u=False), static_chains={x5u: [revoked, pki.inter]})
    try:
        r = await v.averify(call_for(ident(pki, x5u, key)))
        assert r.sip_code == 437 and r.verstat == "TN-Validation-Failed", r.description
        assert "is revoked by the CRL of CN=" in (r.description or "")
        assert repo.hits["/files/inter.crl"] == 1
    finally:
        await v.aclose()


async def test_address_rules_still_apply_to_crls(tmp_path: Path, repo: Repo) -> None:
    """Without allow_private_x5u a loopback distribution point is refused; the result says why
    (soft) or is 437 (hard), and the refused address is never connected to."""
    crl_url = repo.url("/files/inter.crl")
    pki = dp_pki(tmp_path / "pki", crl_url)
    repo.files["inter.crl"] = (crl_der(revoke_crl(pki)), "application/pkix-crl")
    x5u = "https://cr.example.net/sp.pem"
    for policy in ("soft", "hard"):
        v = Verifier(config(pki, allow_private_x5u=False, crl_policy=policy), static_chains={x5u: [pki.sp, pki.inter]})
        try:
            r = await v.averify(call_for(ident(pki, x5u)))
            why = f"its CRL {crl_url} is unavailable (CRL {crl_url} refused: port {repo.port} is not 443 or 8443 (or 80 for http) (allow with"
            if policy == "soft":
                assert r.ok and any(why in w for w in r.warnings), r.warnings
                assert any(c.name == "warning" and why in c.detail for p in r.passports for c in p.checks)
            else:
                assert r.sip_code == 437 and "revocation status cannot be established (crl_policy hard)" in (r.description or "")
                assert why in (r.description or "")
            assert any(f"CRL {crl_url} unavailable" in p for p in v.trust_problems())
        finally:
            await v.aclose()
    assert "/files/inter.crl" not in repo.hits
    # the same rules as x5u, but http allowed
    policy = config(pki, allow_private_x5u=False).crl_fetch_policy()
    check_url("http://crl.example.net/shaken.crl", policy, what="CRL")
    for url, why in (("http://127.0.0.1/shaken.crl", r"CRL http://127\.0\.0\.1/shaken\.crl refused: host 127\.0\.0\.1 is a private, loopback or reserved address"),
                     ("http://10.0.0.1/shaken.crl", "private"), ("http://localhost/shaken.crl", "refused: host localhost is localhost"),
                     ("ftp://crl.example.net/shaken.crl", r"CRL ftp://crl\.example\.net/shaken\.crl refused: URL scheme 'ftp' is not http\(s\)")):
        with pytest.raises(FetchError, match=why):
            check_url(url, policy, what="CRL")
    with pytest.raises(FetchError, match=r"x5u http://crl\.example\.net/shaken\.crl refused: not https"):
        check_url("http://crl.example.net/shaken.crl", config(pki, allow_http_x5u=False).x5u_policy())


async def test_distribution_points_only_for_chains_that_validate(tmp_path: Path, repo: Repo) -> None:
    """A chain that does not reach a trust anchor names a distribution point: it is not fetched."""
    crl_url = repo.url("/files/other.crl")
    stranger = dp_pki(tmp_path / "stranger", crl_url)
    trusted = make_pki(tmp_path / "trusted")
    repo.files["stranger.pem"] = (stranger.chain_pem, "application/pem-certificate-chain")
    v = Verifier(config(trusted))
    try:
        r = await v.averify(call_for(ident(stranger, repo.url("/files/stranger.pem"))))
        assert r.sip_code == 437 and "Failed to authenticate CA" in (r.description or ""), r.description
        assert repo.hits.get("/files/stranger.pem") == 1 and "/files/other.crl" not in repo.hits
    finally:
        await v.aclose()


async def test_one_request_makes_at_most_max_fetches_per_request(tmp_path: Path, repo: Repo) -> None:
    """One 64 KB request with 140 Identity headers naming distinct x5u URLs (each chain naming a
    CRL distribution point) made 135 outbound fetches; now it makes max_fetches_per_request (4)."""
    crl_url = repo.url("/files/inter.crl")
    pki = dp_pki(tmp_path / "pki", crl_url)
    repo.files["inter.crl"] = (crl_der(revoke_crl(pki)), "application/pkix-crl")
    ids = []
    for i in range(140):
        repo.files[f"c{i}.pem"] = (pki.chain_pem, "application/pem-certificate-chain")
        ids.append(ident(pki, repo.url(f"/files/c{i}.pem")))
    assert sum(len(i) for i in ids) > 60_000
    cfg = config(pki)
    assert cfg.max_fetches_per_request == 4
    v = Verifier(cfg)
    try:
        r = await v.averify(call_for(ids))
        assert sum(repo.hits.values()) == 4, repo.hits
        limited = [p for p in r.passports if p.error is not None and "max_fetches_per_request" in p.error.description]
        assert len(limited) == 136 and all(p.error.sip_code == 436 for p in limited)  # type: ignore[union-attr]
        assert v.stats["fetches"] == 4 and v.stats["fetch_limit_hits"] > 0
        # the next request of a fetched x5u is served from the cache and fetches its CRL, once
        r = await v.averify(call_for(ids[0]))
        assert r.ok and not r.warnings, (r.description, r.warnings)
        assert repo.hits["/files/inter.crl"] == 1 and sum(repo.hits.values()) == 5
        # an x5u refused for the limit was not cached as a failure
        r = await v.averify(call_for(ids[139]))
        assert r.ok, r.description
    finally:
        await v.aclose()


async def test_unused_distribution_points_are_forgotten(tmp_path: Path, repo: Repo) -> None:
    crl_url = repo.url("/files/inter.crl")
    pki = dp_pki(tmp_path / "pki", crl_url)
    repo.files["inter.crl"] = (crl_der(revoke_crl(pki)), "application/pkix-crl")
    repo.files["sp.pem"] = (pki.chain_pem, "application/pem-certificate-chain")
    v = Verifier(config(pki, crl_unused_ttl=600))
    try:
        assert (await v.averify(call_for(ident(pki, repo.url("/files/sp.pem"))))).ok
        rec = v.crls.record(crl_url)
        assert rec is not None and not rec.configured and rec.last_used > 0
        assert v.crls.forget_unused(rec.last_used + 599) == []
        assert v.crls.forget_unused(rec.last_used + 600) == [crl_url]
        assert v.crls.record(crl_url) is None and v.crls.crls == ()
        # used again: fetched again
        assert (await v.averify(call_for(ident(pki, repo.url("/files/sp.pem"))))).ok
        assert repo.hits["/files/inter.crl"] == 2
    finally:
        await v.aclose()


def test_configured_crls_are_never_forgotten(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "inter.crl").write_bytes(crl_der(revoke_crl(pki)))
    store = CRLStore([str(tmp_path / "inter.crl")], unused_ttl=1.0)
    assert store.forget_unused(time.time() + 10_000) == [] and len(store.crls) == 1


# --- trust problems in results -------------------------------------------------------------------


async def test_crl_that_does_not_verify_is_named(tmp_path: Path, repo: Repo) -> None:
    """A CRL at the distribution point signed by neither the issuer nor a configured CRL signer
    (here a forged one under the intermediate's name) revokes nothing and says so."""
    crl_url = repo.url("/files/inter.crl")
    pki = dp_pki(tmp_path / "pki", crl_url)
    forger = ec.generate_private_key(ec.SECP256R1())
    forged = create_intermediate(forger, pki.root, pki.root_key)  # same subject name, other key
    repo.files["inter.crl"] = (crl_der(create_crl(forged, forger, [(pki.sp.serial_number, dt.datetime.now(dt.timezone.utc))])),
                               "application/pkix-crl")
    repo.files["sp.pem"] = (pki.chain_pem, "application/pem-certificate-chain")
    for policy, want in (("soft", None), ("hard", 437)):
        v = Verifier(config(pki, crl_policy=policy))
        try:
            r = await v.averify(call_for(ident(pki, repo.url("/files/sp.pem"))))
            text = " ".join(r.warnings) + (r.description or "")
            assert r.sip_code == want, r.description
            assert f"its CRL {crl_url} (issuer CN=" in text and "is not signed by the certificate's issuer nor by a configured CRL signer" in text
        finally:
            await v.aclose()


async def test_configured_crl_unavailable_marks_every_result(tmp_path: Path, repo: Repo) -> None:
    pki = make_pki(tmp_path / "pki")  # no distribution points
    repo.files["sp.pem"] = (pki.chain_pem, "application/pem-certificate-chain")
    missing = repo.url("/files/missing.crl")
    v = Verifier(config(pki, crls=[missing]))
    try:
        r = await v.averify(call_for(ident(pki, repo.url("/files/sp.pem"))))
        assert r.ok and r.warnings == (f"revocation status unknown: the configured CRL {missing} is unavailable "
                                       "(Failed to dereference CRL URI: HTTP 404)",), r.warnings
        assert v.trust_problems() == [f"CRL {missing} unavailable: Failed to dereference CRL URI: HTTP 404"]
    finally:
        await v.aclose()
    v = Verifier(config(pki, crls=[missing], crl_policy="hard"))
    try:
        r = await v.averify(call_for(ident(pki, repo.url("/files/sp.pem"))))
        assert r.sip_code == 437 and "the configured CRL" in (r.description or "")
    finally:
        await v.aclose()


def test_stale_crl_with_hard_policy_is_437(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "stale.crl").write_bytes(crl_der(create_crl(pki.inter, pki.inter_key, [], next_update=dt.timedelta(seconds=-30))))
    x5u = "https://cr.example.net/sp.pem"
    v = Verifier(config(pki, crls=[str(tmp_path / "stale.crl")], crl_policy="hard"), static_chains={x5u: [pki.sp, pki.inter]})
    try:
        r = v.verify(call_for(ident(pki, x5u)))
        assert r.sip_code == 437 and "is past its nextUpdate" in (r.description or ""), r.description
        assert any("is past its nextUpdate" in p for p in v.trust_problems())
    finally:
        v.close()


# --- reload ------------------------------------------------------------------------------------------


async def test_reload_reads_crl_files_again_all_or_nothing(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    crl = tmp_path / "inter.crl"
    crl.write_bytes(crl_der(revoke_crl(pki)))
    x5u = "https://cr.example.net/sp.pem"
    v = Verifier(config(pki, crls=[str(crl)]), static_chains={x5u: [pki.sp, pki.inter]})
    try:
        assert (await v.averify(call_for(ident(pki, x5u)))).ok
        crl.write_bytes(b"not a CRL")
        with pytest.raises(TrustReloadError) as ei:
            await v.areload_trust()
        assert ei.value.description.startswith(f"crls: {crl}: "), ei.value.description
        assert (await v.averify(call_for(ident(pki, x5u)))).ok  # the previous CRL stays
        crl.write_bytes(crl_der(revoke_crl(pki, pki.sp.serial_number)))
        summary = await v.areload_trust()
        assert summary["crls"] == 1 and summary["problems"] == []
        r = await v.averify(call_for(ident(pki, x5u)))
        assert r.sip_code == 437 and "revoked" in (r.description or "")
        # a trust anchor file that went bad: nothing changes
        (pki.dir / "root.pem").write_bytes(b"garbage")
        with pytest.raises(TrustReloadError):
            await v.areload_trust()
        assert (await v.averify(call_for(ident(pki, x5u)))).sip_code == 437
    finally:
        await v.aclose()


def test_anchors_given_as_objects_survive_a_reload(tmp_path: Path) -> None:
    from stirshaken.vs.trust import TrustManager

    pki = make_pki(tmp_path / "pki")
    tm = TrustManager(anchors=[pki.root])
    tm.install_files(tm.read_files())
    assert tm.anchors == (pki.root,)


def test_ca_list_past_its_exp_marks_the_chains_it_vouches_for(tmp_path: Path) -> None:
    """A CA list that could not be reloaded before its exp stays in use, and says so."""
    from stirshaken.core.errors import CertificateError
    from stirshaken.vs.trust import CAList, CAListError, TrustManager

    pki = make_pki(tmp_path / "pki")
    tm = TrustManager()
    exp = int(time.time()) - 60
    tm.set_ca_list(CAList(version="1.0", sequence=7, exp=exp, anchors=(pki.root,), signer=pki.root))
    tm.ca_list_source = "https://sti-pa.example/api/v1/ca-list"
    tm._ca_list_failed(CAListError("Failed to dereference CA list URI: HTTP 503"))
    cred = tm.validate([pki.sp, pki.inter])
    when = dt.datetime.fromtimestamp(exp, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    assert cred.warnings == (f"the STI-PA CA list is past its exp ({when}Z) and could not be reloaded: "
                             "Failed to dereference CA list URI: HTTP 503; its CAs are still trusted",)
    assert tm.problems(time.time()) == [
        "CA list https://sti-pa.example/api/v1/ca-list could not be loaded: Failed to dereference CA list URI: HTTP 503; "
        "the previous list (sequence 7) stays in use",
        f"CA list https://sti-pa.example/api/v1/ca-list is past its exp ({when}Z)",
    ]
    with pytest.raises(CertificateError):
        tm.validate([])
