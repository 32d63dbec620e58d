"""STI-VS against real loopback servers: x5u fetching rules, cache, CRLs, Redis, replay, concurrency."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding

from tests.test_vs_support import DEST, ORIG, Repo, ThreadedRepo, crl_der, make_pki, revoke_crl, tls_server_cert  # noqa: E402

from stirshaken.vs.cache import ttl_from_headers  # noqa: E402
from stirshaken.core.certificates import pem  # noqa: E402
from stirshaken.core.errors import FetchError  # noqa: E402
from stirshaken.vs.verifier import CallInfo, Verifier, VerifierConfig  # noqa: E402
from stirshaken.vs.x5u import BlockedAddressError, GuardedResolver, X5UPolicy, check_url  # noqa: E402


def call_for(identity: str, orig: str = ORIG) -> CallInfo:
    return CallInfo(identities=[identity], from_=f"<sip:+{orig}@as.example>;tag=1", to=f"<sip:{DEST}@vs.example>", ruri=f"sip:{DEST}@vs.example")


@pytest.fixture
def pki(tmp_path: Path):
    return make_pki(tmp_path / "pki")


@pytest.fixture
async def https_repo(tmp_path: Path):
    ctx, ca = tls_server_cert(tmp_path / "tls")
    repo = Repo()
    repo.ca_bundle = str(ca)  # type: ignore[attr-defined]
    yield repo, ctx
    await repo.stop()


def cfg(pki, **kw) -> VerifierConfig:
    base = dict(trust_anchors=[str(pki.dir / "root.pem")], allow_private_x5u=True)
    base.update(kw)
    return VerifierConfig(**base)  # type: ignore[arg-type]


# --- URL rules (pure) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("http://cr.example.net/sp.pem", "https"),
        ("https://cr.example.net:8080/sp.pem", "port 8080"),
        ("https://user:pw@cr.example.net/sp.pem", "userinfo"),
        ("https://cr.example.net/sp.pem?x=1", "query"),
        ("https://cr.example.net/sp.pem#frag", "fragment"),
        ("https://cr.example.net/sp.pem;type=a", "path parameters"),
        ("https://127.0.0.1/sp.pem", "private"),
        ("https://[::1]/sp.pem", "private"),
        ("https://10.1.2.3:8443/sp.pem", "private"),
        ("https://169.254.169.254/latest", "private"),
        ("https://localhost/sp.pem", "localhost"),
        ("ftp://cr.example.net/sp.pem", "scheme"),
        ("https://cr.example.net/sp pem", "whitespace"),
    ],
)
def test_check_url_refuses(url: str, fragment: str) -> None:
    with pytest.raises(FetchError) as ei:
        check_url(url, X5UPolicy())
    assert ei.value.sip_code == 436
    assert fragment in ei.value.description


def test_check_url_accepts_and_relaxations() -> None:
    check_url("https://cr.example.net/sp.pem")
    check_url("https://cr.example.net:8443/sp.pem")
    check_url("http://cr.example.net/sp.pem", X5UPolicy(allow_http=True))
    check_url("https://127.0.0.1:20001/sp.pem", X5UPolicy(allow_private=True))
    with pytest.raises(FetchError):  # allow_private does not allow http
        check_url("http://127.0.0.1:20001/sp.pem", X5UPolicy(allow_private=True))


async def test_resolver_filters_private_addresses() -> None:
    with pytest.raises(BlockedAddressError):
        await GuardedResolver(False).resolve("localhost", 443)
    res = await GuardedResolver(True).resolve("localhost", 443)
    assert any(r["host"] in ("127.0.0.1", "::1") for r in res)


def test_ttl_from_headers() -> None:
    now = 1_000_000.0
    assert ttl_from_headers({"Cache-Control": "max-age=3600"}, now) == 3600
    assert ttl_from_headers({"Cache-Control": "max-age=5"}, now) == 300  # floor
    assert ttl_from_headers({"Cache-Control": "max-age=999999"}, now) == 86400  # ceiling
    assert ttl_from_headers({}, now) == 86400  # no directive: 24 h (ATIS-1000074)
    assert ttl_from_headers({"Cache-Control": "no-store"}, now) == 300
    assert ttl_from_headers({"Cache-Control": "max-age=3600"}, now, not_after=now + 60) == 60
    assert ttl_from_headers({"Expires": "Thu, 01 Jan 1970 00:00:00 GMT"}, now) == 300
    assert ttl_from_headers({"Expires": "garbage"}, now) == 300


# --- the HTTPS certificate repository --------------------------------------------------------


async def test_https_repository_fetch_once_then_cache(pki, https_repo) -> None:
    repo, ctx = https_repo
    repo.static("/sp.pem", pki.chain_pem, headers={"Cache-Control": "max-age=3600"})
    await repo.start(ctx)
    x5u = repo.url("/sp.pem", host="localhost")
    v = Verifier(cfg(pki, x5u_ca_bundle=repo.ca_bundle))
    try:
        ident = pki.signer(x5u).identity(orig=ORIG, dest=[DEST], attest="A")
        r = await v.averify(call_for(ident))
        assert r.verstat == "TN-Validation-Passed" and r.attest == "A" and r.sip_code is None
        assert v.verify(call_for(ident)).ok  # sync on the same (running) loop: served from cache
        assert repo.hits["/sp.pem"] == 1 and v.stats["fetches"] == 1 and v.stats["cache_hits"] >= 1
        names = [c.name for c in r.checks]
        assert {"certificate", "signature", "orig-matches", "dest-matches", "iat-fresh"} <= set(names)
    finally:
        await v.aclose()


async def test_tls_certificate_not_trusted_without_bundle(pki, https_repo) -> None:
    repo, ctx = https_repo
    repo.static("/sp.pem", pki.chain_pem)
    await repo.start(ctx)
    v = Verifier(cfg(pki))  # no x5u_ca_bundle: the test CA is unknown
    try:
        r = await v.averify(call_for(pki.signer(repo.url("/sp.pem")).identity(orig=ORIG, dest=[DEST], attest="A")))
        assert r.sip_code == 436 and "TLS" in (r.description or "")
    finally:
        await v.aclose()


@pytest.mark.parametrize("ctype, der", [
    ("application/pem-certificate-chain", False),
    ("application/x-pem-file", False),
    ("application/pkix-cert", True),
    # types certificate repositories in the field serve a PEM chain with (issue 11 item 5)
    ("application/x-x509-cert", False),
    ("application/x-x509-ca-cert", False),
    ("binary/octet-stream", False),
    ("text/plain", False),
    ("application/x-x509-cert", True),
    ("binary/octet-stream", True),
])
async def test_content_types(pki, tmp_path, ctype: str, der: bool) -> None:
    repo = Repo()
    body = pki.sp.public_bytes(Encoding.DER) if der else pki.chain_pem
    repo.static("/c", body, content_type=ctype)
    await repo.start()
    (tmp_path / "inter.pem").write_bytes(pem([pki.inter]))
    # a DER body carries the leaf only: the intermediate is configured as an anchor for that case
    anchors = [str(pki.dir / "root.pem")] + ([str(tmp_path / "inter.pem")] if der else [])
    v = Verifier(cfg(pki, allow_http_x5u=True, trust_anchors=anchors))
    try:
        r = await v.averify(call_for(pki.signer(repo.url("/c")).identity(orig=ORIG, dest=[DEST], attest="A")))
        assert r.ok, r.description
    finally:
        await v.aclose()
        await repo.stop()


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(2.0)
    return web.Response(body=b"late", content_type="application/pem-certificate-chain")


async def _hang(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/pem-certificate-chain"})
    await resp.prepare(request)
    await resp.write(b"-----BEGIN CERTIFICATE-----\n")
    await asyncio.sleep(2.5)
    return resp


async def _big(request: web.Request) -> web.Response:
    return web.Response(body=b"A" * 200_000, content_type="application/pem-certificate-chain")


async def _big_chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/pem-certificate-chain"})
    await resp.prepare(request)
    for _ in range(20):
        await resp.write(b"B" * 10_000)
    return resp


async def _redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("/sp.pem")


async def test_failing_repositories(pki) -> None:
    repo = Repo()
    repo.static("/sp.pem", pki.chain_pem)
    repo.route("/slow", _slow)
    repo.route("/hang", _hang)
    repo.route("/big", _big)
    repo.route("/chunked", _big_chunked)
    repo.route("/redirect", _redirect)
    repo.static("/html", b"<html>hello</html>", content_type="text/html")
    repo.static("/garbage", b"not a certificate", content_type="application/pem-certificate-chain")
    repo.static("/empty", b"", content_type="application/x-pem-file")
    repo.static("/html-as-text", b"<html><body>Not found</body></html>", content_type="text/plain")
    await repo.start()
    v = Verifier(cfg(pki, allow_http_x5u=True, fetch_timeout=0.8, connect_timeout=0.5))
    expected = {
        "/slow": "timed out",
        "/hang": "timed out",
        "/big": "larger than",
        "/chunked": "larger than",
        "/redirect": "redirect not followed",
        "/html": "Content-Type",
        "/garbage": "no PEM certificate",
        "/empty": "x5u response is empty",
        "/html-as-text": "no PEM certificate",
        "/missing": "HTTP 404",
    }
    try:
        t0 = time.monotonic()
        calls = {p: call_for(pki.signer(repo.url(p)).identity(orig=ORIG, dest=[DEST], attest="A")) for p in expected}
        results = await asyncio.gather(*(v.averify(c) for c in calls.values()))
        assert time.monotonic() - t0 < 4
        for (path, fragment), r in zip(expected.items(), results):
            assert r.sip_code == 436 and r.reason == "Bad Identity Info", (path, r.description)
            assert fragment in (r.description or ""), (path, r.description)
            assert r.verstat == "No-TN-Validation"
        assert repo.hits.get("/sp.pem", 0) == 0  # the redirect target was never requested
        # negative caching: the 404 is not asked again within negative_ttl
        again = await v.averify(calls["/missing"])
        assert again.sip_code == 436 and v.stats["negative_hits"] >= 1 and v.stats["fetches"] == len(expected)
    finally:
        await v.aclose()
        await repo.stop()


async def test_unreachable_x5u(pki) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    v = Verifier(cfg(pki, allow_http_x5u=True))
    try:
        r = await v.averify(call_for(pki.signer(f"http://127.0.0.1:{port}/sp.pem").identity(orig=ORIG, dest=[DEST], attest="A")))
        assert r.sip_code == 436 and "cannot connect" in (r.description or "")
    finally:
        await v.aclose()


async def test_defaults_refuse_http_and_loopback(pki) -> None:
    repo = Repo()
    repo.static("/sp.pem", pki.chain_pem)
    await repo.start()
    v = Verifier(VerifierConfig(trust_anchors=[str(pki.dir / "root.pem")]))
    try:
        r = v.verify(call_for(pki.signer(repo.url("/sp.pem")).identity(orig=ORIG, dest=[DEST], attest="A")))
        assert r.sip_code == 436 and "https" in (r.description or "")
        r = v.verify(call_for(pki.signer(f"https://127.0.0.1:443/sp.pem").identity(orig=ORIG, dest=[DEST], attest="A")))
        assert r.sip_code == 436 and "private" in (r.description or "")
        assert repo.hits == {}
    finally:
        await v.aclose()
        await repo.stop()


# --- certificates: expired, revoked via CRL distribution point ------------------------------


async def test_expired_certificate(pki) -> None:
    import datetime as dt

    key, cert = pki.sp_cert(not_before=dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
                            not_after=dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc))
    repo = Repo()
    repo.static("/old.pem", pem([cert, pki.inter]))
    await repo.start()
    v = Verifier(cfg(pki, allow_http_x5u=True))
    try:
        r = await v.averify(call_for(pki.signer(repo.url("/old.pem"), key).identity(orig=ORIG, dest=[DEST], attest="A")))
        assert r.sip_code == 437 and r.verstat == "TN-Validation-Failed" and "expired" in (r.description or "")
    finally:
        await v.aclose()
        await repo.stop()


async def test_revoked_by_crl_from_distribution_point(tmp_path) -> None:
    repo = Repo()
    await repo.start()
    crl_url = repo.url("/files/inter.crl")
    pki = make_pki(tmp_path / "pki", crl_url=crl_url)
    key, revoked = pki.sp_cert(crl_url=crl_url)
    repo.files["inter.crl"] = (crl_der(revoke_crl(pki, revoked.serial_number)), "application/pkix-crl")
    repo.files["good.pem"] = (pki.chain_pem, "application/pem-certificate-chain")
    repo.files["revoked.pem"] = (pem([revoked, pki.inter]), "application/pem-certificate-chain")
    v = Verifier(cfg(pki, allow_http_x5u=True))
    try:
        good = await v.averify(call_for(pki.signer(repo.url("/files/good.pem")).identity(orig=ORIG, dest=[DEST], attest="A")))
        assert good.ok, good.description
        bad = await v.averify(call_for(pki.signer(repo.url("/files/revoked.pem"), key).identity(orig=ORIG, dest=[DEST], attest="A")))
        assert bad.sip_code == 437 and bad.verstat == "TN-Validation-Failed" and "revoked" in (bad.description or "")
        assert repo.hits["/files/inter.crl"] == 1 and v.stats["crl_fetches"] == 1  # CRL fetched once, cached
        # without distribution-point fetching the revocation is not seen (documented trade-off),
        # and the result says so (docs/requirements.md VS-10)
        v2 = Verifier(cfg(pki, allow_http_x5u=True, fetch_crl_distribution_points=False))
        r2 = await v2.averify(call_for(pki.signer(repo.url("/files/revoked.pem"), key).identity(orig=ORIG, dest=[DEST], attest="A")))
        assert r2.ok
        assert any(f"CRL {crl_url} is not configured and distribution points are not fetched" in w for w in r2.warnings), r2.warnings
        await v2.aclose()
    finally:
        await v.aclose()
        await repo.stop()


async def test_crl_file_and_url_config(tmp_path) -> None:
    pki = make_pki(tmp_path / "pki")
    key, revoked = pki.sp_cert()
    (tmp_path / "inter.crl").write_bytes(crl_der(revoke_crl(pki, revoked.serial_number)))
    repo = Repo()
    repo.static("/revoked.pem", pem([revoked, pki.inter]))
    repo.static("/list.crl", crl_der(revoke_crl(pki, revoked.serial_number)), content_type="application/pkix-crl")
    await repo.start()
    ident = pki.signer(repo.url("/revoked.pem"), key).identity(orig=ORIG, dest=[DEST], attest="A")
    for crls in ([str(tmp_path / "inter.crl")], [repo.url("/list.crl")]):
        v = Verifier(cfg(pki, allow_http_x5u=True, crls=crls))
        try:
            r = await v.averify(call_for(ident))
            assert r.sip_code == 437 and "revoked" in (r.description or ""), crls
        finally:
            await v.aclose()
    await repo.stop()


# --- single flight, sync entry point --------------------------------------------------------


async def test_concurrent_verifications_fetch_once(pki) -> None:
    repo = Repo()

    async def slowish(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(body=pki.chain_pem, content_type="application/pem-certificate-chain")

    repo.route("/sp.pem", slowish)
    await repo.start()
    v = Verifier(cfg(pki, allow_http_x5u=True))
    try:
        signer = pki.signer(repo.url("/sp.pem"))
        calls = [call_for(signer.identity(orig=ORIG, dest=[DEST], attest="A", origid=str(uuid.uuid4()))) for _ in range(100)]
        results = await asyncio.gather(*(v.averify(c) for c in calls))
        assert all(r.ok for r in results)
        assert repo.hits["/sp.pem"] == 1 and v.stats["fetches"] == 1
    finally:
        await v.aclose()
        await repo.stop()


def test_sync_verify_threads_and_no_loop(pki) -> None:
    import concurrent.futures

    repo = Repo()

    async def slowish(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(body=pki.chain_pem, content_type="application/pem-certificate-chain")

    repo.route("/sp.pem", slowish)
    tr = ThreadedRepo(repo)
    v = Verifier(cfg(pki, allow_http_x5u=True))
    try:
        signer = pki.signer(repo.url("/sp.pem"))
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            results = list(ex.map(lambda _: v.verify(call_for(signer.identity(orig=ORIG, dest=[DEST], attest="A"))), range(16)))
        assert all(r.ok for r in results) and repo.hits["/sp.pem"] == 1
    finally:
        v.close()
        tr.stop()


# --- Redis: shared cache, Redis down, replay -------------------------------------------------


async def test_redis_shared_cache_two_nodes(pki) -> None:
    repo = Repo()
    repo.static("/sp.pem", pki.chain_pem, headers={"Cache-Control": "max-age=600"})
    await repo.start()
    prefix = f"vs-test-{uuid.uuid4().hex[:8]}:"
    nodes = [Verifier(cfg(pki, allow_http_x5u=True, redis="redis://127.0.0.1:6379/0")) for _ in range(2)]
    for n in nodes:
        n.redis_prefix = prefix
    try:
        ident = pki.signer(repo.url("/sp.pem")).identity(orig=ORIG, dest=[DEST], attest="A")
        assert (await nodes[0].averify(call_for(ident))).ok
        assert (await nodes[1].averify(call_for(ident))).ok
        assert repo.hits["/sp.pem"] == 1
        assert nodes[0].stats["fetches"] == 1 and nodes[1].stats["fetches"] == 0 and nodes[1].stats["redis_hits"] == 1
    finally:
        for n in nodes:
            await n.aclose()
        await repo.stop()


async def test_redis_down_still_verifies(pki) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    repo = Repo()
    repo.static("/a.pem", pki.chain_pem)
    repo.static("/b.pem", pki.chain_pem)
    await repo.start()
    v = Verifier(cfg(pki, allow_http_x5u=True, redis=f"redis://127.0.0.1:{dead}/0", replay_detection=True))
    try:
        t0 = time.monotonic()
        for path in ("/a.pem", "/b.pem"):
            r = await v.averify(call_for(pki.signer(repo.url(path)).identity(orig=ORIG, dest=[DEST], attest="A")))
            assert r.ok, r.description
        assert time.monotonic() - t0 < 2.0
        assert v.stats["redis_errors"] == 1  # the breaker stops asking a dead Redis on every call
        # replay detection falls back to this node's memory
        ident = pki.signer(repo.url("/a.pem")).identity(orig=ORIG, dest=[DEST], attest="A")
        assert (await v.averify(call_for(ident))).ok
        r = await v.averify(call_for(ident))
        assert r.sip_code == 438 and "replay" in (r.description or "")
    finally:
        await v.aclose()
        await repo.stop()


async def test_replay_memory_and_redis(pki) -> None:
    url = "https://cr.example.net/sp.pem"
    chains = {url: [pki.sp, pki.inter]}
    ident = pki.signer(url).identity(orig=ORIG, dest=[DEST], attest="A")
    v = Verifier(cfg(pki, replay_detection=True), static_chains=chains)
    assert v.verify(call_for(ident)).ok
    r = v.verify(call_for(ident))
    assert r.sip_code == 438 and r.reason == "Invalid Identity Header" and "replay" in (r.description or "")
    assert v.stats["replays"] == 1
    other = pki.signer(url).identity(orig=ORIG, dest=[DEST], attest="A")
    assert v.verify(call_for(other)).ok  # a different PASSporT is fine
    v.close()
    prefix = f"vs-replay-{uuid.uuid4().hex[:8]}:"
    nodes = [Verifier(cfg(pki, replay_detection=True, redis="redis://127.0.0.1:6379/0"), static_chains=chains) for _ in range(2)]
    for n in nodes:
        n.redis_prefix = prefix
    try:
        ident2 = pki.signer(url).identity(orig=ORIG, dest=[DEST], attest="A")
        assert (await nodes[0].averify(call_for(ident2))).ok
        r = await nodes[1].averify(call_for(ident2))
        assert r.sip_code == 438 and "replay" in (r.description or "")
    finally:
        for n in nodes:
            await n.aclose()
