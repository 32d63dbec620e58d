"""TN inventory and Do-Not-Originate (serve/inventory/*, ``stirshaken tn|dno``, ``[inventory]``).

* in process: A/B/C for each way of recognising a customer and each kind of number, per-customer
  overrides, DNO at signing (refused / signed C) and at verification (marked / 603), malformed
  import files (line numbers, nothing imported), 100k TNs, live changes through the change log;
* real processes: ``stirshaken serve`` with two workers on SQLite sees a CLI change and an admin
  API change in every worker within 2 s, keeps its state across a restart; two nodes on the real
  PostgreSQL (127.0.0.1:5432) see a change within 2 s (LISTEN/NOTIFY).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stirshaken.serve.config import InventoryConfig, parse_config
from stirshaken.serve.inventory.index import InventoryIndex, LiveInventory, tn_key
from stirshaken.serve.inventory.runtime import InventoryRuntime
from stirshaken.serve.inventory.store import ImportProblems, InventoryError, InventoryStore, InventoryWatcher
from stirshaken.serve.metrics import Metrics
from stirshaken.serve.signing import DnoRefused, SigningService
from stirshaken.serve.sip import SipService

from tests.test_pki_support import postgres_database
from tests.test_serve_support import STIRSHAKEN, FileServer, ServeProcess, make_pki, serve_port, serve_toml
from tests.test_sip_service import answer, claims, invite, resp

X5U = "https://cr.example.net/sp-chain.pem"
ACME_TN, ACME_RANGE_TN, BOB_TN, NOBODY_TN, DNO_TN = "12155551212", "13035550042", "14155550000", "16175550000", "12155559999"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_pki(tmp_path_factory.mktemp("invpki"))


def fill(st: InventoryStore) -> None:
    """acme: by source 10.1.0.0/16, header trunk-acme, REST token tok-acme; bob: by source
    10.2.0.0/16; gw: a gateway (C/C) by header; tenant-only: every call of tenant "other";
    picky: B for its own numbers (override)."""
    st.put_customer("acme", sources=["10.1.0.0/16"], headers=["trunk-acme"], credentials=["tok-acme"])
    st.put_customer("bob", sources=["10.2.0.0/16"])
    st.put_customer("gw", headers=["gw-trunk"], own="C", other="C")
    st.put_customer("tenantwide", tenants=["other"], tenant="other")
    st.put_customer("picky", headers=["picky"], own="B", other="C")
    st.import_tns([f"{ACME_TN},acme\n", "13035550000-13035550099,acme\n", f"{BOB_TN},bob\n", "19995550000,tenantwide\n",
                   "12125550000,picky\n"])
    st.import_dno([f"{DNO_TN}\n"], source="itg", listed="2026-11-01")


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[InventoryStore]:
    st = InventoryStore(str(tmp_path / "inv.db"))
    fill(st)
    yield st
    st.close()


def signing(pki: Any, live: LiveInventory | None, **inv: Any) -> SigningService:
    c = parse_config(tomllib.loads(f"""
[server]
sip_signing = "127.0.0.1:5060"
[signing]
key = "sp.key"
x5u = "{X5U}"
customer_header = "X-Trunk"
[[signing.tenant]]
name = "other"
key = "sp2.key"
x5u = "{X5U}"
tns = ["1999"]
"""), pki.dir)
    return SigningService(c.signing, inventory=live, inventory_cfg=InventoryConfig(**inv))


# --- attestation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("how, tn, tenant, want", [
    ({"source_ip": "10.1.2.3"}, ACME_TN, None, "A"),  # source network, its own TN
    ({"source_ip": "10.1.2.3"}, ACME_RANGE_TN, None, "A"),  # ... a TN of its range
    ({"source_ip": "10.1.2.3"}, BOB_TN, None, "B"),  # ... another customer's TN
    ({"source_ip": "10.1.2.3"}, NOBODY_TN, None, "B"),  # ... a TN nobody holds
    ({"source_ip": "10.2.0.9"}, BOB_TN, None, "A"),
    ({"source_ip": "10.2.0.9"}, ACME_TN, None, "B"),
    ({"customer": "TRUNK-acme"}, ACME_TN, None, "A"),  # trunk header (case-insensitive)
    ({"customer": "trunk-acme"}, BOB_TN, None, "B"),
    ({"credential": "tok-acme"}, ACME_RANGE_TN, None, "A"),  # REST bearer credential
    ({"credential": "wrong"}, ACME_TN, None, "C"),
    ({"customer": "gw-trunk"}, ACME_TN, None, "C"),  # gateway customer: C/C
    ({"customer": "picky"}, "12125550000", None, "B"),  # per-customer override of "own"
    ({"customer": "picky"}, ACME_TN, None, "C"),  # ... and of "other"
    ({}, "19995550000", "other", "A"),  # every call of tenant "other" is tenantwide's
    ({}, ACME_TN, "other", "B"),
    ({"source_ip": "192.0.2.1"}, ACME_TN, None, "C"),  # unknown source: gateway C
    ({}, ACME_TN, None, "C"),
])
def test_attestation_from_the_inventory(pki: Any, store: InventoryStore, how: dict[str, str], tn: str, tenant: str | None, want: str) -> None:
    svc = signing(pki, LiveInventory(store.load_index()))
    t = svc.tenant_for(tn, tenant)
    assert svc.decide(t, tn, **how) == want


def test_tenant_bound_customer_is_unknown_for_other_tenants(pki: Any, store: InventoryStore) -> None:
    store.put_customer("bound", headers=["bound"], tenant="other")
    store.add_tn("16175550001", "bound")
    svc = signing(pki, LiveInventory(store.load_index()))
    assert svc.decide(svc.by_name["other"], "16175550001", customer="bound") == "A"
    assert svc.decide(svc.by_name["default"], "16175550001", customer="bound") == "C"


def test_caller_stated_level(pki: Any, store: InventoryStore) -> None:
    live = LiveInventory(store.load_index())
    t = signing(pki, live).default
    assert t is not None
    assert signing(pki, live).decide(t, BOB_TN, requested="A", source_ip="10.1.0.1") == "B"  # lower (default)
    assert signing(pki, live).decide(t, ACME_TN, requested="B", source_ip="10.1.0.1") == "B"
    assert signing(pki, live, caller_attest="caller").decide(t, BOB_TN, requested="A", source_ip="10.1.0.1") == "A"
    assert signing(pki, live, caller_attest="inventory").decide(t, ACME_TN, requested="C", source_ip="10.1.0.1") == "A"
    # without an inventory: unchanged (the caller's level, else the [signing] customers)
    assert signing(pki, None).decide(t, ACME_TN, requested="B") == "B"
    assert signing(pki, None).decide(t, ACME_TN) == "C"


@pytest.mark.parametrize("auth, want", [
    ("Bearer tok-acme", "A"), ("bearer  tok-acme ", "A"), ("BEARER tok-acme", "A"),  # RFC 6750 §2.1; the scheme is case-insensitive
    ("Bearer wrong", "C"), ("Basic dG9rLWFjbWU6", "C"), ("Bearer", "C"), ("BearerXtok-acme", "C"), ("", "C"), (None, "C"),  # no known bearer credential: unknown
])
def test_rest_bearer_credential_is_remembered_with_the_same_answer(pki: Any, store: InventoryStore, auth: str | None, want: str) -> None:
    """The REST caller's bearer credential recognises its customer; the header value is parsed
    once (RestAPI's BearerTokens) and the recognition remembered per index: asked again, the
    same level."""
    from stirshaken.serve.rest import SIGNING_PATH, RestAPI

    api = RestAPI(signing=signing(pki, LiveInventory(store.load_index())), verifier=None, metrics=Metrics())
    headers = {"content-type": "application/json"} | ({"authorization": auth} if auth is not None else {})
    for _ in range(3):
        body = json.dumps({"signingRequest": {"attest": "A", "orig": {"tn": ACME_TN}, "dest": {"tn": ["12155551213"]},
                                              "iat": int(time.time())}}).encode()
        status, out, _ = api.handle("POST", SIGNING_PATH, headers, body, True)  # type: ignore[misc]
        assert status == 200, out
        p = json.loads(out)["signingResponse"]["identity"].split(";")[0].split(".")[1]
        assert json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))["attest"] == want


def test_remembered_recognition_does_not_outlive_a_customer_change(pki: Any, store: InventoryStore) -> None:
    """SigningService.decide remembers the customer of a recognition per index: a customer change
    (a new index through the watcher's refresh, or a full load) is seen at once."""
    live = LiveInventory(store.load_index())
    svc = signing(pki, live)
    t = svc.default
    assert t is not None
    assert svc.decide(t, BOB_TN, credential="tok-bob") == "C"
    store.put_customer("bob", sources=["10.2.0.0/16"], credentials=["tok-bob"])
    got = store.refresh(live.index)
    assert got is not None
    live.swap(got[0], full=got[1])
    assert svc.decide(t, BOB_TN, credential="tok-bob") == "A"
    assert svc.decide(t, ACME_TN, credential="tok-bob") == "B"
    store.put_customer("bob", sources=["10.2.0.0/16"])  # the credential withdrawn
    live.swap(store.load_index(), full=True)
    assert svc.decide(t, BOB_TN, credential="tok-bob") == "C"


def test_remembered_recognitions_are_bounded(pki: Any, store: InventoryStore) -> None:
    """At most 4,096 recognitions per service and index (then the memo starts again), each new
    caller counted rather than the memo summed; answers unchanged past the bound."""
    live = LiveInventory(store.load_index())
    svc = signing(pki, live)
    t = svc.default
    assert t is not None
    for i in range(5000):  # 5,000 distinct sources, none a customer's
        assert svc.decide(t, BOB_TN, source_ip=f"192.0.{i // 250}.{i % 250}") == "C"
    memo = live.index._seen[svc]
    assert sum(len(by_who) for by_level in memo.values() for by_who in by_level.values()) == live.index._seen_n[svc] <= 4096
    assert svc.decide(t, BOB_TN, credential="tok-bob") == "C"


def test_bearer_tokens_are_bounded() -> None:
    from stirshaken.serve.rest import BearerTokens

    tokens = BearerTokens()
    assert [tokens[f"Bearer t{i}"] for i in range(5000)][-1] == "t4999" and len(tokens) <= 4096
    assert tokens["Basic x"] is None and tokens[""] is None and tokens["bearer  x "] == "x"


def test_dno_at_signing_never_a_or_b(pki: Any, store: InventoryStore) -> None:
    live = LiveInventory(store.load_index())
    svc = signing(pki, live)
    t = svc.default
    assert t is not None
    store.add_tn(DNO_TN, "acme")  # even the customer's own number, even when the caller says A
    live.index = store.load_index()
    with pytest.raises(DnoRefused, match="Do-Not-Originate"):
        svc.decide(t, DNO_TN, requested="A", source_ip="10.1.0.1")
    assert live.dno_refused == 1
    svc = signing(pki, live, dno_signing="sign-c", caller_attest="caller")
    assert svc.decide(t, DNO_TN, requested="A", source_ip="10.1.0.1") == "C"
    assert live.dno_downgraded == 1 and live.stats()["inventory_dno_signed_c"] == 1


async def test_dno_over_sip_signing_and_verification(pki: Any, store: InventoryStore) -> None:
    from stirshaken.core.certificates import load_certificates
    from stirshaken.vs.verifier import CallInfo, Verifier, VerifierConfig

    rt = InventoryRuntime(InventoryConfig(database=store.url.removeprefix("sqlite:///")))
    rt.start()
    try:
        m = Metrics()
        signer = SipService("signing", metrics=m, signing=signing(pki, rt.live))
        r = resp(await answer(signer, invite(orig=DNO_TN, branch="z9hG4bK-d1"), ("10.1.0.1", 5060)))
        assert (r.status, r.reason) == (403, "Forbidden") and "Do-Not-Originate" in r.headers["Reason"]
        r = resp(await answer(signer, invite(orig=ACME_TN, branch="z9hG4bK-d2"), ("10.1.0.1", 5060)))
        assert r.status == 302 and claims(r.headers["Identity"])["attest"] == "A"
        r = resp(await answer(signer, invite(orig=ACME_TN, branch="z9hG4bK-d3", extra="X-Trunk: gw-trunk\r\n"), ("10.1.0.1", 5060)))
        assert claims(r.headers["Identity"])["attest"] == "C"  # the trunk header names the gateway customer
        # verification: a signed call claiming a DNO caller ID is marked, or rejected with 603
        sc = signing(pki, rt.live, dno_signing="sign-c")
        signer_c = SipService("signing", metrics=m, signing=sc)
        ident = resp(await answer(signer_c, invite(orig=DNO_TN, branch="z9hG4bK-d4"), ("10.1.0.1", 5060))).headers["Identity"]
        assert claims(ident)["attest"] == "C"
        verifier = Verifier(VerifierConfig(trust_anchors=[str(pki.root)]), static_chains={X5U: load_certificates(pki.sp_chain.read_bytes())})
        vs = SipService("verification", metrics=m, verifier=verifier, call_info=CallInfo, dno_check=rt.dno_check)
        r = resp(await answer(vs, invite(orig=DNO_TN, branch="z9hG4bK-v1", extra=f"Identity: {ident}\r\n")))
        assert r.status == 302 and r.headers["X-Caller-DNO"] == DNO_TN and "verstat=TN-Validation-Passed" in r.headers["P-Asserted-Identity"]
        r = resp(await answer(vs, invite(orig=ACME_TN, branch="z9hG4bK-v2")))
        assert r.status == 302 and "X-Caller-DNO" not in r.headers
        rt.cfg = InventoryConfig(database="x", dno_verification="reject", dno_reject_code=608)
        r = resp(await answer(vs, invite(orig=DNO_TN, branch="z9hG4bK-v3", extra=f"Identity: {ident}\r\n")))
        assert (r.status, r.reason) == (608, "Rejected") and 'cause=608' in r.headers["Reason"]
        assert rt.live.dno_verified == 2
        await verifier.aclose()
    finally:
        rt.close()


# --- imports ------------------------------------------------------------------------------------------


def test_malformed_tn_import_reports_lines_and_imports_nothing(store: InventoryStore) -> None:
    before = store.counts()
    bad = ["tn,customer\n", "16175551000,acme\n", "\n", "# comment\n", "1617555100x,acme\n", "16175551001\n", "16175551002,nobody\n",
           "16175552000-161755520,acme\n", "16175553000-16175552000,bob\n"]
    with pytest.raises(ImportProblems) as e:
        store.import_tns(bad)
    lines = [n for n, _ in e.value.problems]
    assert lines == [5, 6, 7, 8, 9] and e.value.count == 5
    msgs = dict(e.value.problems)
    assert "not a telephone number" in msgs[5] and "tn,customer" in msgs[6] and "'nobody'" in msgs[7]
    assert "same number of digits" in msgs[8] and "end before start" in msgs[9]
    assert store.counts() == before  # nothing imported, version unchanged
    with pytest.raises(ImportProblems, match="appears twice"):
        store.import_tns(["16175551000,acme\n", "16175551000,bob\n"])
    with pytest.raises(InventoryError, match="overlaps"):
        store.import_tns(["13035550050-13035550150,bob\n", "16175559999,bob\n"])
    assert store.counts() == before
    with pytest.raises(ImportProblems) as e:
        store.import_dno(["12025550000\n", "not-a-number\n", "1202555000,extra,columns\n", "+1 202 555 x\n"], source="x")
    assert [n for n, _ in e.value.problems] == [2, 4] and store.counts() == before


def test_import_100k_replace_export_and_create_customers(store: InventoryStore, tmp_path: Path) -> None:
    rows = ["tn,customer\n"] + [f"1415{i:07d},{'acme' if i % 2 else 'newco'}\n" for i in range(100_000)]
    with pytest.raises(ImportProblems, match="'newco'"):
        store.import_tns(rows)
    seen: list[int] = []
    r = store.import_tns(rows, create_customers=True, progress=seen.append)
    assert (r.tns, sum(seen)) == (100_000, 100_001)
    idx = store.load_index()
    newco = idx.by_name["newco"]
    assert idx.holder("14150000000") == newco and idx.holder("14150000001") == idx.by_name["acme"] and idx.holder("14150100000") == 0
    assert idx.stats()["tns"] == 100_004 and idx.stats()["array_bytes"] >= 12 * 100_004  # + the 4 of fill()
    out = tmp_path / "export.csv"
    with open(out, "w") as f:
        assert store.export_tns(f) == 100_005  # 100,004 TNs + 1 range
    # replace: the file becomes the whole inventory
    store.import_tns(out.read_text().splitlines()[:11], replace=True)
    assert store.counts()["tns"] == 10 and store.counts()["ranges"] == 0


# --- live changes -----------------------------------------------------------------------------------


def test_watcher_applies_changes_and_reloads(store: InventoryStore) -> None:
    live = LiveInventory()
    w = InventoryWatcher(InventoryStore(store.url), live, poll_interval=0.05)
    w.start()
    try:
        assert live.index.holder(ACME_TN) == live.index.by_name["acme"]
        v = store.remove_tn(ACME_TN)
        store.add_tn(NOBODY_TN, "bob")
        store.import_dno(["16175550000\n"], source="fcc")
        deadline = time.monotonic() + 2
        while live.index.version < v + 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        idx = live.index
        assert idx.holder(ACME_TN) == 0 and idx.holder(NOBODY_TN) == idx.by_name["bob"] and idx.is_dno("16175550000")
        assert idx.overlay_size == 3 and live.reloads == 1  # applied as changes, no reload
        store.import_tns([f"1650{i:07d},bob\n" for i in range(25_000)])  # more than CHANGE_ROWS: reload
        store.put_customer("carol", sources=["10.3.0.0/16"])
        deadline = time.monotonic() + 2
        while live.index.customer_for(source_ip="10.3.1.1") is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert live.index.customer_for(source_ip="10.3.1.1").name == "carol" and live.index.holder("16500000001") > 0  # type: ignore[union-attr]
        assert live.reloads == 2 and live.index.overlay_size == 0
        store.put_customer("dave", sources=["10.4.0.0/16"])  # a customer change alone: applied on the same arrays
        deadline = time.monotonic() + 2
        while live.index.customer_for(source_ip="10.4.1.1") is None and time.monotonic() < deadline:
            time.sleep(0.02)
        idx = live.index
        assert idx.customer_for(source_ip="10.4.1.1").name == "dave" and live.reloads == 2  # type: ignore[union-attr]
        assert idx.holder("16500000001") == idx.by_name["bob"] and idx.holder(BOB_TN) == idx.by_name["bob"] and idx.is_dno("16175550000")
    finally:
        w.close()


def test_index_keys_and_ranges() -> None:
    assert tn_key("0123") != tn_key("123")
    from array import array

    idx = InventoryIndex.build(version=1, customers=[], tns=array("Q", sorted(tn_key(t) for t in ("1", "12", "123"))), holders=array("I", [1, 2, 3]),
                               ranges=[(tn_key("100"), tn_key("199"), 4)])
    assert [idx.holder(t) for t in ("1", "12", "123", "150", "1500", "x", "")] == [1, 2, 3, 4, 0, 0, 0]
    with pytest.raises(ValueError, match="overlap"):
        InventoryIndex.build(version=1, customers=[], ranges=[(tn_key("100"), tn_key("199"), 1), (tn_key("150"), tn_key("160"), 2)])


# Keys for the search property tests: clusters of consecutive numbers (dense buckets, the top-list
# branch of _find) and scattered numbers of 1-18 digits (sparse buckets, the direct branch).
_tn_text = st.integers(1, 18).flatmap(lambda n: st.text("0123456789", min_size=n, max_size=n))
_cluster = st.tuples(_tn_text, st.integers(0, 300)).map(lambda t: [str(int(t[0]) + i).zfill(len(t[0])) for i in range(t[1])])
_tn_sets = st.tuples(st.lists(_tn_text, max_size=60), st.lists(_cluster, max_size=3)).map(
    lambda t: sorted({tn_key(x) for x in t[0] + [y for c in t[1] for y in c] if len(x) <= 18}))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
@given(keys=_tn_sets, probes=st.lists(_tn_text, max_size=20))
def test_search_fast_branch_agrees_with_bisection(keys: list[int], probes: list[str]) -> None:
    """_find (bucket of the direct table, top list for dense buckets) finds exactly what a plain
    bisection of the whole sorted array finds."""
    from array import array
    from bisect import bisect_left

    from stirshaken.serve.inventory.index import _find, _search

    big = array("Q", keys)
    search = _search(big)
    for k in keys + [k + d for k in keys[::7] for d in (-1, 1)] + [tn_key(p) for p in probes]:
        i = bisect_left(big, k)
        assert _find(search, big, k) == (i if i < len(big) and big[i] == k else -1)


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
@given(keys=_tn_sets, data=st.data())
def test_decide_fast_path_agrees_with_the_general_rules(pki: Any, keys: list[int], data: st.DataObject) -> None:
    """SigningService.decide (InventoryDecisions.decide: the signing hot path, written out)
    gives what is_dno, customer_for and attest (the general methods) give with the service's
    policy applied (_combine, _dno), and holder() gives what a plain dict of the same TNs and a
    scan of the ranges give, with and without an overlay of live changes, for each policy and
    caller's level; each recognition is asked many times (decide remembers its outcome per index
    and service, and services sharing an index do not share it)."""
    from array import array
    from types import SimpleNamespace

    from stirshaken.serve.inventory.index import Customer

    custs = [Customer(1, "a"), Customer(2, "b", own="B", other="C"), Customer(3, "c", tenant="t1"), Customer(4, "gw", own="C", other="C")]
    holders = data.draw(st.lists(st.integers(1, 4), min_size=len(keys), max_size=len(keys)))
    dno = sorted(set(data.draw(st.lists(st.sampled_from(keys), max_size=10)) if keys else []) | {tn_key("5551234")}
                 | set(keys[:data.draw(st.integers(0, len(keys)))]))  # a run of the keys: dense DNO buckets too
    rstarts = data.draw(st.lists(st.text("0123456789", min_size=6, max_size=6), max_size=5, unique=True))
    ranges = [(tn_key(r), tn_key(r[:4] + "99"), i % 4 + 1) for i, r in enumerate(sorted({r[:4] + "00" for r in rstarts}))]
    recs = [(1, "credential", "c0ffee" * 10 + "aaaa"), (1, "header", "trunk-a"), (2, "source", "10.2.0.0/16"), (3, "tenant", "t1"),
            (4, "header", "gw")]
    from stirshaken.serve.inventory.index import credential_hash

    recs.append((2, "credential", credential_hash("tok-b")))
    idx = InventoryIndex.build(version=1, customers=custs, recognizers=recs, tns=array("Q", keys), holders=array("I", holders),
                               ranges=ranges, dno=array("Q", dno))
    if data.draw(st.booleans()):  # live changes on top of the arrays
        tc = {k: data.draw(st.integers(0, 4)) for k in data.draw(st.lists(st.sampled_from(keys), max_size=5))} if keys else {}
        idx = idx.with_changes(2, tc, {tn_key("5551234"): False, tn_key("2125550000"): True})
    live = LiveInventory(idx)
    services = [signing(pki, live), signing(pki, live, caller_attest="caller", dno_signing="sign-c"),
                signing(pki, live, caller_attest="inventory", unknown_attest=data.draw(st.sampled_from("ABC")))]
    table = {k: h for k, h in zip(keys, holders)}
    table.update(idx.tn_changes)
    tns = [key_str[1:] for key_str in map(str, keys[::3])] + data.draw(st.lists(_tn_text, max_size=8)) + ["5551234", "2125550000", "x", ""]
    for tn in tns + [r for a, b_, _ in ranges for r in (str(a)[1:], str(b_)[1:])]:
        k = tn_key(tn) if tn.isdigit() and len(tn) <= 18 else None
        if k is not None:
            want = table.get(k) or next((h for a, b_, h in ranges if a <= k <= b_), 0)
            assert idx.holder(tn) == want
        for source_ip, header, credential, tenant in ((None, None, "tok-b", "default"), ("10.2.3.4", None, None, None),
                                                      (None, "Trunk-A", None, "t1"), (None, None, None, "t1"), (None, "gw", None, "x"),
                                                      (None, None, None, None), (None, None, None, "default")):
            customer = idx.customer_for(source_ip=source_ip, header=header, credential=credential, tenant=tenant)
            for svc in services:
                for requested in (None, "A", "B", "C"):
                    got: Any
                    try:
                        got = svc.decide(SimpleNamespace(name=tenant), tn, requested, source_ip, header, credential)
                    except DnoRefused:
                        got = DnoRefused
                    if idx.is_dno(tn):
                        general: Any = DnoRefused if svc.inventory_cfg.dno_signing == "refuse" else "C"
                    else:
                        general = svc._combine(requested, idx.attest(customer, tn, svc.inventory_cfg.unknown_attest))
                    assert got == general, (tn, source_ip, header, credential, tenant, requested, svc.inventory_cfg)


# --- real processes ---------------------------------------------------------------------------------


def stirshaken() -> list[str]:
    return [str(STIRSHAKEN)] if STIRSHAKEN.exists() else [sys.executable, "-m", "stirshaken.cli"]


def cli(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*stirshaken(), *args, "--db", db], capture_output=True, text=True, timeout=60)


def rest_sign(port: int, orig: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"signingRequest": {"attest": "A", "orig": {"tn": orig}, "dest": {"tn": ["12155551213"]}, "iat": int(time.time())}}).encode()
    headers = {"Content-Type": "application/json", "Connection": "close"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"http://127.0.0.1:{port}/stir/v1/signing", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            doc = json.loads(r.read())
            jws = doc["signingResponse"]["identity"].split(";")[0]
            p = jws.split(".")[1]
            return r.status, json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def admin(port: int, method: str, path: str, token: str | None, body: Any = None) -> tuple[int, Any]:
    headers = {"Connection": "close"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}/admin/v1/{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def all_workers_at(port: int, version: int, workers: int, token: str, timeout: float = 2.0) -> float:
    """Seconds until ``workers`` distinct worker pids answered with index version >= ``version``
    (fresh connections are spread over the workers by SO_REUSEPORT)."""
    t0 = time.monotonic()
    seen: set[int] = set()
    while time.monotonic() - t0 < timeout:
        _, doc = admin(port, "GET", "inventory", token)
        if doc["worker"]["inventory_version"] >= version:
            seen.add(doc["worker"]["pid"])
            if len(seen) >= workers:
                return time.monotonic() - t0
    raise AssertionError(f"only workers {seen} reached version {version} within {timeout} s")


def inventory_toml(pki: Any, x5u: FileServer, http: int, sip_signing: int, db: str, token_file: Path, workers: int = 2) -> str:
    return serve_toml(pki, x5u, http=http, sip_signing=sip_signing, workers=workers) + (
        f'\n[inventory]\ndatabase = "{db}"\npoll_interval = 0.5\nadmin_token_file = "{token_file}"\n')


def test_serve_two_workers_live_changes_and_restart(pki: Any, tmp_path: Path) -> None:
    db = str(tmp_path / "inv.db")
    st = InventoryStore(db)
    fill(st)
    st.close()
    token = tmp_path / "admin.token"
    token.write_text("s3cret-admin\n")
    x5u = FileServer(pki.dir)
    http, sipp = serve_port(), serve_port()
    toml = inventory_toml(pki, x5u, http, sipp, db, token)
    p = ServeProcess(tmp_path, toml, http)
    try:
        status, c = rest_sign(http, ACME_TN, "tok-acme")
        assert status == 200 and c["attest"] == "A"
        assert rest_sign(http, BOB_TN, "tok-acme")[1]["attest"] == "B"
        assert rest_sign(http, ACME_TN)[1]["attest"] == "C"  # no credential: unknown caller
        status, doc = rest_sign(http, DNO_TN, "tok-acme")
        assert status == 403 and doc["requestError"]["policyException"]["messageId"] == "POL4003"
        assert doc["requestError"]["policyException"]["variables"] == [DNO_TN]
        # admin API: authentication
        assert admin(http, "GET", "inventory", None)[0] == 401
        assert admin(http, "GET", "inventory", "wrong")[0] == 401
        # a change through the CLI reaches both workers within 2 s
        r = cli("tn", "add", BOB_TN, "acme", db=db)
        assert r.returncode == 0, r.stderr
        v = int(r.stdout.split("version ")[1].rstrip(")\n"))
        assert all_workers_at(http, v, 2, "s3cret-admin") <= 2.0
        assert rest_sign(http, BOB_TN, "tok-acme")[1]["attest"] == "A"
        # ... and one through the admin API (DNO)
        status, doc = admin(http, "POST", "dno", "s3cret-admin", {"source": "fcc", "listed": "2026-11-20", "tns": [BOB_TN]})
        assert status == 200 and doc["worker_version"] == doc["version"]  # the answering worker has it already
        assert all_workers_at(http, doc["version"], 2, "s3cret-admin") <= 2.0
        assert rest_sign(http, BOB_TN, "tok-acme")[0] == 403
        status, doc = admin(http, "POST", "tns", "s3cret-admin", {"csv": "tn,customer\n16175550000,bob\nbad,bob\n"})
        assert status == 400 and doc["error"]["problems"] == [{"line": 3, "message": "'bad' is not a telephone number"}]
        assert admin(http, "GET", f"tns/{BOB_TN}", "s3cret-admin")[1]["dno"]["source"] == "fcc"
        openapi = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{http}/openapi.json", timeout=5).read())
        assert "/admin/v1/tns/{tn}" in openapi["paths"] and "POL4003" in openapi["components"]["schemas"]["Exception"]["properties"]["messageId"]["enum"]
    finally:
        assert p.stop() == 0
    # restart: the state is in the database
    p = ServeProcess(tmp_path, toml, http, name="serve2")
    try:
        assert rest_sign(http, BOB_TN, "tok-acme")[0] == 403
        assert rest_sign(http, ACME_TN, "tok-acme")[1]["attest"] == "A"
        r = cli("dno", "remove", BOB_TN, db=db)
        assert r.returncode == 0, r.stderr
        time.sleep(1.2)
        assert rest_sign(http, BOB_TN, "tok-acme")[1]["attest"] == "A"
    finally:
        assert p.stop() == 0
        x5u.close()


def test_two_nodes_on_postgresql(pki: Any, tmp_path: Path) -> None:
    with postgres_database() as url:
        st = InventoryStore(url)
        fill(st)
        token = tmp_path / "admin.token"
        token.write_text("pg-admin")
        x5u = FileServer(pki.dir)
        nodes, ports = [], []
        try:
            for i in range(2):
                http, s = serve_port(), serve_port()
                toml = inventory_toml(pki, x5u, http, s, url, token, workers=1).replace("poll_interval = 0.5", "poll_interval = 10")
                nodes.append(ServeProcess(tmp_path, toml, http, name=f"node{i}"))
                ports.append(http)
            assert [rest_sign(p, BOB_TN, "tok-acme")[1]["attest"] for p in ports] == ["B", "B"]
            r = cli("tn", "add", BOB_TN, "acme", db=url)
            assert r.returncode == 0, r.stderr
            t0 = time.monotonic()  # the change is committed once the command returned (its start-up is not the propagation)
            v = st.version()
            for p in ports:  # poll_interval is 10 s: only NOTIFY can make it in time (4 s leaves room on a loaded machine)
                all_workers_at(p, v, 1, "pg-admin", timeout=4.0 - (time.monotonic() - t0))
            assert [rest_sign(p, BOB_TN, "tok-acme")[1]["attest"] for p in ports] == ["A", "A"]
        finally:
            for n in nodes:
                n.stop()
            x5u.close()
            st.close()


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    (tmp_path / "bad.csv").write_text("tn,customer\n12155551212,nobody\n")
    r = cli("tn", "import", str(tmp_path / "bad.csv"), db=db)
    assert r.returncode == 1 and f"{tmp_path / 'bad.csv'}:2: no customer named 'nobody'" in r.stderr and "Traceback" not in r.stderr
    r = cli("tn", "remove", "12155551212", db=db)
    assert r.returncode == 1 and "is not in the inventory" in r.stderr and "Traceback" not in r.stderr
    env = {k: v for k, v in os.environ.items() if k != "STIRSHAKEN_INVENTORY_DB"}
    r = subprocess.run([*stirshaken(), "tn", "lookup", "1"], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert r.returncode == 2 and "no inventory database" in r.stderr


def test_config_section(pki: Any, tmp_path: Path) -> None:
    from stirshaken.serve.config import ConfigError

    base = f'[server]\nhttp = "127.0.0.1:8080"\n[signing]\nkey = "{pki.sp_key}"\nx5u = "{X5U}"\n'
    (tmp_path / "tok").write_text("t0k\n")
    c = parse_config(tomllib.loads(base + '[inventory]\ndatabase = "inv.db"\nadmin_token_file = "tok"\ndno_signing = "sign-c"\n'), tmp_path)
    assert c.inventory.url == f"sqlite:///{tmp_path / 'inv.db'}" and c.inventory.admin_token == "t0k" and c.inventory.dno_signing == "sign-c"
    assert not parse_config(tomllib.loads(base), tmp_path).inventory.enabled
    with pytest.raises(ConfigError, match=r"\[inventory\].dno_reject_code"):
        parse_config(tomllib.loads(base + "[inventory]\ndno_reject_code = 486\n"), tmp_path)
    with pytest.raises(ConfigError, match=r"\[inventory\].colour: unknown option"):
        parse_config(tomllib.loads(base + "[inventory]\ncolour = 1\n"), tmp_path)


def test_config_doc_lists_every_inventory_option() -> None:
    from tests.test_vs_config import _check_rows
    from stirshaken.serve.config import _toml_keys

    _check_rows("## `[inventory]`", InventoryConfig, _toml_keys(InventoryConfig))



def test_unreachable_database_stops_serve_with_one_line(pki: Any, tmp_path: Path) -> None:
    from tests.test_serve_support import serve_command

    conf = tmp_path / "s.toml"
    conf.write_text(f'[server]\nhttp = "127.0.0.1:{serve_port()}"\nworkers = 2\n[signing]\nkey = "{pki.sp_key}"\nx5u = "{X5U}"\n'
                    '[inventory]\ndatabase = "postgresql+psycopg://nobody@127.0.0.1:1/x"\n')
    for extra in (["--check"], []):
        r = subprocess.run(serve_command() + ["--config", str(conf), *extra], capture_output=True, text=True, timeout=60)
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert r.returncode == 2 and len(errors) == 1 and errors[0].startswith("error: [inventory].database: cannot open"), r.stderr
        assert "Traceback" not in r.stderr


def test_new_long_bearer_tokens_on_every_request_keep_the_worker_small(pki: Any, tmp_path: Path) -> None:
    """A REST client sending a new 16 KiB bearer token on every request (the head may hold 16 KiB):
    the caches of header values, credentials and recognitions are bounded in bytes too, so the
    worker grows by little (before: about 130 MB over 6,000 such requests); the attestation is
    unchanged (an unknown token is an unknown caller, C)."""
    import socket

    db = str(tmp_path / "inv.db")
    st = InventoryStore(db)
    fill(st)
    st.close()
    token = tmp_path / "admin.token"
    token.write_text("s3cret-admin\n")
    x5u = FileServer(pki.dir)
    http, sipp = serve_port(), serve_port()
    p = ServeProcess(tmp_path, inventory_toml(pki, x5u, http, sipp, db, token, workers=1) + "\n[records]\nlog = false\n", http)

    def rss_kb() -> int:
        return int(next(line for line in open(f"/proc/{p.proc.pid}/status") if line.startswith("VmRSS")).split()[1])

    try:
        assert rest_sign(http, ACME_TN, "tok-acme")[1]["attest"] == "A"
        body = json.dumps({"signingRequest": {"attest": "A", "orig": {"tn": ACME_TN}, "dest": {"tn": ["12155551213"]},
                                              "iat": int(time.time())}}).encode()
        before = rss_kb()
        with socket.create_connection(("127.0.0.1", http)) as s, s.makefile("rb") as f:
            for i in range(6000):
                s.sendall((f"POST /stir/v1/signing HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           f"Authorization: Bearer {i:08d}{'t' * 16000}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body)
                status = f.readline().split()[1]
                length = 0
                while (line := f.readline()) != b"\r\n":
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                doc = json.loads(f.read(length))
                assert status == b"200", doc
        jws = doc["signingResponse"]["identity"].split(";")[0].split(".")[1]
        assert json.loads(base64.urlsafe_b64decode(jws + "=" * (-len(jws) % 4)))["attest"] == "C"
        grown = rss_kb() - before
        assert grown < 40_000, f"the worker grew by {grown} KiB"
        assert rest_sign(http, ACME_TN, "tok-acme")[1]["attest"] == "A"
    finally:
        p.stop()
        x5u.close()
