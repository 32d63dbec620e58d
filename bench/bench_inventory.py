#!/usr/bin/env python3
"""Attestation from a TN inventory at scale: memory per TN, lookup cost, signing throughput with
and without the inventory (one run), and bulk import time.

    .venv/bin/python bench/bench_inventory.py [--tns 10000000] [--dno 1000000] [--import-tns 1000000]
                                              [--seconds 1] [--rounds 5] [--pg URL] [--db-load]

* memory   = resident-set growth of the process while the index of ``--tns`` TNs (sorted
             ``array('Q')`` + ``array('I')`` of holders), 1,000 ranges and ``--dno`` DNO numbers
             is built, divided by the TN count (and the arrays' own bytes);
* lookup   = :meth:`SigningService.decide` per call with the inventory (DNO check, customer by
             source address, holder lookup) against the same call without it (``attest_for`` from
             the ``[signing]`` customer table);
* signing  = ``decide`` + ``sign`` (full Identity header, ES256) per second, interleaved rounds
             with and without the inventory; the median ratio is compared with 0.95;
* rest     = the same through :meth:`RestAPI.handle` (ATIS-1000082 signing request parsed,
             checked, signed, answered; the caller recognised by its bearer credential);
* rest extra (``--rest-extra ROUNDS``, alone): the inventory's cost per REST request in µs, the
             minima and medians of CPU time per request over alternating rounds;
* instructions (``--instructions``, needs valgrind): callgrind's count per REST signing request
             with and without the inventory (real ES256 included) — timings on a shared VM drift,
             counts do not, so this is the stable form of the "within 5 %" comparison;
* import   = ``stirshaken tn import``'s store path for ``--import-tns`` CSV rows into a fresh
             SQLite file (and PostgreSQL with ``--pg``), one transaction;
* ``--db-load``: also import ``--tns`` rows into SQLite and time a worker's full load of them.
* serve (``--serve``): the REST benchmark through a real ``stirshaken serve`` (1 worker, the
             lean HTTP engine, pinned to one CPU, ``wrk -t1 -c64`` on the others, rotating 400
             signing bodies whose callers are
             held, other customers', unknown and DNO numbers, the caller recognised by its bearer
             token): one ``serve`` with ``[inventory]`` on a SQLite file holding ``--tns`` TNs,
             ``--dno`` DNO numbers and 1,000 customers, one without; interleaved rounds,
             requests per CPU second of each ``serve`` (as ``bench_records.py``), the median ratio
             against 0.95; and the worker's resident memory with and without the inventory.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from stirshaken.serve.config import CustomerConfig, InventoryConfig, SigningConfig, TenantConfig  # noqa: E402
from stirshaken.serve.inventory.index import Customer, InventoryIndex, LiveInventory  # noqa: E402
from stirshaken.serve.signing import SigningService  # noqa: E402

BASE = 12000000000  # TNs 1200000000x.. as 11-digit NANP numbers
STEP = 7


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build_index(n_tns: int, n_dno: int, customers: int = 1000) -> tuple[InventoryIndex, float, int]:
    gc.collect()
    before = rss()
    t0 = time.perf_counter()
    first = int("1" + str(BASE))
    tns = array("Q", range(first, first + n_tns * STEP, STEP))
    holders = array("I", range(1, customers + 1)) * (n_tns // customers + 1)
    del holders[n_tns:]
    dno = array("Q", range(first + 3, first + 3 + n_dno * STEP * 10, STEP * 10))  # every 10th TN's neighbour
    rfirst = int("1" + "13035550000")
    ranges = [(rfirst + i * 10000, rfirst + i * 10000 + 9999, i % customers + 1) for i in range(1000)]
    custs = [Customer(i, f"c{i}") for i in range(1, customers + 1)]
    recs = [(i, "source", f"10.{i // 256}.{i % 256}.0/24") for i in range(1, customers + 1)]
    idx = InventoryIndex.build(version=1, customers=custs, recognizers=recs, tns=tns, holders=holders, ranges=ranges, dno=dno)
    secs = time.perf_counter() - t0
    gc.collect()
    return idx, secs, rss() - before


_KEY = ec.generate_private_key(ec.SECP256R1())  # one key for every side compared


def service(inventory: LiveInventory | None) -> SigningService:
    key = _KEY
    cust = CustomerConfig(name="c1", sources=("10.0.1.0/24",), tns=("1200",))
    t = TenantConfig.model_construct(name="default", key=key, key_path="", x5u="https://cr.example.net/sp.pem", spc="1234", tns=(),
                                     customers=(cust,), default_attest="C", acme=None)
    cfg = SigningConfig.model_construct(**{**SigningConfig().__dict__, "default": t})
    return SigningService(cfg, inventory=inventory, inventory_cfg=InventoryConfig(dno_signing="sign-c"))  # DNO calls signed C


def calls(n: int) -> list[tuple[str, str]]:
    """(calling TN, source IP): held TNs, DNO numbers, unknown numbers, range numbers."""
    out = []
    for i in range(n):
        kind = i % 4
        ip = f"10.0.{i % 200}.{i % 250 + 1}"
        if kind == 0:  # held by the calling customer (recognised by its source network): A
            j = i * 7919 % 1000000
            tn = str(BASE + j * STEP)
            cid = j % 1000 + 1
            ip = f"10.{cid // 256}.{cid % 256}.{i % 250 + 1}"
        elif kind == 1:
            tn = str(BASE + 1 + (i % 1000) * STEP)
        elif kind == 2:
            tn = str(13035550000 + i % 10000000)
        else:
            tn = str(BASE + 3 + (i % 1000) * STEP * 10)  # DNO
        out.append((tn, ip))
    return out


def rate(svc: SigningService, work: list[tuple[str, str]], seconds: float) -> float:
    tenant = svc.default
    decide, sign = svc.decide, svc.sign
    dest = ["12155551213"]
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while True:
        for tn, ip in work:
            attest = decide(tenant, tn, source_ip=ip)
            sign(tenant, orig=tn, dest=dest, attest=attest)
        n += len(work)
        now = time.perf_counter()
        if now >= end:
            return n / (now - t0)


def decide_cost(svc: SigningService, work: list[tuple[str, str]], reps: int = 20) -> float:
    tenant = svc.default
    decide = svc.decide
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for tn, ip in work:
            decide(tenant, tn, source_ip=ip)
        best = min(best, (time.perf_counter() - t0) / len(work))
    return best


def bench_import(url: str, n: int) -> float:
    from stirshaken.serve.inventory.store import InventoryStore

    st = InventoryStore(url)
    st.put_customer("acme")
    st.put_customer("bob")
    lines = ["tn,customer\n"] + [f"1{415 + i // 10000000}{i % 10000000:07d},{'acme' if i % 3 else 'bob'}\n" for i in range(n)]
    t0 = time.perf_counter()
    st.import_tns(lines, replace=True)
    secs = time.perf_counter() - t0
    st.close()
    return secs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tns", type=int, default=10_000_000)
    ap.add_argument("--dno", type=int, default=1_000_000)
    ap.add_argument("--import-tns", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--pg", default="", help="also time the import into this PostgreSQL URL (tables inv_* are written)")
    ap.add_argument("--db-load", action="store_true")
    ap.add_argument("--instructions", action="store_true", help="also count instructions per REST request with callgrind")
    ap.add_argument("--serve", action="store_true", help="also run the REST benchmark through a real serve (SQLite inventory of --tns TNs)")
    ap.add_argument("--serve-only", action="store_true", help="only the --serve benchmark")
    ap.add_argument("--rest-extra", type=int, metavar="ROUNDS", default=0,
                    help="only the inventory's cost per REST request in process (min and median of ROUNDS alternations)")
    ap.add_argument("--loop", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.loop:
        _loop(a.loop[0], int(a.loop[1]), a.tns, a.dno)
        return 0
    if a.rest_extra:
        rest_extra(build_index(a.tns, a.dno)[0], a.rest_extra)
        return 0
    if a.serve_only:
        serve_ratio(a.tns, a.dno, a.seconds, a.rounds)
        return 0

    idx, build_s, grown = build_index(a.tns, a.dno)
    st = idx.stats()
    print(f"index: {st['tns']:,} TNs, {st['ranges']:,} ranges, {st['dno']:,} DNO, {st['customers']:,} customers; built in {build_s:.1f} s")
    print(f"memory: RSS +{grown / 1e6:.0f} MB = {grown / a.tns:.1f} B per TN (DNO included); "
          f"arrays {st['array_bytes'] / 1e6:.0f} MB: TN+holder {12:.0f} B/TN, DNO 8 B/number")

    live = LiveInventory(idx)
    with_inv = service(live)
    without = service(None)
    work = calls(2000)
    c_with = decide_cost(with_inv, work)
    c_without = decide_cost(without, work)
    print(f"decide per call: {c_with * 1e6:.2f} µs with the inventory, {c_without * 1e6:.2f} µs without (config prefixes); "
          f"holder lookup alone {decide_holder(idx) * 1e6:.2f} µs")
    levels: dict[str, int] = {}
    for tn, ip in work:
        lv = with_inv.decide(with_inv.default, tn, source_ip=ip)
        levels[lv] = levels.get(lv, 0) + 1
    print(f"decisions on the mix (held / other customer's / unknown / DNO numbers): {dict(sorted(levels.items()))}")
    work_s = work
    rates_w, rates_wo, ratios = [], [], []
    for _ in range(a.rounds):
        r0 = rate(without, work_s, a.seconds)
        r1 = rate(with_inv, work_s, a.seconds)
        rates_wo.append(r0)
        rates_w.append(r1)
        ratios.append(r1 / r0)
    med = statistics.median(ratios)
    print(f"signing (decide + sign): {statistics.median(rates_wo):,.0f}/s without, {statistics.median(rates_w):,.0f}/s with the inventory; "
          f"ratio {med:.3f} (target >= 0.95: {'OK' if med >= 0.95 else 'MISSED'})")

    rest_ratio(idx, a.seconds, a.rounds)
    if a.serve:
        del idx, live, with_inv, without
        gc.collect()
        serve_ratio(a.tns, a.dno, a.seconds, a.rounds)
    if a.instructions:
        instructions(min(a.tns, 1_000_000), min(a.dno, 100_000))

    with tempfile.TemporaryDirectory() as d:
        secs = bench_import(f"sqlite:///{d}/inv.db", a.import_tns)
        print(f"import {a.import_tns:,} TNs into SQLite: {secs:.1f} s (target <= 60 s: {'OK' if secs <= 60 else 'MISSED'})")
        if a.pg:
            secs = bench_import(a.pg, a.import_tns)
            print(f"import {a.import_tns:,} TNs into PostgreSQL: {secs:.1f} s")
        if a.db_load:
            from stirshaken.serve.inventory.store import InventoryStore

            secs = bench_import(f"sqlite:///{d}/big.db", a.tns)
            st2 = InventoryStore(f"sqlite:///{d}/big.db")
            t0 = time.perf_counter()
            loaded = st2.load_index()
            print(f"import {a.tns:,} TNs into SQLite: {secs:.1f} s; a worker loads them in {time.perf_counter() - t0:.1f} s "
                  f"({loaded.stats()['tns']:,} TNs)")
    return 0


def rest_apis(idx: InventoryIndex) -> tuple[Any, LiveInventory, dict[str, str], list[bytes]]:
    """One RestAPI (one key, one signer) and the inventory to attach to its signing service
    (``api.signing.inventory = live`` or ``None``); the REST caller is customer 7 (bearer token)."""
    import hashlib

    import orjson

    from stirshaken.serve.metrics import Metrics
    from stirshaken.serve.rest import RestAPI

    live = LiveInventory(InventoryIndex.build(
        version=1, customers=list(idx.customers.values()), recognizers=[(7, "credential", hashlib.sha256(b"tok").hexdigest())],
        tns=idx.tns, holders=idx.holders, ranges=list(zip(idx.range_starts, idx.range_ends, idx.range_holders)), dno=idx.dno))
    headers = {"content-type": "application/json", "authorization": "Bearer tok"}
    bodies = [orjson.dumps({"signingRequest": {"attest": "A", "orig": {"tn": tn}, "dest": {"tn": ["12155551213"]}, "iat": 0}})
              for tn, _ in calls(400)]
    return RestAPI(signing=service(None), verifier=None, metrics=Metrics()), live, headers, bodies


def rest_run(api: Any, headers: dict[str, str], bodies: list[bytes], n: int) -> None:
    from stirshaken.serve.rest import SIGNING_PATH

    iat = b'"iat":%d' % int(time.time())
    for i in range(n):
        r = api.handle("POST", SIGNING_PATH, headers, bodies[i % len(bodies)].replace(b'"iat":0', iat), True)
        assert r[0] == 200, r


def rest_ratio(idx: InventoryIndex, seconds: float, rounds: int) -> None:
    """Requests per CPU second through RestAPI.handle, rounds alternating which side goes first."""
    api, live, headers, bodies = rest_apis(idx)

    def run(inv: LiveInventory | None) -> float:
        api.signing.inventory = inv
        n = 0
        t0 = time.process_time()
        while True:
            rest_run(api, headers, bodies, 400)
            n += 400
            if time.process_time() - t0 >= seconds:
                return n / (time.process_time() - t0)

    ratios, wo, w = [], [], []
    for i in range(rounds * 2):
        if i % 2:
            r1, r0 = run(live), run(None)
        else:
            r0, r1 = run(None), run(live)
        wo.append(r0)
        w.append(r1)
        ratios.append(r1 / r0)
    med = statistics.median(ratios)
    print(f"REST signing (RestAPI.handle, per CPU second): {statistics.median(wo):,.0f}/s without, {statistics.median(w):,.0f}/s with "
          f"the inventory; ratio {med:.3f}, range {min(ratios):.2f}-{max(ratios):.2f} (target >= 0.95: {'OK' if med >= 0.95 else 'MISSED'})")


def rest_extra(idx: InventoryIndex, rounds: int, n: int = 2000) -> None:
    """The inventory's cost per REST request in µs: ``n`` requests through RestAPI.handle without
    and with the inventory, alternating (which goes first alternates too) ``rounds`` times; the
    difference of the minima and of the medians of CPU time per request."""
    api, live, headers, bodies = rest_apis(idx)
    res: dict[str, list[float]] = {"without": [], "with": []}
    for i in range(rounds):
        for mode in (("without", "with") if i % 2 == 0 else ("with", "without")):
            api.signing.inventory = live if mode == "with" else None
            t0 = time.process_time()
            rest_run(api, headers, bodies, n)
            res[mode].append((time.process_time() - t0) / n * 1e6)
    lo = {m: min(v) for m, v in res.items()}
    med = {m: statistics.median(v) for m, v in res.items()}
    print(f"REST request (RestAPI.handle, CPU time, {rounds} alternations of {n}): min {lo['without']:.2f} µs without, "
          f"{lo['with']:.2f} with the inventory (+{lo['with'] - lo['without']:.2f}, {lo['with'] / lo['without'] - 1:.1%}); median "
          f"{med['without']:.2f} / {med['with']:.2f} (+{med['with'] - med['without']:.2f}, {med['with'] / med['without'] - 1:.1%})")


def _loop(mode: str, n: int, tns: int, dno: int) -> None:
    """The program counted under callgrind: ``n`` REST signing requests."""
    idx, _, _ = build_index(tns, dno)
    api, live, headers, bodies = rest_apis(idx)
    api.signing.inventory = live if mode == "with" else None
    rest_run(api, headers, bodies, n)


def instructions(tns: int, dno: int, calls_n: int = 1600) -> None:
    import re
    import subprocess

    def count(mode: str, n: int) -> int:
        p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__, "--loop", mode, str(n),
                            "--tns", str(tns), "--dno", str(dno)], capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
        m = re.search(r"Collected : (\d+)", p.stderr)
        if p.returncode != 0 or m is None:
            raise SystemExit(f"callgrind run failed:\n{p.stderr[-2000:]}")
        return int(m.group(1))

    per = {mode: (count(mode, 1 + calls_n) - count(mode, 1)) / calls_n for mode in ("without", "with")}
    print(f"instructions per REST signing request (callgrind, {tns:,} TNs): {per['without']:,.0f} without, {per['with']:,.0f} with the "
          f"inventory (+{per['with'] - per['without']:,.0f}, ratio {per['without'] / per['with']:.3f})")


def _fill_store(url: str, n_tns: int, n_dno: int, customers: int = 1000) -> float:
    """A SQLite inventory of the :func:`build_index` shape (TNs, DNO numbers, customers c1..c1000,
    customer c7 recognised by the bearer token ``tok``); seconds taken."""
    from stirshaken.serve.inventory.store import InventoryStore

    t0 = time.perf_counter()
    st = InventoryStore(url)
    for i in range(1, customers + 1):
        st.put_customer(f"c{i}", credentials=["tok"] if i == 7 else ())
    first = BASE
    st.import_tns((f"{first + j * STEP},c{j % customers + 1}\n" for j in range(n_tns)), replace=True)
    st.import_dno((f"{first + 3 + j * STEP * 10}\n" for j in range(n_dno)), source="bench", replace=True)
    st.close()
    return time.perf_counter() - t0


#: wrk's connections in the serve benchmark (why 64 and not 16: bench_records.py, --connections)
CONNECTIONS = 64


def serve_ratio(n_tns: int, n_dno: int, seconds: float, rounds: int) -> None:
    """The REST benchmark through a real ``serve`` with and without the inventory (see the module
    docstring, ``serve``)."""
    import shutil
    import subprocess

    import orjson

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.bench_records import cpu_split, group_cpu, pin_group
    from tests.test_serve_support import FileServer, ServeProcess, make_pki, serve_port, serve_toml, wait_tcp

    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (peers/install.sh)")
    work = Path(tempfile.mkdtemp(prefix="bench_inventory."))
    pki = make_pki(work / "pki")
    x5u = FileServer(work / "pki")
    db = work / "inv.db"
    secs = _fill_store(f"sqlite:///{db}", n_tns, n_dno)
    print(f"serve: SQLite inventory of {n_tns:,} TNs and {n_dno:,} DNO numbers written in {secs:.0f} s")
    script = work / "post.lua"

    def write_script() -> None:  # bodies signed with iat now (the signer refuses a stale iat)
        now = int(time.time())
        bodies = [orjson.dumps({"signingRequest": {"attest": "A", "orig": {"tn": tn}, "dest": {"tn": ["12155551213"]}, "iat": now}}).decode()
                  for tn, _ in calls(400)]
        script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer tok"\n'
                          "local bodies = {" + ",".join("[[" + b + "]]" for b in bodies) + "}\nlocal i = 0\n"
                          "request = function()\n  i = i % #bodies + 1\n  return wrk.format(nil, nil, nil, bodies[i])\nend\n")

    procs: dict[str, Any] = {}
    split = cpu_split()  # serve on one CPU, wrk on the others (as bench_records.py)
    try:
        for mode in ("without", "with"):
            port = serve_port()
            extra = f'\n[inventory]\ndatabase = "sqlite:///{db}"\ndno_signing = "sign-c"\n' if mode == "with" else ""
            toml = serve_toml(pki, x5u, http=port, workers=1).replace('log_level = "INFO"', 'log_level = "WARNING"') + "\n[records]\nlog = false\n" + extra
            t0 = time.perf_counter()
            procs[mode] = (ServeProcess(work, toml, None, name=f"serve-{mode}"), port)
            wait_tcp(port, timeout=600, proc=procs[mode][0].proc)  # the worker loads the inventory first
            if split:
                pin_group(procs[mode][0].proc.pid, split[0])
            print(f"serve {mode} the inventory: ready in {time.perf_counter() - t0:.1f} s", flush=True)

        def rss(p: Any) -> int:
            kids = [int(x) for x in subprocess.run(["pgrep", "-g", str(p.proc.pid)], capture_output=True, text=True).stdout.split()]
            return max(int(Path(f"/proc/{k}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") for k in kids)

        def run(mode: str) -> tuple[float, float]:
            p, port = procs[mode]
            write_script()
            c0 = group_cpu(p.proc.pid)
            out = subprocess.run(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, int(seconds))}s", "-s", str(script), f"http://127.0.0.1:{port}/stir/v1/signing"],
                                 capture_output=True, text=True, timeout=seconds + 60,
                                 preexec_fn=(lambda: os.sched_setaffinity(0, split[1])) if split else None).stdout
            cpu = group_cpu(p.proc.pid) - c0
            if "Non-2xx" in out or "Socket errors" in out:
                raise SystemExit(f"wrk saw errors ({mode}):\n{out}")
            rps = float(out.split("Requests/sec:")[1].split()[0])
            return rps, rps * max(1, int(seconds)) / cpu

        run("without"), run("with")  # warm-up
        ratios, wo, w = [], [], []
        for i in range(rounds * 2):
            order = ("with", "without") if i % 2 else ("without", "with")
            r = {m: run(m) for m in order}
            wo.append(r["without"][1])
            w.append(r["with"][1])
            ratios.append(r["with"][1] / r["without"][1])
            print(f"  round {i + 1}: {r['without'][0]:,.0f} / {r['with'][0]:,.0f} req/s, {r['without'][1]:,.0f} / {r['with'][1]:,.0f} per CPU s "
                  f"without / with (ratio {ratios[-1]:.3f})", flush=True)
        med = statistics.median(ratios)
        grown = rss(procs["with"][0]) - rss(procs["without"][0])
        print(f"REST signing through serve (1 worker, wrk -t1 -c{CONNECTIONS}, per CPU second): {statistics.median(wo):,.0f}/s without, "
              f"{statistics.median(w):,.0f}/s with the inventory; ratio {med:.3f}, range {min(ratios):.2f}-{max(ratios):.2f} "
              f"(target >= 0.95: {'OK' if round(med, 3) >= 0.95 else 'MISSED'}); worker RSS +{grown / 1e6:.0f} MB = {grown / n_tns:.1f} B per TN")
    finally:
        for p, _ in procs.values():
            p.stop()
        x5u.close()
        shutil.rmtree(work, ignore_errors=True)


def decide_holder(idx: InventoryIndex) -> float:
    tns = [str(BASE + (i * 7919 % 1000000) * STEP) for i in range(2000)]
    holder = idx.holder
    best = float("inf")
    for _ in range(20):
        t0 = time.perf_counter()
        for tn in tns:
            holder(tn)
        best = min(best, (time.perf_counter() - t0) / len(tns))
    return best


if __name__ == "__main__":
    sys.exit(main())
