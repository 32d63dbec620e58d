#!/usr/bin/env python3
"""What the per-call records (``[records]``, serve/records.py) cost: REST signing and verification
throughput of a real ``stirshaken serve`` with records off, written to the log only, and written
to the log and to PostgreSQL; and, stable on a shared machine, instructions per request.

    .venv/bin/python bench/bench_records.py [--seconds 1] [--rounds 30] [--workers 1] [--connections 64] [--no-pin]
                                            [--together] [--control] [--db-only] [--modes log,pg,db,ctl] [--db-load]
                                            [--pg postgresql://postgres@127.0.0.1:5432/test] [--no-pg]
                                            [--instructions] [--only-instructions]

* throughput: one ``stirshaken serve`` per mode (``--workers``, fast HTTP engine, log_level
  WARNING so that only records are logged, stderr to a file as in production), all started
  first and kept, driven by ``wrk`` (``-t1 -c--connections``) with ATIS-1000082 signing, then
  verification, bodies (made afresh before each run: a PASSporT's ``iat`` goes stale).  Each
  round runs every mode once, in an order that rotates from round to round; a run's CPU is its
  serve's own (the scheduler's nanoseconds of all its threads, records threads included) from the
  run's start to the start of that serve's next run, so that what its records threads write after
  ``wrk`` ends is counted.  The figure of a mode is the median, over the rounds, of its ratio to
  records off in the same round (goal: within 10 %, ratio >= 0.90), with the lowest and highest.
  With two CPUs or more (unless ``--no-pin``) the serves are pinned to the last CPU, and ``wrk``
  and the whole PostgreSQL server (postmaster, background processes, backends; the backends of
  the records at nice 10) to the others: as with a database on a host of its own, its work takes
  no CPU of ``serve``'s.  After the run the PostgreSQL table must have grown by every record the
  service counted as written.
  ``--db-only``: one more serve with records to PostgreSQL only (``db``: ``log = false``; ``pg``
  is the log and PostgreSQL, as ``serve`` does when a database is added to the default).
  ``--modes``: the modes besides ``off`` (``log,pg,db,ctl``), instead of the three flags above and
  below: ``--together --modes pg`` runs two serves only, which share the CPU's caches with one
  another alone, as a worker does on a CPU of its own (with more serves together the records'
  cost is measured higher; see the README).
  ``--control``: one more serve with records off (``ctl``): its ratio to ``off`` is the noise
  floor of the run.  On the 2-vCPU VMs used here the speed of one CPU drifts by 10-35 % from
  second to second (runs of records off alone, 2026-11-30): run after run, a ratio moves more
  than the cost it measures.
  ``--together``: the modes of a round run at the same time, each serve with its own ``wrk``,
  the serves sharing their CPU: a drift hits every mode alike, and the control's ratios stay
  within a few per cent (``ctl`` 0.96-1.02 where one after the other gave 0.64-1.37); the serves
  also share the CPU's caches, which makes work that touches more memory (the records) cost more
  than on a CPU of its own, so these ratios err on the low side.
  ``--db-load``: records off and log run under the same database load as the pg mode (a process
  of its own, pinned with the load, ships the records of this mode's request rate through the
  same records code into a scratch database, ``stirshaken_bench_load``, dropped after).
* instructions (``--instructions``, needs valgrind): callgrind's count per ``RestAPI.handle``
  signing request (real ES256) in one process with records off, to the log (a file), and queued
  for a database (the queue only; the database thread is not started), to PostgreSQL (``pg``;
  the database thread writes them in full batches after the requests; its instructions are
  counted, the server's not), and to both (``log+pg``, what the throughput's ``pg`` mode runs):
  the cost the request path itself pays, which timings on a shared VM cannot resolve to a few
  per cent.  (callgrind counts a ``rep movsb`` copy one instruction per byte: the database
  thread's count, mostly copies of the batch's text, overstates its time.)

Not a test: numbers depend on the machine (2 vCPU here, shared with wrk and PostgreSQL).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

from tests.test_serve_support import DEST, ORIG, FileServer, ServeProcess, make_pki, serve_port  # noqa: E402

MODES = ("off", "log", "pg")
#: seconds after each run before its CPU is read: the records thread writes what the run queued
#: (it wakes every INTERVAL, 0.25 s), the log thread its last lines
SETTLE = 1.0
TABLE = "call_records"


def toml(pki: Any, x5u: FileServer, port: int, workers: int, mode: str, pg: str) -> str:
    records = {"off": "log = false", "ctl": "log = false", "log": "log = true", "pg": f'log = true\ndatabase = "{pg}"\nqueue_size = 100000',
               "db": f'log = false\ndatabase = "{pg}"\nqueue_size = 100000'}[mode]
    return f"""[server]
http = "127.0.0.1:{port}"
workers = {workers}
log_level = "WARNING"

[signing]
key = "{pki.sp_key}"
x5u = "{x5u.url('sp-chain.pem')}"
spc = "1234"

[verification]
trust_anchors = ["{pki.root}"]
allow_http_x5u = true
allow_private_x5u = true

[records]
{records}
"""


def post(port: int, path: str, body: bytes) -> bytes:
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def wrk_start(port: int, path: str, body_file: Path, seconds: float, connections: int, workdir: Path,
              cpus: set[int] | None = None) -> subprocess.Popen[str]:
    """One ``wrk`` run (``-t1``), started: POSTs of ``body_file`` to ``path`` for ``seconds``."""
    script = workdir / f"post-{port}-{body_file.stem}.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f'local f = io.open("{body_file}", "rb"); wrk.body = f:read("*a"); f:close()\n')
    return subprocess.Popen(["wrk", "-t1", f"-c{connections}", f"-d{max(1, int(seconds))}s", "--timeout", "30s", "-s", str(script), f"http://127.0.0.1:{port}{path}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)


def wrk_result(proc: subprocess.Popen[str], seconds: float) -> tuple[float, int]:
    """``(requests per second, requests)`` of a run of :func:`wrk_start`, once it ended."""
    out, _ = proc.communicate(timeout=seconds + 60)
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    if m is None or n is None:
        raise SystemExit(f"no wrk figure:\n{out}")
    return float(m.group(1)), int(n.group(1))


def wrk(port: int, path: str, body_file: Path, seconds: float, connections: int, workdir: Path, cpus: set[int] | None = None) -> tuple[float, int]:
    """``(requests per second, requests)`` of one ``wrk`` run."""
    return wrk_result(wrk_start(port, path, body_file, seconds, connections, workdir, cpus), seconds)


def cpu_split() -> tuple[set[int], set[int]] | None:
    """``(serve's CPUs, the load's CPUs)``: the last CPU this process may use for ``serve``, the
    others for ``wrk`` and the database server; None with a single CPU."""
    cpus = sorted(os.sched_getaffinity(0))
    return ({cpus[-1]}, set(cpus[:-1])) if len(cpus) > 1 else None


def pin_group(pgid: int, cpus: set[int]) -> None:
    """Every thread of every live process of process group ``pgid`` (``serve``, its workers and
    their records threads) onto ``cpus``."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if int((d / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for t in (d / "task").iterdir():
                os.sched_setaffinity(int(t.name), cpus)
        except (OSError, ValueError):
            continue


#: the PostgreSQL application_name of the records connections of the benchmark's serve
APP = "stirshaken-bench-records"


def with_app(url: str) -> str:
    """``url`` with ``application_name`` = :data:`APP` (so that :func:`pin_backends` finds its server processes)."""
    return url + ("&" if "?" in url else "?") + f"application_name={APP}"


def pin_backends(pg: str, cpus: set[int], nice: int = 10) -> str:
    """The PostgreSQL server processes serving the benchmark's records connections onto the
    load's ``cpus``, at ``nice`` (as a database on its own host: its work neither takes serve's
    CPU nor, in bursts of 1,000-row inserts, starves the load generator of the shared one).
    Returns what was done, for the report."""
    import sqlalchemy as sa

    from stirshaken.serve.config import RecordsConfig

    e = sa.create_engine(RecordsConfig(database=pg).url)
    try:
        with e.connect() as c:
            pids = [int(x) for x in c.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE application_name = :a"), {"a": APP}).scalars()]
    finally:
        e.dispose()
    done = 0
    for pid in pids:
        try:
            os.sched_setaffinity(pid, cpus)
            os.setpriority(os.PRIO_PROCESS, pid, nice)
            done += 1
        except OSError:
            pass
    return f"{done} of {len(pids)} PostgreSQL server processes on CPU {sorted(cpus)} at nice {nice}"


def pg_count(pg: str) -> int:
    """Rows in the records table of ``pg`` (0: no table yet)."""
    import sqlalchemy as sa

    from stirshaken.serve.config import RecordsConfig

    e = sa.create_engine(RecordsConfig(database=pg).url)
    try:
        with e.connect() as c:
            if not sa.inspect(c).has_table(TABLE):
                return 0
            return int(c.execute(sa.text(f"SELECT count(*) FROM {TABLE}")).scalar() or 0)
    finally:
        e.dispose()


def metric(port: int, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def group_run_ns(pgid: int) -> int:
    """Nanoseconds on a CPU (``/proc/<pid>/task/<tid>/schedstat``, scheduler clock: finer than
    :func:`group_cpu`'s ticks) used so far by every thread of every live process of process group ``pgid``."""
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if int((d / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for t in (d / "task").iterdir():
                total += int((t / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


def postgres_server(pg: str) -> list[int]:
    """The pids of the PostgreSQL server of ``pg`` (the postmaster and its children: the background
    processes and the backends), when it runs on this machine and this process may read them."""
    import sqlalchemy as sa

    from stirshaken.serve.config import RecordsConfig

    e = sa.create_engine(RecordsConfig(database=pg).url)
    try:
        with e.connect() as c:
            data = str(c.execute(sa.text("SHOW data_directory")).scalar())
    except Exception:  # noqa: BLE001 - not ours to pin: the report says so
        return []
    finally:
        e.dispose()
    try:
        postmaster = int((Path(data) / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [postmaster]
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(d.name))
            except (OSError, ValueError, IndexError):
                continue
    return pids


def pin_server(pids: list[int], cpus: set[int] | None) -> int:
    """``pids`` onto ``cpus`` (None: every CPU of this machine, as they were); returns how many."""
    target = cpus if cpus is not None else set(range(os.cpu_count() or 1))
    done = 0
    for pid in pids:
        try:
            for t in Path(f"/proc/{pid}/task").iterdir():
                os.sched_setaffinity(int(t.name), target)
            done += 1
        except (OSError, ValueError):
            continue
    return done


def throughput(a: argparse.Namespace) -> None:
    """One ``serve`` per mode, all started first and kept; then ``--rounds`` rounds, each running
    every (mode, operation) for ``--seconds`` in an order that alternates from round to round.
    Each run's CPU is that ``serve``'s own (scheduler nanoseconds of all its threads) from the run's
    start to the start of its next run (after the last, a settle of :data:`SETTLE` seconds), so
    that what its records threads do after ``wrk`` ends is in it.
    Ratios are taken per round (a mode against records off in the same round, seconds apart),
    then their median: a slow spell of the shared machine hits both sides of a ratio."""
    import orjson

    if a.modes:
        modes = ["off"] + [m for m in a.modes.split(",") if m != "off"]
    else:
        modes = [m for m in MODES if m != "pg" or not a.no_pg] + (["db"] if a.db_only and not a.no_pg else []) + (["ctl"] if a.control else [])
    dbs = [m for m in modes if m in ("pg", "db")]  # the modes that write to PostgreSQL
    rows_before = pg_count(a.pg) if dbs else 0
    split = cpu_split() if not a.no_pin else None
    equalise = "pg" in modes and split is not None and a.db_load
    if equalise:
        load_database(a.pg, create=True)
    load = split[1] if split else None
    server = postgres_server(a.pg) if dbs and split else []
    if split:
        pinned = pin_server(server, load)
        print(f"serve on CPU {sorted(split[0])}; wrk on CPU {sorted(split[1])}"
              + (f"; PostgreSQL's server ({pinned} processes: postmaster, background processes, backends) on CPU {sorted(split[1])}"
                 if dbs else ""), flush=True)
    work = Path(tempfile.mkdtemp(prefix="bench_records."))
    pki = make_pki(work / "pki")
    x5u = FileServer(work / "pki")
    ops = ("signing", "verification")
    rps: dict[tuple[str, str], list[float]] = {(m, op): [] for m in modes for op in ops}
    per_cpu: dict[tuple[str, str], list[float]] = {(m, op): [] for m in modes for op in ops}
    serves: dict[str, tuple[ServeProcess, int]] = {}
    try:
        for mode in modes:
            port = serve_port()
            serves[mode] = (ServeProcess(work, toml(pki, x5u, port, a.workers, mode, with_app(a.pg)), port, name=f"serve-{mode}"), port)
            if split:
                pin_group(serves[mode][0].proc.pid, split[0])
        def bodies(mode: str) -> None:
            """Fresh request bodies for the serve of ``mode``, ``<mode>-signing.json`` and
            ``<mode>-verification.json`` (a PASSporT's ``iat`` is stale after 60 s: RFC 8224 §6.2.2)."""
            port = serves[mode][1]
            now = int(time.time())
            sign = orjson.dumps({"signingRequest": {"attest": "A", "dest": {"tn": [DEST]}, "iat": now, "orig": {"tn": ORIG},
                                                    "origid": "123e4567-e89b-12d3-a456-426614174000"}})
            identity = orjson.loads(post(port, "/stir/v1/signing", sign))["signingResponse"]["identity"]
            verify = orjson.dumps({"verificationRequest": {"from": {"tn": ORIG}, "to": {"tn": [DEST]}, "time": now, "identity": identity}})
            assert b"TN-Validation-Passed" in post(port, "/stir/v1/verification", verify)
            (work / f"{mode}-signing.json").write_bytes(sign)
            (work / f"{mode}-verification.json").write_bytes(verify)

        warm = 0.0
        for mode, (serve, port) in serves.items():  # warm-up: caches, the x5u fetched, the records connection open
            bodies(mode)
            for op in ops:
                warm = max(warm, wrk(port, f"/stir/v1/{op}", work / f"{mode}-{op}.json", 1, a.connections, work, load)[0])
        if split and dbs:
            print(f"  {pin_backends(a.pg, load)}", flush=True)
        ghost = start_db_load(a.pg, warm, load) if equalise else None
        if ghost is not None:
            print(f"  the equalising load: {warm:,.0f} records/s into {LOAD_DB}, all the run long", flush=True)
        try:
            for op in ops:
                # a run's CPU: from its start to the start of the same serve's next run (or the
                # settle after the last): what its records threads did after wrk ended is in it,
                # and the serve's idle time in between (the other modes' runs) is a few ms
                open_: dict[str, tuple[int, int]] = {}

                def close(mode: str, now_ns: int) -> None:
                    c0, n = open_.pop(mode)
                    cpu = (now_ns - c0) / 1e9
                    per_cpu[(mode, op)].append(n / cpu if cpu > 0 else 0.0)

                for rnd in range(a.rounds):
                    if a.together:
                        # every mode at once, each serve with its own wrk: the machine's slow and
                        # fast spells hit all of them alike (they share serve's CPU)
                        for mode in modes:
                            bodies(mode)
                        starts = {mode: group_run_ns(serves[mode][0].proc.pid) for mode in modes}
                        for mode in modes:
                            if mode in open_:
                                close(mode, starts[mode])
                        procs = {mode: wrk_start(serves[mode][1], f"/stir/v1/{op}", work / f"{mode}-{op}.json", a.seconds, a.connections, work, load)
                                 for mode in modes}
                        for mode, proc in procs.items():
                            r, n = wrk_result(proc, a.seconds)
                            open_[mode] = (starts[mode], n)
                            rps[(mode, op)].append(r)
                        print(f"  {op:12s} round {rnd + 1:2d} " + "  ".join(f"{m} {rps[(m, op)][-1]:7,.0f}" for m in modes) + " req/s", flush=True)
                        time.sleep(0.3)  # a pause between rounds (what the records threads write now is in the next interval)
                        continue
                    for mode in modes[rnd % len(modes):] + modes[:rnd % len(modes)]:  # each mode first, middle, last in turn
                        serve, port = serves[mode]
                        bodies(mode)
                        c0 = group_run_ns(serve.proc.pid)
                        if mode in open_:
                            close(mode, c0)
                        r, n = wrk(port, f"/stir/v1/{op}", work / f"{mode}-{op}.json", a.seconds, a.connections, work, load)
                        open_[mode] = (c0, n)
                        rps[(mode, op)].append(r)
                        print(f"  {op:12s} round {rnd + 1:2d} {mode:4s} {r:9,.0f} req/s", flush=True)
                time.sleep(SETTLE)
                for mode in list(open_):
                    close(mode, group_run_ns(serves[mode][0].proc.pid))
        finally:
            if ghost is not None:
                ghost.kill()
                ghost.wait()
        if dbs:
            time.sleep(1.5)  # the records thread empties its queue
            written = sum(int(metric(serves[m][1], "stirshaken_records_written_total")) for m in dbs)
            dropped = sum(metric(serves[m][1], "stirshaken_records_dropped_total") for m in dbs)
            rows = pg_count(a.pg) - rows_before
            print(f"PostgreSQL {TABLE}: {rows:,} new rows, written counted {written:,}, dropped {dropped:,.0f} "
                  f"({'OK' if rows == written and not dropped else 'MISMATCH'})")
    finally:
        for serve, _ in serves.values():
            serve.stop()
        if "log" in serves:
            lines = sum(1 for line in serves["log"][0].log.read_text().splitlines() if '"logger":"stirshaken.records"' in line)
            print(f"log: {lines:,} record lines")
        if server:
            pin_server(server, None)
        x5u.close()
        if equalise:
            load_database(a.pg, create=False)
        shutil.rmtree(work, ignore_errors=True)
    for title, data, unit in (("REST throughput (wall clock)", rps, "req/s"),
                              ("Requests per CPU second of serve (its records threads included, PostgreSQL's server not)", per_cpu, "/CPU s")):
        print(f"{title}, {a.rounds} interleaved rounds of {a.seconds:g} s (workers={a.workers}, wrk -t1 -c{a.connections});"
              " ratio: median of the rounds' ratios to records off [lowest, highest]" + (" (ctl: records off too, the noise floor)" if a.control else "") + ":")
        for op in ops:
            for mode in modes:
                med = statistics.median(data[(mode, op)])
                if mode == "off":
                    print(f"  {op:12s} records {mode:3s} {med:9,.0f} {unit}")
                    continue
                ratios = sorted(x / y for x, y in zip(data[(mode, op)], data[("off", op)]) if y > 0)
                ratio = statistics.median(ratios)
                verdict = "" if mode == "ctl" else f" ({'OK' if ratio >= 0.90 else 'MISSED'}: goal >= 0.90)"
                print(f"  {op:12s} records {mode:3s} {med:9,.0f} {unit}  ratio {ratio:.3f} [{ratios[0]:.3f}, {ratios[-1]:.3f}]{verdict}")


# --- instructions ----------------------------------------------------------------------------


def _loop(mode: str, n: int) -> None:
    """The program counted under callgrind: ``n`` REST signing requests through RestAPI.handle."""
    import asyncio

    from cryptography.hazmat.primitives.asymmetric import ec

    from stirshaken.serve.config import SigningConfig, TenantConfig
    from stirshaken.serve.metrics import Metrics
    from stirshaken.serve.records import Records
    from stirshaken.serve.rest import SIGNING_PATH, RestAPI
    from stirshaken.serve.signing import SigningService

    key = ec.generate_private_key(ec.SECP256R1())
    svc = SigningService(SigningConfig(default=TenantConfig(name="default", key=key, x5u="https://cr.example.net/sp.pem", spc="1234")))
    from stirshaken.serve.logoutput import LogOutput

    log_file = LogOutput(os.open(os.devnull, os.O_WRONLY))  # as serve's workers write stderr (its thread counted)
    pg = os.environ.get("BENCH_RECORDS_PG", "")
    database = {"queue": "sqlite:///unused.db", "pg": pg, "log+pg": pg}.get(mode, "")
    records = None if mode == "off" else Records(log=mode in ("log", "log+pg"), database=database, queue_size=10**9, stream=log_file)

    api = RestAPI(signing=svc, verifier=None, metrics=Metrics(), records=records)
    headers = {"content-type": "application/json", "x-requestid": "123e4567-e89b-12d3-a456-426614174000"}
    body = (b'{"signingRequest":{"attest":"A","dest":{"tn":["12155551213"]},"iat":%d,"orig":{"tn":"12155551212"},'
            b'"origid":"123e4567-e89b-12d3-a456-426614174000"}}' % int(time.time()))

    async def run() -> None:
        for i in range(n):
            r = api.handle("POST", SIGNING_PATH, headers, body, True)
            assert r[0] == 200, r  # type: ignore[index]
            if mode == "queue" and records is not None and records.queue is not None:
                records.queue.clear()  # as the database thread would (not counted: it is not started)
            if i % 32 == 31:
                await asyncio.sleep(0)  # one event-loop iteration per 32 requests, as under load

    asyncio.run(run())
    if records is not None:
        records.flush()
    log_file.drain(60)
    if mode in ("pg", "log+pg") and records is not None:
        # the database thread writes the queued records in full batches, as under load (started
        # only now: under callgrind's slowness it would otherwise write a few records per batch)
        records.start()
        records.close(timeout=120)  # every record written before the count ends
        if records.writer is not None and records.writer.written != n:
            raise SystemExit(f"pg: {records.writer.written} of {n} records written")


def instructions(calls: int = 1000, pg: str = "") -> None:
    if shutil.which("valgrind") is None:
        print("instructions: valgrind not installed (Debian package valgrind)")
        return

    def count(mode: str, n: int) -> int:
        p = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__, "--loop", mode, str(n)],
                           capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0", "BENCH_RECORDS_PG": pg},
                           cwd=tempfile.gettempdir())
        m = re.search(r"Collected : (\d+)", p.stderr)
        if p.returncode != 0 or m is None:
            raise SystemExit(f"callgrind run failed:\n{p.stderr[-2000:]}")
        return int(m.group(1))

    modes = ("off", "log", "queue", "pg", "log+pg") if pg else ("off", "log", "queue")
    per = {mode: (count(mode, 1 + calls) - count(mode, 1)) / calls for mode in modes}
    print(f"instructions per REST signing request (RestAPI.handle, ES256 included; callgrind, {calls} requests; "
          "pg: to PostgreSQL only, log+pg: to the log and PostgreSQL (as serve's default with a database), "
          "the database thread's work counted, the server's not):")
    for mode in modes:
        extra = "" if mode == "off" else f"  (+{per[mode] - per['off']:,.0f}, {100 * (per[mode] / per['off'] - 1):+.1f} %)"
        print(f"  records {mode:6s} {per[mode]:10,.0f}{extra}")


#: the database the equalising load writes to (created on the benchmark's server, dropped after)
LOAD_DB = "stirshaken_bench_load"


def load_url(pg: str) -> str:
    """``pg`` naming :data:`LOAD_DB` instead of its database (with :data:`APP`)."""
    import sqlalchemy as sa

    from stirshaken.serve.config import RecordsConfig

    return with_app(sa.engine.make_url(RecordsConfig(database=pg).url).set(database=LOAD_DB).render_as_string(hide_password=False))


def load_database(pg: str, create: bool) -> None:
    """Create (``create``) or drop :data:`LOAD_DB` on the server of ``pg``."""
    import sqlalchemy as sa

    from stirshaken.serve.config import RecordsConfig

    e = sa.create_engine(RecordsConfig(database=pg).url, isolation_level="AUTOCOMMIT")
    try:
        with e.connect() as c:
            there = c.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": LOAD_DB}).first() is not None
            if create and not there:
                c.execute(sa.text(f"CREATE DATABASE {LOAD_DB}"))
            elif not create and there:
                c.execute(sa.text(f"DROP DATABASE {LOAD_DB} WITH (FORCE)"))
    finally:
        e.dispose()


def _db_load(url: str, rate: float) -> None:
    """The equalising load (a process of its own, see ``--db-load``): ``rate`` records a second
    queued to a records database thread of the same code as ``serve``'s, which writes them to
    ``url`` as ``serve`` would (same table, statement and batches); runs until killed."""
    from stirshaken.serve.records import FIELDS, Records

    r = Records(log=False, database=url, queue_size=10**8)
    assert r.queue is not None
    rec = dict.fromkeys(FIELDS)
    rec.update({"interface": "rest", "service": "signing", "call_id": "123e4567-e89b-12d3-a456-426614174000", "orig": ORIG, "dest": [DEST],
                "origid": "123e4567-e89b-12d3-a456-426614174001", "tenant": "default", "attest": "A", "status": 200, "spc": "1234",
                "x5u": "http://127.0.0.1:40000/sp-chain.pem", "serial": "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b", "latency": 0.000123})
    r.start()
    t0 = time.monotonic()
    n = 0
    while True:
        due = int((time.monotonic() - t0) * rate)
        if due > n:
            now = time.time()
            r._pending.extend([(rec, now)] * (due - n))  # (as add() keeps them; flush() queues them)
            r.flush()
            n = due
        time.sleep(0.01)


def start_db_load(pg: str, rate: float, cpus: set[int]) -> subprocess.Popen[bytes]:
    """:func:`_db_load` at ``rate`` in a process on ``cpus`` at nice 10 (as the database server's)."""
    return subprocess.Popen([sys.executable, __file__, "--db-load-process", load_url(pg), str(rate)],
                            preexec_fn=lambda: (os.sched_setaffinity(0, cpus), os.nice(10)))  # type: ignore[func-returns-value]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--workers", type=int, default=1)
    # 64: with 16, a slower server left wrk idle more often, so that each response had to wake
    # it, and the kernel's share per request grew with the server's cost (perf, 2026-11-30:
    # +2.9 µs of kernel time per request with the log on) - a cost of the load generator on a
    # shared machine counted as one of the records
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--no-pin", action="store_true", help="leave serve, wrk and PostgreSQL to the scheduler (default: pinned apart)")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--no-pg", action="store_true", help="leave out the PostgreSQL modes")
    ap.add_argument("--db-only", action="store_true",
                    help="add the mode db: records to PostgreSQL only (log = false), besides pg (the log and PostgreSQL)")
    ap.add_argument("--together", action="store_true",
                    help="run the modes at the same time (each serve its own wrk) instead of one after the other")
    ap.add_argument("--modes", default=None, help="the modes to run besides off, comma-separated, from log, pg, db and ctl "
                    "(e.g. --together --modes pg: records off and the log and PostgreSQL, two serves sharing one CPU)")
    ap.add_argument("--control", action="store_true",
                    help="add a second serve with records off (ctl): its ratio to off is the noise floor of the run")
    ap.add_argument("--instructions", action="store_true", help="also count instructions per request with callgrind")
    ap.add_argument("--only-instructions", action="store_true", help="only count instructions")
    ap.add_argument("--db-load", action="store_true",
                    help="run records off and log under the same database load as the pg mode (see the module docstring)")
    ap.add_argument("--loop", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--db-load-process", nargs=2, metavar=("URL", "RATE"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.modes is not None:
        given = [m.strip() for m in a.modes.split(",")]
        unknown = [m for m in given if m not in ("log", "pg", "db", "ctl")]
        if unknown:
            ap.error(f"--modes: {', '.join(repr(m) for m in unknown)}: not a mode to compare with records off (log, pg, db, ctl)")
        if len(set(given)) != len(given):
            ap.error(f"--modes: a mode given twice ({a.modes})")
        if a.no_pg and {"pg", "db"} & set(given):
            ap.error("--modes names a PostgreSQL mode (pg, db) and --no-pg leaves them out: give one or the other")
        if a.control or a.db_only:
            ap.error("--modes replaces --control and --db-only: add ctl or db to --modes")
        a.modes = ",".join(given)
    if a.db_only and a.no_pg:
        ap.error("--db-only adds a PostgreSQL mode and --no-pg leaves them out: give one or the other")
    for name, low in (("rounds", 1), ("workers", 1), ("connections", 1)):
        if getattr(a, name) < low:
            ap.error(f"--{name} must be at least {low}")
    if not a.seconds > 0:
        ap.error("--seconds must be more than 0")
    if a.db_load_process:
        _db_load(a.db_load_process[0], float(a.db_load_process[1]))
        return 0
    if a.loop:
        _loop(a.loop[0], int(a.loop[1]))
        return 0
    if a.instructions or a.only_instructions:
        from stirshaken.serve.config import RecordsConfig

        instructions(pg="" if a.no_pg else RecordsConfig(database=a.pg).url)
    if not a.only_instructions:
        if shutil.which("wrk") is None:
            raise SystemExit("wrk is not installed (tests/peers/install.sh)")
        throughput(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
