"""Per-call records (serve/records.py) of a real ``stirshaken serve``: one record per SIP and REST
signing and verification, in the JSON and the text log format, in SQLite and in PostgreSQL; and a
records database that is down (calls still answered, drops counted, /healthz degraded, the change
logged once each way, the queued records written once it is back)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import io
import json
import logging
import os
import re
import socket
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
import urllib.request

from stirshaken.core.certificates import load_certificates
from stirshaken.serve.records import FIELDS, FLUSH_DELAY, LOGGER, BatchedStreamHandler, JSONRecordFormatter, Records, Shared, as_fields, call_records, text_value

from tests.test_pki_support import postgres_database
from tests.test_serve_support import DEST, ORIG, FileServer, ServeProcess, make_pki, serve_port, serve_toml

ENVELOPE = ("ts", "level", "logger", "msg", "node", "worker")
ORIGID = "123e4567-e89b-12d3-a456-426614174000"
CALLS = 9  # the requests of calls(): one record each


# --- helpers -------------------------------------------------------------------------------------


def http(port: int, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    h = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=orjson.dumps(body) if body is not None else None, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def invite(call_id: str, *, orig: str = ORIG, dest: str = DEST, extra: str = "") -> bytes:
    return (f"INVITE sip:{dest}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-{call_id}\r\n"
            f"From: <sip:{orig}@127.0.0.1>;tag=a\r\nTo: <sip:{dest}@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Max-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n").encode()


def udp(port: int, data: bytes) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        s.sendto(data, ("127.0.0.1", port))
        return s.recv(65535).decode()


def header(resp: str, name: str) -> str:
    m = re.search(rf"^{name}: (.*)$", resp, re.MULTILINE | re.IGNORECASE)
    assert m, resp
    return m.group(1).strip()


def calls(ports: dict[str, int]) -> dict[str, Any]:
    """Sign and verify over REST and SIP, one failing verification each; returns what the
    records must say."""
    now = int(time.time())
    st, body = http(ports["http"], "/stir/v1/signing", {"signingRequest": {"attest": "A", "dest": {"tn": [DEST]}, "iat": now,
                                                                          "orig": {"tn": ORIG}, "origid": ORIGID}},
                    {"X-RequestID": "rest-sign-1"})
    assert st == 200, body
    identity = orjson.loads(body)["signingResponse"]["identity"]
    for rid, frm in (("rest-verify-ok", ORIG), ("rest-verify-bad", "12155550000")):
        st, body = http(ports["http"], "/stir/v1/verification", {"verificationRequest": {"from": {"tn": frm}, "to": {"tn": [DEST]},
                                                                                        "time": now, "identity": identity}},
                        {"X-RequestID": rid})
        assert st == 200, body
    st, body = http(ports["http"], "/stir/v1/signing", {"signingRequest": {"attest": "A", "dest": {"tn": [DEST]}, "iat": 5,
                                                                          "orig": {"tn": ORIG}}}, {"X-RequestID": "rest-sign-stale"})
    assert st == 400, body
    # the extensions of ATIS-1000082: a div (RFC 8946) and an rcd (RFC 9795) PASSporT
    st, body = http(ports["http"], "/stir/v1/signing", {"signingRequest": {"ppt": "div", "orig": {"tn": ORIG}, "dest": {"tn": ["12155550199"]},
                                                                          "div": {"tn": DEST}, "iat": now}}, {"X-RequestID": "rest-sign-div"})
    assert st == 200, body
    st, body = http(ports["http"], "/stir/v1/signing", {"signingRequest": {"ppt": "rcd", "orig": {"tn": ORIG}, "dest": {"tn": [DEST]},
                                                                          "iat": now, "rcd": {"nam": "Example Bank"}}}, {"X-RequestID": "rest-sign-rcd"})
    assert st == 200, body
    r = udp(ports["sign"], invite("sip-sign-1"))
    assert r.startswith("SIP/2.0 302"), r
    sip_identity = header(r, "Identity")
    assert udp(ports["verify"], invite("sip-verify-ok", extra=f"Identity: {sip_identity}\r\n")).startswith("SIP/2.0 302")
    r = udp(ports["verify"], invite("sip-verify-bad", orig="12155550000", extra=f"Identity: {sip_identity}\r\n"))
    assert r.startswith("SIP/2.0 302") and "verstat=No-TN-Validation" in r
    return {"identity": identity, "sip_identity": sip_identity}


def check(records: dict[str, dict[str, Any]], serial: str) -> None:
    """The records of :func:`calls`, keyed by call_id (values as the JSON log carries them).  A
    failed verification names the x5u its Identity header gave, but no origid, attestation or
    certificate: claims that did not verify are not reported as facts."""
    x5u = records["rest-sign-1"]["x5u"]
    assert x5u.endswith("/sp-chain.pem")
    want = {
        "rest-sign-1": dict(interface="rest", service="signing", origid=ORIGID, orig=ORIG, dest=[DEST], tenant="default", attest="A",
                            x5u=x5u, verstat=None, status=200, code=None, reason=None, spc="1234", serial=None),
        "rest-verify-ok": dict(interface="rest", service="verification", origid=ORIGID, orig=ORIG, dest=[DEST], tenant=None, attest="A",
                               x5u=x5u, verstat="TN-Validation-Passed", status=200, code=None, reason=None, spc="1234", serial=serial),
        "rest-verify-bad": dict(interface="rest", service="verification", origid=None, orig="12155550000", dest=[DEST], tenant=None,
                                attest=None, x5u=x5u, verstat="No-TN-Validation", status=200, code=438, spc=None, serial=None),
        "rest-sign-stale": dict(interface="rest", service="signing", origid=None, orig=None, dest=None, tenant=None, attest=None,
                                x5u=None, verstat=None, status=400, code=None, spc=None, serial=None),
        "rest-sign-div": dict(interface="rest", service="signing", origid=None, orig=ORIG, dest=["12155550199"], tenant="default",
                              attest=None, x5u=x5u, verstat=None, status=200, code=None, reason="div PASSporT signed (RFC 8946)", spc="1234"),
        "rest-sign-rcd": dict(interface="rest", service="signing", origid=None, orig=ORIG, dest=[DEST], tenant="default",
                              attest=None, x5u=x5u, verstat=None, status=200, code=None, reason="rcd PASSporT signed (RFC 9795)", spc="1234"),
        "sip-sign-1": dict(interface="sip", service="signing", orig=ORIG, dest=[DEST], tenant="default", attest="C", x5u=x5u,
                           verstat=None, status=302, code=None, reason=None, spc="1234", serial=None),
        "sip-verify-ok": dict(interface="sip", service="verification", orig=ORIG, dest=[DEST], tenant=None, attest="C", x5u=x5u,
                              verstat="TN-Validation-Passed", status=302, code=None, reason=None, spc="1234", serial=serial),
        "sip-verify-bad": dict(interface="sip", service="verification", origid=None, orig="12155550000", dest=[DEST], tenant=None,
                               attest=None, x5u=x5u, verstat="No-TN-Validation", status=302, code=438, spc=None, serial=None),
    }
    assert set(want) <= set(records), sorted(records)
    for cid, fields in want.items():
        rec = records[cid]
        assert {k: rec[k] for k in fields} == fields, (cid, rec)
        assert isinstance(rec["latency"], float) and 0 < rec["latency"] < 30, rec
    # the specific cause, not the phrase of the code
    assert "orig" in records["rest-verify-bad"]["reason"] and "match" in records["rest-verify-bad"]["reason"]
    assert "orig" in records["sip-verify-bad"]["reason"] and "match" in records["sip-verify-bad"]["reason"]
    assert records["rest-sign-stale"]["reason"].startswith("SVC4005: Invalid 'iat' parameter value: 5 is ")
    # one origid per SIP signing (a new UUID: none was given) and the same one at the verifier
    assert uuid.UUID(records["sip-sign-1"]["origid"]).version == 4
    assert records["sip-verify-ok"]["origid"] == records["sip-sign-1"]["origid"]


def sp_serial(pki: Any) -> str:
    return format(load_certificates(pki.sp_cert.read_bytes())[0].serial_number, "x")


def record_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if LOGGER in line]


@pytest.fixture(scope="module")
def pki_x5u(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, FileServer, Path]]:
    d = tmp_path_factory.mktemp("records")
    pki = make_pki(d / "pki")
    x5u = FileServer(d / "pki")
    try:
        yield pki, x5u, d
    finally:
        x5u.close()


@contextlib.contextmanager
def serving(d: Path, pki: Any, x5u: FileServer, name: str, records: str = "", text: bool = False,
            workers: int = 1, engine: str | None = None) -> Iterator[tuple[ServeProcess, dict[str, int]]]:
    ports = {"http": serve_port(), "sign": serve_port(), "verify": serve_port()}
    toml = serve_toml(pki, x5u, http=ports["http"], sip_signing=ports["sign"], sip_verification=ports["verify"], workers=workers,
                      engine=engine)
    if text:
        toml = toml.replace('log_level = "INFO"', 'log_level = "INFO"\nlog_format = "text"')
    if records:
        toml += "\n[records]\n" + records + "\n"
    p = ServeProcess(d, toml, ports["http"], name=name)
    try:
        yield p, ports
    finally:
        assert p.stop() == 0


def metric(port: int, name: str) -> float:
    st, body = http(port, "/metrics")
    assert st == 200
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines() if line.startswith(name))


def wait_for(what: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = what()
        if v:
            return v
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


# --- the log ---------------------------------------------------------------------------------------


def test_records_in_the_json_log(pki_x5u: tuple[Any, FileServer, Path]) -> None:
    pki, x5u, d = pki_x5u
    with serving(d, pki, x5u, "rec-json") as (p, ports):  # [records] log is on by default
        calls(ports)
    lines = record_lines(p.log)
    docs = [json.loads(line) for line in lines]
    # the envelope first, then every field once (a JSON object's members have no order, RFC 8259
    # §4: a REST signing record gives its signer's shared fields first, records.Shared)
    assert all(tuple(doc)[:len(ENVELOPE)] == ENVELOPE and sorted(tuple(doc)[len(ENVELOPE):]) == sorted(FIELDS) for doc in docs), docs[0]
    assert all(len(line.split('"call_id":')) == 2 for line in lines)
    assert all(doc["logger"] == LOGGER and doc["level"] == "INFO" and doc["msg"] == "call" and doc["worker"] == 0
               and doc["node"] == socket.gethostname() for doc in docs)
    by_id = {doc["call_id"]: doc for doc in docs}
    assert len(by_id) == len(docs) == CALLS  # one record per call, not also through the root logger
    check(by_id, sp_serial(pki))
    ts = by_id["rest-sign-1"]["ts"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", ts) and abs(
        time.time() - __import__("datetime").datetime.fromisoformat(ts).timestamp()) < 120


def parse_text(line: str) -> dict[str, Any]:
    """A text record line back into values as the JSON log has them."""
    head, _, pairs = line.partition(f" {LOGGER}: call ")
    out: dict[str, Any] = {}
    for k, v in re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', pairs):
        if v.startswith('"'):
            out[k] = json.loads(v)
        elif v == "-":
            out[k] = None
        elif k == "dest":
            out[k] = v.split(",")
        elif k in ("status", "code"):
            out[k] = int(v)
        elif k == "latency":
            out[k] = float(v)
        else:
            out[k] = v
    assert list(out) == list(FIELDS), line
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO \[0\]", head), head
    return out


def test_records_in_the_text_log(pki_x5u: tuple[Any, FileServer, Path]) -> None:
    pki, x5u, d = pki_x5u
    with serving(d, pki, x5u, "rec-text", records="log = true", text=True) as (p, ports):
        calls(ports)
    lines = record_lines(p.log)
    assert len(lines) == CALLS and not any(line.lstrip().startswith("{") for line in lines)
    records = {r["call_id"]: r for r in map(parse_text, lines)}
    check(records, sp_serial(pki))


def test_records_off(pki_x5u: tuple[Any, FileServer, Path]) -> None:
    pki, x5u, d = pki_x5u
    with serving(d, pki, x5u, "rec-off", records="log = false") as (p, ports):
        calls(ports)
        st, text = http(ports["http"], "/metrics")
        assert b"stirshaken_records_" not in text
    assert record_lines(p.log) == []


# --- databases -------------------------------------------------------------------------------------


def db_records(url: str) -> dict[str, dict[str, Any]]:
    """The rows of call_records as the JSON log has the values (dest a list)."""
    e = sa.create_engine(url)
    t = call_records(sa.MetaData())
    try:
        with e.connect() as c:
            rows = [dict(r._mapping) for r in c.execute(sa.select(t))]
    finally:
        e.dispose()
    for r in rows:
        r["dest"] = r["dest"].split(",") if r["dest"] else None
    return {r["call_id"]: r for r in rows}


def test_records_in_sqlite(pki_x5u: tuple[Any, FileServer, Path]) -> None:
    pki, x5u, d = pki_x5u
    db = d / "records.db"
    with serving(d, pki, x5u, "rec-sqlite", records='database = "records.db"', workers=2) as (p, ports):
        calls(ports)
        wait_for(lambda: metric(ports["http"], "stirshaken_records_written_total") >= CALLS)
        assert metric(ports["http"], "stirshaken_records_dropped_total") == 0
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600  # created by the service: owner only
    rows = db_records(f"sqlite:///{db}")
    assert len(rows) == CALLS
    check(rows, sp_serial(pki))
    assert all(r["worker"] in (0, 1) and r["time"] is not None for r in rows.values())
    assert {r["node"] for r in rows.values()} == {socket.gethostname()}  # [records] node: the host's name by default
    assert len(record_lines(p.log)) == CALLS  # the log too (log = true is the default)


def test_records_in_postgresql(pki_x5u: tuple[Any, FileServer, Path]) -> None:
    pki, x5u, d = pki_x5u
    with postgres_database() as url:
        plain = url.replace("postgresql+psycopg://", "postgresql://")  # what a user writes; psycopg 3 is taken
        with serving(d, pki, x5u, "rec-pg", records=f'database = "{plain}"\nlog = false\nnode = "edge-1.example"') as (p, ports):
            calls(ports)
            wait_for(lambda: metric(ports["http"], "stirshaken_records_written_total") >= CALLS)
            st, body = http(ports["http"], "/healthz")
            assert orjson.loads(body) == {"status": "ok", "reasons": []}
        rows = db_records(url)
        assert len(rows) == CALLS
        check(rows, sp_serial(pki))
        assert rows["rest-sign-1"]["time"].tzinfo is not None
        assert {r["node"] for r in rows.values()} == {"edge-1.example"}
        assert abs(rows["rest-sign-1"]["time"].timestamp() - time.time()) < 120  # binary COPY: the instant, in UTC
        assert all(isinstance(r["latency"], float) and 0 < r["latency"] < 10 for r in rows.values())
        assert record_lines(p.log) == []  # log = false: the database only


class Gate:
    """A loopback TCP forwarder to the PostgreSQL server that can be opened and closed: closed,
    nothing listens on its port (connections are refused) and every forwarded connection is cut."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)):
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.listener: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()

    def open(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(16)
        self.listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def close(self) -> None:
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in progress (close() alone would not)
            self.listener.close()
            self.listener = None
        with self.lock:
            for c in self.conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            self.conns.clear()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                a, _ = ls.accept()
            except OSError:
                return
            b = socket.create_connection(self.target)
            with self.lock:
                self.conns += [a, b]
            for src, dst in ((a, b), (b, a)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


def health(port: int) -> dict[str, Any]:
    st, body = http(port, "/healthz")
    assert st == 200
    return orjson.loads(body)


def test_records_database_down_then_back(pki_x5u: tuple[Any, FileServer, Path]) -> None:
    """PostgreSQL behind a gate that starts closed: every call is answered, the records beyond
    the queue are dropped and counted, /healthz says degraded; the gate opens: the queued records
    are written, /healthz is ok again; each change is logged once."""
    pki, x5u, d = pki_x5u
    gate = Gate()
    with postgres_database() as url:
        via_gate = url.replace("127.0.0.1:5432", f"127.0.0.1:{gate.port}")
        with serving(d, pki, x5u, "rec-down", records=f'database = "{via_gate}"\nqueue_size = 5\nlog = false') as (p, ports):
            now = int(time.time())
            for i in range(20):
                st, body = http(ports["http"], "/stir/v1/signing", {"signingRequest": {"attest": "A", "dest": {"tn": [DEST]}, "iat": now,
                                                                                      "orig": {"tn": ORIG}}}, {"X-RequestID": f"down-{i}"})
                assert st == 200, body
            doc = wait_for(lambda: (h := health(ports["http"]))["status"] == "degraded" and h)
            assert len(doc["reasons"]) == 1 and doc["reasons"][0].startswith("records database down: "), doc
            assert metric(ports["http"], 'stirshaken_records_dropped_total{reason="queue_full"}') == 15
            assert metric(ports["http"], "stirshaken_records_written_total") == 0
            gate.open()
            wait_for(lambda: health(ports["http"])["status"] == "ok")
            wait_for(lambda: metric(ports["http"], "stirshaken_records_written_total") == 5)
            gate.close()  # down again: noticed by the next insert (or the idle check)
            st, _ = http(ports["http"], "/stir/v1/signing", {"signingRequest": {"attest": "A", "dest": {"tn": [DEST]}, "iat": now,
                                                                               "orig": {"tn": ORIG}}}, {"X-RequestID": "down-again"})
            assert st == 200
            wait_for(lambda: health(ports["http"])["status"] == "degraded")
        rows = db_records(url)
        assert sorted(rows) == sorted(f"down-{i}" for i in range(5))  # the queue kept the first five
    gate.close()
    log = p.log.read_text()
    assert log.count("records database down; records are queued") == 2 and log.count("records database reachable again") == 1
    assert log.count('"health degraded"') >= 2 and "password" not in log


# --- the records object itself --------------------------------------------------------------------


async def test_lines_of_one_loop_iteration_are_written_together() -> None:
    class Counting(io.StringIO):
        writes = 0

        def write(self, s: str) -> int:
            Counting.writes += 1
            return super().write(s)

    out = Counting()
    r = Records(log=True, stream=out, worker=2)
    for i in range(3):
        r.add({k: None for k in FIELDS} | {"interface": "rest", "service": "signing", "call_id": f"c{i}"})
    assert out.getvalue() == ""  # not yet: FLUSH_DELAY after the first line
    await asyncio.sleep(0)
    assert out.getvalue() == ""
    r.add({k: None for k in FIELDS} | {"interface": "rest", "service": "signing", "call_id": "c3"})
    await asyncio.sleep(FLUSH_DELAY + 0.05)
    assert Counting.writes == 1 and [json.loads(line)["call_id"] for line in out.getvalue().splitlines()] == ["c0", "c1", "c2", "c3"]
    for i in range(300):  # a full batch (limit 256 lines) is written at once
        r.add({k: None for k in FIELDS} | {"interface": "rest", "service": "signing", "call_id": f"d{i}"})
    assert Counting.writes == 2 and len(out.getvalue().splitlines()) == 4 + 256
    r.close()  # a worker's stop writes what is queued
    assert Counting.writes == 3 and len(out.getvalue().splitlines()) == 4 + 300


async def test_a_record_formatted_later_keeps_the_time_of_its_call_and_one_line_for_both() -> None:
    """Records are formatted at the flush (Records.flush), not in add: the line still carries the
    time of the call, the database queue gets the very lines the log wrote, and a record that finds
    the queue full is logged all the same (dropped for the database only, counted)."""
    out = io.StringIO()
    r = Records(log=True, stream=out, database="sqlite:///unused-never-started.db", queue_size=2, worker=1)
    t = time.time()
    for i in range(3):
        r.add({k: None for k in FIELDS} | {"interface": "sip", "service": "verification", "call_id": f"t{i}"})
    assert out.getvalue() == "" and not r.queue and r.dropped == 0  # kept: formatted, queued or dropped at the flush
    await asyncio.sleep(FLUSH_DELAY + 0.1)
    lines = out.getvalue().splitlines()
    assert [json.loads(x)["call_id"] for x in lines] == ["t0", "t1", "t2"]
    assert queued_lines(r) == lines[:2] and r.dropped == 1
    ts = datetime.datetime.fromisoformat(json.loads(lines[0])["ts"]).timestamp()
    assert t - 0.002 <= ts < t + FLUSH_DELAY / 2, (t, ts)  # the call's time, not the flush's (FLUSH_DELAY later)



def queued_lines(r: Records) -> list[str]:
    """The JSON lines waiting in the database queue of ``r``, in order."""
    return [x for data, n in r.queue or () for x in data.decode().splitlines()]

_text = st.one_of(st.none(), st.text(max_size=12))
_fields = st.fixed_dictionaries({}, optional={k: _text for k in FIELDS if k not in ("dest", "status", "latency")}
                                | {"dest": st.lists(st.text(max_size=12), max_size=3), "status": st.integers(100, 699),
                                   "latency": st.floats(0, 10)})


@st.composite
def _record(draw: Any) -> Any:
    """A record as Records.add takes it: a dict of some fields, or (Shared, the rest) with any of
    them shared."""
    rec = draw(_fields)
    if not draw(st.booleans()):
        return rec
    shared = draw(st.sets(st.sampled_from(FIELDS)))
    return Shared({k: v for k, v in rec.items() if k in shared}), {k: v for k, v in rec.items() if k not in shared}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_record(), st.floats(1.7e9, 1.7e9 + 5)), max_size=40))
def test_the_batch_formatter_writes_the_lines_of_the_general_one(kept: list[Any]) -> None:
    """JSONRecordFormatter.blob (a flush's loop written out) against JSONRecordFormatter.line, one
    record at a time: the same lines, in order, for records with any fields left out or shared
    (Shared), and times crossing milliseconds and seconds, in any order; each line holds every
    field once, with the record's values (as_fields)."""
    fast, general = JSONRecordFormatter(3, "n1"), JSONRecordFormatter(3, "n1")
    blob = fast.blob(kept).decode()
    assert blob == "".join(general.line(r, t) + "\n" for r, t in kept)
    for line, (rec, t) in zip(blob.splitlines(), kept):
        doc = orjson.loads(line)
        assert [doc.pop(k) for k in ("level", "logger", "msg", "node", "worker")] == ["INFO", LOGGER, "call", "n1", 3]
        assert datetime.datetime.fromisoformat(doc.pop("ts")).timestamp() == int(t * 1000) / 1000
        assert doc == as_fields(rec) and len(line.split('"interface":')) == 2


def test_other_handlers_get_log_records() -> None:
    """A handler added to the stirshaken.records logger receives the records as LogRecords (the
    record in ``call``); the installed handler still writes its line."""
    out = io.StringIO()
    r = Records(log=True, stream=out, fmt="text")
    got: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record)

    extra = Keep()
    logging.getLogger(LOGGER).addHandler(extra)
    try:
        r.add({"interface": "sip", "service": "verification", "call_id": "x y", "reason": 'the "orig" claim', "dest": ["1", "2"],
               "latency": 0.5})
    finally:
        logging.getLogger(LOGGER).removeHandler(extra)
    assert len(got) == 1 and got[0].call["call_id"] == "x y" and got[0].name == LOGGER and got[0].getMessage() == "call"  # type: ignore[attr-defined]
    line = out.getvalue().strip()
    assert line.endswith('call interface=sip service=verification call_id="x y" origid=- orig=- dest=1,2 tenant=- attest=- x5u=- '
                         'verstat=- status=- code=- reason="the \\"orig\\" claim" spc=- serial=- latency=0.500000'), line


def test_full_queue_drops_and_counts() -> None:
    r = Records(log=False, database="sqlite:///unused-never-started.db", queue_size=3)
    for i in range(5):
        r.add({"interface": "rest", "service": "signing", "call_id": str(i)})
    assert [orjson.loads(x)["call_id"] for x in queued_lines(r)] == ["0", "1", "2"] and r.dropped == 2
    assert r.counters()["stirshaken_records_dropped_total"][(("reason", "queue_full"),)] == 2
    assert r.problem == "records dropped in the last 60 s: the database queue is full"  # not "down": not tried yet
    assert not os.path.exists("unused-never-started.db")


def test_batched_handler_outside_a_loop_writes_at_once() -> None:
    out = io.StringIO()
    h = BatchedStreamHandler(out)
    h.setFormatter(logging.Formatter("%(message)s"))
    h.emit(logging.makeLogRecord({"msg": "one"}))
    assert out.getvalue() == "one\n"


def test_table_created_by_another_worker_meanwhile_is_no_outage(tmp_path: Path) -> None:
    """Two workers of one serve start on a new records database together: create_all checks, then
    creates, so the other worker's CREATE can land in between ("table call_records already
    exists").  Found with 2 workers, a fresh SQLite file and SIGTERM right after 300 answered
    INVITEs: 93-150 of the 300 rows were missing (the losing worker saw the database as down and
    dropped its queue at the stop).  Here the other worker's CREATE runs in that gap for sure."""
    db = tmp_path / "race.db"
    other = sa.create_engine(f"sqlite:///{db}")
    done: list[bool] = []

    def other_worker_first(target: Any, connection: Any, **kw: Any) -> None:
        if target.name == "call_records" and not done:
            done.append(True)
            call_records(sa.MetaData()).create(other)

    sa.event.listen(sa.Table, "before_create", other_worker_first)
    try:
        r = Records(log=False, database=f"sqlite:///{db}")
        for i in range(5):
            r.add({"interface": "sip", "service": "signing", "call_id": str(i)})
        r.start()
        r.close(timeout=5.0)
    finally:
        sa.event.remove(sa.Table, "before_create", other_worker_first)
        other.dispose()
    assert done, "the other worker's CREATE did not run"
    assert r.problem is None
    assert sorted(db_records(f"sqlite:///{db}")) == [str(i) for i in range(5)]


#: records whose values must come back from the database as they went in: None, quotes,
#: backslashes, newlines, tabs, non-ASCII and astral characters, several TNs, an empty list,
#: floats of every size
AWKWARD = [
    {"interface": "sip", "service": "verification", "call_id": 'a"b\\c\nd\te', "origid": None, "orig": "12155550000",
     "dest": ["12155551213", "12155551214", "4930123"], "tenant": None, "attest": None, "x5u": "https://cr.example.net/é.pem?a=1&b=%20",
     "verstat": "No-TN-Validation", "status": 302, "code": 438, "reason": "'orig' claim \"12155551212\" ≠ 12155550000 \U0001F4DE\r\nnext",
     "spc": None, "serial": None, "latency": 0.1 + 0.2},
    {"interface": "rest", "service": "signing", "call_id": "ü-1", "origid": "123e4567-e89b-12d3-a456-426614174000", "orig": "1",
     "dest": [], "tenant": "tenant with spaces, and, commas", "attest": "A", "x5u": "", "verstat": None, "status": 200, "code": None,
     "reason": "", "spc": "1234", "serial": "0a1b2c3d4e5f", "latency": 1e-9},
    {"interface": "rest", "service": "signing", "call_id": "x", "latency": 12345.678901234567},  # the fields left out: None
    {"interface": "rest", "service": "verification", "call_id": "y", "dest": None, "status": 500, "latency": None},
]


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
@pytest.mark.parametrize("log", ["json", "text", "off"])
def test_values_round_trip_exactly(kind: str, log: str, batched: bool, tmp_path: Path) -> None:
    """Each field comes back from the database as the record had it (``dest`` as comma-separated
    TNs, "" for an empty list), with the worker's number and the time of the record's JSON log
    line (UTC, milliseconds), whether the log writes JSON lines (the database takes the same
    line), text lines or none; each record a flush of its own (no event loop) or all of them one
    flush, one entry of the database queue (PostgreSQL splits it at the newlines between the
    lines: the newlines in the values are escaped)."""
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp_path / 'rt.db'}" if kind == "sqlite" else stack.enter_context(postgres_database())
        out = io.StringIO()
        r = Records(log=log != "off", fmt=log, database=url, worker=3, stream=out)
        before = time.time()

        async def add_all() -> None:
            for rec in AWKWARD:
                r.add(dict(rec))
            await asyncio.sleep(FLUSH_DELAY + 0.05)

        if batched:
            asyncio.run(add_all())
            assert r.queue is not None and len(r.queue) == 1 and r.queue[0][1] == len(AWKWARD)
        else:
            for rec in AWKWARD:
                r.add(dict(rec))
        after = time.time()
        r.start()
        r.close(timeout=20.0)
        assert r.writer is not None and r.writer.written == len(AWKWARD) and r.writer.rejected == 0 and r.problem is None
        e = sa.create_engine(url)
        try:
            with e.connect() as c:
                rows = {row.call_id: row._asdict() for row in c.execute(sa.select(call_records(sa.MetaData())))}
        finally:
            e.dispose()
    lines = {doc["call_id"]: doc for doc in map(json.loads, out.getvalue().splitlines())} if log == "json" else {}
    assert len(out.getvalue().splitlines()) == (0 if log == "off" else len(AWKWARD))  # (newlines in values escaped)
    assert sorted(rows) == sorted(rec["call_id"] for rec in AWKWARD)
    for rec in AWKWARD:
        row = rows[rec["call_id"]]
        want = {k: rec.get(k) for k in FIELDS}
        if want["dest"] is not None:
            want["dest"] = ",".join(want["dest"])
        assert {k: row[k] for k in FIELDS} == want
        assert row["worker"] == 3
        when = row["time"] if kind == "postgresql" else row["time"].replace(tzinfo=datetime.timezone.utc)
        assert when.tzinfo is not None and before - 0.002 < when.timestamp() <= after + 0.001  # UTC, milliseconds
        if lines:
            assert when.isoformat(timespec="milliseconds") == lines[rec["call_id"]]["ts"]


# --- values a database refuses: nothing else is lost ----------------------------------------------


def _nul_identity(pki: Any) -> str:
    """An Identity whose PASSporT header and ``info`` name an x5u with a NUL in it (anyone can
    write one; it fails with 436, and the record names the x5u it gave)."""
    from stirshaken.core.keys import load_private_key
    from stirshaken.core.passport import encode_token

    claims = {"attest": "A", "dest": {"tn": [DEST]}, "iat": int(time.time()), "orig": {"tn": ORIG}, "origid": ORIGID}
    header = {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": "https://cr.example.net/a\x00b.pem"}
    return encode_token(load_private_key(Path(pki.sp_key).read_bytes()), header, claims) + ";info=<https://cr.example.net/a\x00b.pem>"


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_nul_from_a_peer_loses_no_record(kind: str, pki_x5u: tuple[Any, FileServer, Path], tmp_path: Path) -> None:
    """A verification request whose Identity names an x5u with a NUL in it (JSON ``\\u0000``):
    its record reaches the database with U+FFFD in place of the NUL, and the records written
    with it in the same batch are all there (PostgreSQL refuses any text holding NUL: the whole
    batch used to be dropped)."""
    pki, x5u, d = pki_x5u
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp_path / 'nul.db'}" if kind == "sqlite" else stack.enter_context(postgres_database())
        with serving(d, pki, x5u, f"rec-nul-{kind}", records=f'database = "{url}"') as (p, ports):
            now = int(time.time())
            for i in range(3):
                st, body = http(ports["http"], "/stir/v1/verification", {"verificationRequest": {
                    "from": {"tn": ORIG}, "to": {"tn": [DEST]}, "time": now, "identity": _nul_identity(pki)}}, {"X-RequestID": f"nul-{i}"})
                assert st == 200, body
                http(ports["http"], "/stir/v1/signing", {"signingRequest": {"attest": "A", "dest": {"tn": [DEST]}, "iat": now,
                                                                             "orig": {"tn": ORIG}}}, {"X-RequestID": f"good-{i}"})
            wait_for(lambda: metric(ports["http"], "stirshaken_records_written_total") >= 6)
            assert metric(ports["http"], "stirshaken_records_dropped_total") == 0
        rows = db_records(url)
    assert sorted(rows) == ["good-0", "good-1", "good-2", "nul-0", "nul-1", "nul-2"], sorted(rows)
    assert rows["nul-0"]["x5u"] == "https://cr.example.net/a\ufffdb.pem" and rows["nul-0"]["code"] == 436, rows["nul-0"]


def test_a_record_the_database_refuses_is_dropped_alone() -> None:
    """A record PostgreSQL refuses on its own (here an ``attest`` longer than its column) is
    dropped and counted; the 99 records batched with it are written (the batch is retried in
    halves down to the record)."""
    with postgres_database() as url:
        r = Records(log=False, database=url, worker=0)
        for i in range(100):
            r.add({"interface": "rest", "service": "signing", "call_id": f"c{i}", "attest": "AB" if i == 37 else "A", "latency": 0.001})
        r.start()
        r.close(timeout=20.0)
        assert r.writer is not None and r.writer.written == 99 and r.writer.rejected == 1
        rows = db_records(url)
    assert sorted(rows) == sorted(f"c{i}" for i in range(100) if i != 37)


def _records_db(url: str) -> Any:
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def test_a_table_dropped_or_a_read_only_database_is_down_not_refused() -> None:
    """Not a value the database refuses but a database that cannot take records: the table
    dropped (a database dropped and created anew), the database read-only (a standby after a
    failover).  The records are kept, ``problem`` says down, and once the database takes records
    again the table is created again and every kept record is written; nothing is counted as
    refused.  (They used to be dropped as "refused", up to the whole queue, with /healthz ok.)"""
    with postgres_database() as url:
        r = Records(log=False, database=url, worker=0)
        r.writer.retry = 0.2  # type: ignore[union-attr]
        r.start()
        try:
            r.add({"interface": "rest", "service": "signing", "call_id": "first", "latency": 0.0})
            wait_for(lambda: r.writer.written == 1)  # type: ignore[union-attr]
            with _records_db(url) as db:
                db.execute("DROP TABLE call_records")
            for i in range(50):
                r.add({"interface": "rest", "service": "signing", "call_id": f"after-drop-{i}", "latency": 0.0})
            wait_for(lambda: r.writer.written == 51)  # type: ignore[union-attr]
            name = url.rsplit("/", 1)[1]
            with _records_db(url) as db:
                db.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
                db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            for i in range(50):
                r.add({"interface": "rest", "service": "signing", "call_id": f"read-only-{i}", "latency": 0.0})
            wait_for(lambda: r.problem is not None and "read-only" in r.problem)
            assert r.writer.rejected == 0  # type: ignore[union-attr]
            with _records_db(url.rsplit("/", 1)[0] + "/postgres") as admin:  # (a session in the database is read-only now)
                admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = off')
            wait_for(lambda: r.writer.written == 101)  # type: ignore[union-attr]
            assert r.problem is None and r.writer.rejected == 0  # type: ignore[union-attr]
        finally:
            r.close(timeout=5.0)
        rows = db_records(url)
    assert len(rows) == 100 and "first" not in rows  # the table was dropped after "first"


def test_a_database_that_refuses_the_table_is_down_once_and_does_not_spin() -> None:
    """A role without the right to create the table: ``problem`` names the reason, one warning
    line (not one per turn of a busy loop), no record counted written or refused."""
    import psycopg

    role = "stirrec_" + uuid.uuid4().hex[:8]
    with postgres_database() as url:
        name = url.rsplit("/", 1)[1]
        with _records_db(url) as db:
            db.execute(f'CREATE ROLE "{role}" LOGIN')
            db.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        try:
            lg = logging.getLogger("stirshaken.serve")
            seen: list[str] = []
            h = logging.Handler()
            h.emit = lambda rec: seen.append(rec.getMessage())  # type: ignore[method-assign]
            lg.addHandler(h)
            r = Records(log=False, database=url.replace("postgres@", f"{role}@"), worker=0)
            r.writer.retry = 0.1  # type: ignore[union-attr]
            try:
                for i in range(1500):
                    r.add({"interface": "rest", "service": "signing", "call_id": f"c{i}", "latency": 0.0})
                r.start()
                wait_for(lambda: r.problem is not None)
                time.sleep(1.0)
                assert "permission denied" in (r.problem or ""), r.problem
                assert r.writer.written == 0 and r.writer.rejected == 0  # type: ignore[union-attr]
                assert sum("records database" in m for m in seen) == 1, seen[:5]
            finally:
                r.close(timeout=1.0)
                lg.removeHandler(h)
        finally:
            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
            with _records_db(url) as db:
                db.execute(f'DROP OWNED BY "{role}"')
            with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
                admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def test_a_locked_table_makes_the_database_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that waits on a lock longer than ``SLOW`` seconds: ``problem`` says the database is
    slow (``/healthz`` degraded) while it waits, and nothing is lost once the lock goes."""
    from stirshaken.serve import records as records_mod

    monkeypatch.setattr(records_mod, "SLOW", 0.5)
    with postgres_database() as url:
        r = Records(log=False, database=url, worker=0)
        r.start()
        try:
            r.add({"interface": "rest", "service": "signing", "call_id": "c0", "latency": 0.0})
            wait_for(lambda: r.writer.written == 1)  # type: ignore[union-attr]
            with _records_db(url) as db:
                db.execute("BEGIN")
                db.execute("LOCK TABLE call_records IN ACCESS EXCLUSIVE MODE")
                for i in range(1, 20):
                    r.add({"interface": "rest", "service": "signing", "call_id": f"c{i}", "latency": 0.0})
                wait_for(lambda: r.problem is not None)
                assert r.problem == "records database slow: a write has taken more than 0.5 s", r.problem
                db.execute("COMMIT")
            wait_for(lambda: r.writer.written == 20)  # type: ignore[union-attr]
            assert r.problem is None
        finally:
            r.close(timeout=5.0)


def test_sip_verification_records_hold_canonical_tns_only(pki_x5u: tuple[Any, FileServer, Path]) -> None:
    """``orig``/``dest`` of a SIP verification record are canonical TNs (docs/configuration.md):
    a From that is no telephone number (a name, 30 digits) is recorded as null, not as the
    header's text."""
    pki, x5u, d = pki_x5u
    with serving(d, pki, x5u, "rec-tns") as (p, ports):
        for call_id, orig in (("tn-name", "alice"), ("tn-long", "1" * 30), ("tn-ok", "+1 215 555 1212")):
            r = udp(ports["verify"], invite(call_id, orig=orig.replace(" ", "")))
            assert r.startswith("SIP/2.0 "), r
        time.sleep(0.3)
    docs = {doc["call_id"]: doc for doc in map(json.loads, record_lines(p.log))}
    assert docs["tn-name"]["orig"] is None and docs["tn-long"]["orig"] is None, (docs["tn-name"], docs["tn-long"])
    assert docs["tn-ok"]["orig"] == ORIG and docs["tn-ok"]["dest"] == [DEST]


def test_the_database_queue_is_bounded_in_characters_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Records of huge requests (thousands of dest TNs) fill the queue by size before its count:
    beyond ``QUEUE_BYTES`` they are dropped and counted, and room comes back as the database takes
    them."""
    from stirshaken.serve import records as records_mod

    monkeypatch.setattr(records_mod, "QUEUE_BYTES", 100_000)
    big = [str(12155550000 + i) for i in range(1000)]  # ~14,000 characters a line
    with postgres_database() as url:
        r = Records(log=False, database=url, worker=0, queue_size=1000)
        for i in range(20):
            r.add({"interface": "rest", "service": "signing", "call_id": f"big{i}", "dest": big, "latency": 0.0})
        n = len(r.queue[0][0])  # type: ignore[index]
        kept = -(-100_000 // n)  # lines are queued while fewer than 100,000 bytes wait
        assert 5 <= kept <= 10 and len(queued_lines(r)) == kept and r.dropped == 20 - kept, (n, len(queued_lines(r)))
        assert (r.problem or "").startswith("records dropped in the last 60 s: the database queue is full"), r.problem
        r.start()
        try:
            wait_for(lambda: r.writer.written == kept)  # type: ignore[union-attr]
            r.add({"interface": "rest", "service": "signing", "call_id": "after", "dest": big, "latency": 0.0})
            wait_for(lambda: r.writer.written == kept + 1)  # type: ignore[union-attr]
        finally:
            r.close(timeout=5.0)


def test_refusals_are_counted_each_and_logged_once_in_a_while(caplog: pytest.LogCaptureFixture) -> None:
    """Every record refused (here all 40: an ``attest`` too long for its column) is counted; the
    warning is one line (then at most one per 10 s), not one per record."""
    with postgres_database() as url:
        r = Records(log=False, database=url, worker=0)
        for i in range(40):
            r.add({"interface": "rest", "service": "signing", "call_id": f"c{i}", "attest": "AB", "latency": 0.0})
        with caplog.at_level(logging.WARNING, logger="stirshaken.serve"):
            r.start()
            r.close(timeout=20.0)
        assert r.writer is not None and r.writer.rejected == 40 and r.writer.written == 0
    lines = [rec for rec in caplog.records if "refused a record" in rec.getMessage()]
    assert len(lines) == 1 and lines[0].refused_total >= 1, [rec.getMessage() for rec in caplog.records]
    assert r.problem == "records database refused records in the last 60 s", r.problem  # /healthz degraded (the counts are in /metrics)


def test_records_not_written_at_stop_are_said(caplog: pytest.LogCaptureFixture) -> None:
    """A stop while the database is unreachable: the records it could not write are lost with the
    process, and one warning line says how many."""
    r = Records(log=False, database="postgresql+psycopg://postgres@127.0.0.1:1/none", worker=0)
    for i in range(7):
        r.add({"interface": "rest", "service": "signing", "call_id": f"c{i}", "latency": 0.0})
    with caplog.at_level(logging.WARNING, logger="stirshaken.serve"):
        r.start()
        wait_for(lambda: r.problem is not None)
        r.close(timeout=0.5)
    lost = [rec for rec in caplog.records if "records not written to the database at stop" in rec.getMessage()]
    assert len(lost) == 1 and lost[0].records == 7, [rec.getMessage() for rec in caplog.records]
    assert "LINE 1" not in (r.problem or "") and "\n" not in (r.problem or "")


# --- an answer replaced because it is too large ------------------------------------------------------


def _bulky_invite(call_id: str, *, name: int = 0, extra: str = "") -> bytes:
    """An INVITE just under the largest UDP payload (65,507 bytes), made of Via fields that a
    response must copy (RFC 3261 §8.2.6.2), and with a From display name of ``name`` characters
    (a verification 302 writes From twice: From and P-Asserted-Identity)."""
    base = invite(call_id, extra=extra)
    if name:
        base = base.replace(b"From: <", b'From: "' + b"n" * name + b'" <')
    first_via_end = base.index(b"\r\n", base.index(b"Via: ")) + 2
    hops = b""
    i = 0
    while len(base) + len(hops) < 65_400:
        hops += f"Via: SIP/2.0/UDP 192.0.2.{i % 250 + 1}:5060;branch=z9hG4bK-hop{i}\r\n".encode()
        i += 1
    data = base[:first_via_end] + hops + base[first_via_end:]
    assert 65_400 <= len(data) <= 65_507, len(data)
    return data


def test_an_answer_replaced_as_too_large_is_recorded_as_sent(pki_x5u: tuple[Any, FileServer, Path]) -> None:
    """A signing 302 (with its Identity) and a verification 302 (with verstat) that would not fit
    in one UDP datagram are replaced by ``513 Message Too Large`` (RFC 3261 §21.5.7): the call's
    one record says 513 and why, not the 302 that was never sent; a call of normal size is
    recorded as before."""
    pki, x5u, d = pki_x5u
    with serving(d, pki, x5u, "rec-513") as (p, ports):
        r = udp(ports["sign"], _bulky_invite("sip-sign-big"))
        assert r.startswith("SIP/2.0 513 Message Too Large ("), r[:200]
        r = udp(ports["verify"], _bulky_invite("sip-verify-big", name=3000))
        assert r.startswith("SIP/2.0 513 Message Too Large ("), r[:200]
        assert udp(ports["sign"], invite("sip-sign-small")).startswith("SIP/2.0 302")
        time.sleep(FLUSH_DELAY * 4)
    docs = [json.loads(line) for line in record_lines(p.log)]
    by_id: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_id.setdefault(doc["call_id"], []).append(doc)
    assert sorted(by_id) == ["sip-sign-big", "sip-sign-small", "sip-verify-big"], sorted(by_id)
    assert all(len(v) == 1 for v in by_id.values()), by_id  # one record per call
    for cid, service in (("sip-sign-big", "signing"), ("sip-verify-big", "verification")):
        rec = by_id[cid][0]
        assert (rec["interface"], rec["service"], rec["status"]) == ("sip", service, 513), rec
        assert re.fullmatch(r"answer of \d+ bytes exceeds 65507 bytes over UDP: replaced by 513 Message Too Large \(RFC 3261 §21\.5\.7\)",
                            rec["reason"]), rec["reason"]
        assert rec["attest"] is None and rec["verstat"] is None and isinstance(rec["latency"], float), rec  # nothing of the 302 was sent
    assert by_id["sip-sign-small"][0]["status"] == 302


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_table_made_before_the_node_column_gets_it(kind: str, tmp_path: Path) -> None:
    """Upgrade: a ``call_records`` table made by a release without ``node`` gets the column (its
    old rows keep NULL), and two nodes writing to one database are told apart by it."""
    import contextlib

    old_columns = "id INTEGER PRIMARY KEY, time TIMESTAMP NOT NULL, worker INTEGER NOT NULL, " + ", ".join(
        f"{f} {'INTEGER' if f in ('status', 'code') else 'FLOAT' if f == 'latency' else 'TEXT'}" for f in FIELDS)
    with (postgres_database() if kind == "postgresql" else contextlib.nullcontext(f"sqlite:///{tmp_path / 'r.db'}")) as url:
        e = sa.create_engine(url)
        with e.begin() as c:
            c.exec_driver_sql(f"CREATE TABLE call_records ({old_columns.replace('INTEGER PRIMARY KEY', 'BIGSERIAL PRIMARY KEY') if kind == 'postgresql' else old_columns})")
            c.exec_driver_sql("INSERT INTO call_records (time, worker, interface, service, call_id) VALUES ('2026-01-01 00:00:00', 0, 'rest', 'signing', 'old')")
        e.dispose()
        for node in ("node-a", "node-b"):
            r = Records(log=False, database=url, worker=0, node=node)
            r.add({"interface": "rest", "service": "signing", "call_id": f"from-{node}", "attest": "A", "latency": 0.001})
            r.start()
            r.close(timeout=20.0)
            assert r.writer is not None and r.writer.written == 1 and r.writer.down is None
        rows = db_records(url)
    assert {k: v["node"] for k, v in rows.items()} == {"old": None, "from-node-a": "node-a", "from-node-b": "node-b"}


def test_the_upgrade_waits_for_its_lock_only_briefly(pki_x5u: tuple[Any, FileServer, Path]) -> None:
    """Upgrade on PostgreSQL while a report reads the old table (its transaction holds a share
    lock): the ``ALTER TABLE`` adding ``node`` must not wait for it without end, since every
    other writer of the table (another node's records) queues behind a waiting ``ALTER``.  The
    serve's workers give up after ALTER_LOCK_TIMEOUT and try again (records kept, /healthz
    degraded naming the lock); another writer's INSERT goes through meanwhile; when the report
    ends, the column is added and every record is written."""
    import psycopg

    pki, x5u, d = pki_x5u
    old_columns = "id BIGSERIAL PRIMARY KEY, time TIMESTAMPTZ NOT NULL, worker INTEGER NOT NULL, " + ", ".join(
        f"{f} {'INTEGER' if f in ('status', 'code') else 'FLOAT' if f == 'latency' else 'TEXT'}" for f in FIELDS)
    with postgres_database() as url:
        conninfo = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo, autocommit=True) as c:
            c.execute(f"CREATE TABLE call_records ({old_columns})")
        report = psycopg.connect(conninfo)  # a transaction reading the table, left open
        other = psycopg.connect(conninfo, autocommit=True)
        try:
            report.execute("SELECT count(*) FROM call_records").fetchall()
            with serving(d, pki, x5u, "rec-pg-lock", records=f'database = "{conninfo}"\nlog = false', workers=2) as (p, ports):
                body = {"signingRequest": {"attest": "A", "orig": {"tn": ORIG}, "dest": {"tn": [DEST]}, "iat": int(time.time())}}
                for _ in range(5):
                    assert http(ports["http"], "/stir/v1/signing", body)[0] == 200
                doc = wait_for(lambda: (lambda h: h if h["status"] == "degraded" else None)(health(ports["http"])))
                assert any("lock" in r for r in doc["reasons"]), doc
                other.execute("SET statement_timeout = '5s'")  # before: waited until the report ended
                other.execute("INSERT INTO call_records (time, worker, interface, service, call_id) VALUES (now(), 9, 'rest', 'signing', 'other-node')")
                report.rollback()
                wait_for(lambda: metric(ports["http"], "stirshaken_records_written_total") >= 5)
                wait_for(lambda: health(ports["http"])["status"] == "ok")
            rows = db_records(url)
        finally:
            report.close()
            other.close()
    assert rows["other-node"]["node"] is None and len(rows) == 6
    assert {r["node"] for k, r in rows.items() if k != "other-node"} == {socket.gethostname()}


def test_a_connect_held_by_a_lock_is_slow_in_healthz(pki_x5u: tuple[Any, FileServer, Path], tmp_path: Path) -> None:
    """SQLite: another process holds the file's exclusive lock when the workers first connect
    (a table of an older release, which gets the node column): the connect waits up to the
    busy timeout (30 s), and /healthz says ``records database slow`` after SLOW seconds as it
    does for a write held by a lock (before: ``ok`` while no record was written); when the lock
    goes, every record is written and /healthz is ok."""
    import sqlite3

    pki, x5u, d = pki_x5u
    db = tmp_path / "locked.db"
    old_columns = "id INTEGER PRIMARY KEY, time TIMESTAMP NOT NULL, worker INTEGER NOT NULL, " + ", ".join(f"{f} TEXT" for f in FIELDS)
    lock = sqlite3.connect(db, isolation_level=None)
    try:
        lock.execute(f"CREATE TABLE call_records ({old_columns})")
        lock.execute("BEGIN EXCLUSIVE")
        with serving(d, pki, x5u, "rec-sqlite-lock", records=f'database = "{db}"\nlog = false', workers=2) as (p, ports):
            body = {"signingRequest": {"attest": "A", "orig": {"tn": ORIG}, "dest": {"tn": [DEST]}, "iat": int(time.time())}}
            for _ in range(4):
                assert http(ports["http"], "/stir/v1/signing", body)[0] == 200
            doc = wait_for(lambda: (lambda h: h if h["status"] == "degraded" else None)(health(ports["http"])), timeout=15.0)
            assert any(r.startswith("records database slow") for r in doc["reasons"]), doc
            lock.execute("ROLLBACK")
            wait_for(lambda: metric(ports["http"], "stirshaken_records_written_total") >= 4)
            wait_for(lambda: health(ports["http"])["status"] == "ok")
    finally:
        lock.close()
    assert len(db_records(f"sqlite:///{db}")) == 4


# --- values that are not valid text, control characters, HTTP fields that are not UTF-8 ----------


async def test_a_value_that_is_not_text_costs_no_record_nor_its_batch() -> None:
    """A record holding lone surrogates (bytes an HTTP stack kept from a field that is not UTF-8),
    a C1 control character or a value of a type JSON has not, formatted in one flush with a plain
    record: every record gets its line (JSON and text), each line printable (U+009B, the start of
    a terminal control sequence, escaped) and parseable; the surrogates as ``\\xNN``."""
    odd = [{"interface": "rest", "service": "signing", "call_id": "evil-\udcff", "dest": ["1215555\udc9b"]},
           {"interface": "rest", "service": "signing", "call_id": "c1-\x9b[31m", "reason": "line\u2028sep"},
           {"interface": "rest", "service": "signing", "call_id": "lone-\ud800", "latency": b"x"},
           {"interface": "rest", "service": "signing", "call_id": "plain"}]
    for fmt in ("json", "text"):
        out = io.StringIO()
        r = Records(log=True, fmt=fmt, stream=out)
        for rec in odd:
            r.add(dict(rec))
        await asyncio.sleep(FLUSH_DELAY + 0.1)
        lines = out.getvalue().splitlines()
        assert len(lines) == 4 and all(line.isprintable() for line in lines), lines
        if fmt == "json":
            docs = [json.loads(line) for line in lines]
            assert [d["call_id"] for d in docs] == ["evil-\\xff", "c1-\x9b[31m", "lone-\\ud800", "plain"]
            assert docs[0]["dest"] == ["1215555\\x9b"] and docs[1]["reason"] == "line\u2028sep" and docs[2]["latency"] == "b'x'"
            assert "\\u009b" in lines[1] and "\\u2028" in lines[1]
        else:
            assert 'call_id="evil-\\\\xff"' in lines[0] and 'call_id="c1-\\u009b[31m"' in lines[1] and "call_id=plain" in lines[3]


def test_a_request_id_of_a_dash_is_not_unknown_in_text() -> None:
    assert text_value("-") == '"-"' and text_value(None) == "-"


def _raw_sign(port: int, request_id: bytes) -> tuple[int, bytes]:
    """A REST signing request whose X-RequestID field is ``request_id`` as raw bytes; the status
    and the X-RequestID the answer echoes, as raw bytes."""
    body = orjson.dumps({"signingRequest": {"attest": "A", "dest": {"tn": [DEST]}, "iat": int(time.time()), "orig": {"tn": ORIG}}})
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /stir/v1/signing HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json\r\n"
                  b"X-RequestID: " + request_id + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    echo = next(line.split(b":", 1)[1].strip() for line in head if line.lower().startswith(b"x-requestid:"))
    return int(head[0].split()[1]), echo


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
def test_request_ids_that_are_not_ascii_keep_their_records(pki_x5u: tuple[Any, FileServer, Path], engine: str) -> None:
    """X-RequestID fields in UTF-8 and in bytes that are not UTF-8, among plain requests, through
    either HTTP engine: each call is answered 200 and echoes its bytes as sent (aiohttp: a byte
    that is not UTF-8 as U+FFFD), and every record
    of the batch is written (log and database), its call_id the field as UTF-8 (a byte that is
    not UTF-8 as \\xNN); no traceback.  Only spaces and tabs around a value are taken off (RFC
    9110 §5.5): the fast engine once stripped as str.strip does, which took 0x85 and 0xA0, the
    last bytes of "à" and "Å" in UTF-8."""
    pki, x5u, d = pki_x5u
    db = d / f"nonascii-{engine}.db"
    sent = [b"plain-1", "caf\u00e9-\u2603-\U0001F600".encode(), b"evil-\xff", b"c1-\xc2\x9b[31m", b"plain-2",
            "voil\u00e0".encode(), "x\u00c5".encode(), b"\xa0lead", b"c1-end\xc2\x85"]
    with serving(d, pki, x5u, f"rec-nonascii-{engine}", records=f'database = "sqlite:///{db}"', engine=engine) as (p, ports):
        answers = [_raw_sign(ports["http"], rid) for rid in sent]
        # (aiohttp writes a field value as UTF-8: a byte that is not UTF-8 is echoed as U+FFFD)
        echo = [rid.decode("utf-8", "replace").encode() if engine == "aiohttp" else rid for rid in sent]
        assert answers == [(200, rid) for rid in echo]
        wait_for(lambda: metric(ports["http"], "stirshaken_records_written_total") >= len(sent))
    want = ["plain-1", "caf\u00e9-\u2603-\U0001F600", "evil-\\xff", "c1-\x9b[31m", "plain-2", "voil\u00e0", "x\u00c5", "\\xa0lead", "c1-end\x85"]
    docs = [json.loads(line) for line in record_lines(p.log)]
    assert [doc["call_id"] for doc in docs] == want
    assert all(line.isprintable() for line in record_lines(p.log))
    assert "Traceback" not in p.log.read_text()
    e = sa.create_engine(f"sqlite:///{db}")
    try:
        with e.connect() as c:
            assert sorted(row.call_id for row in c.execute(sa.select(call_records(sa.MetaData())))) == sorted(want)
    finally:
        e.dispose()


def test_serve_check_opens_the_records_database(tmp_path: Path) -> None:
    """``serve --check`` opens the records database as a worker would: a directory, a missing
    directory or a server that does not answer is one line and exit 2 (the password hidden); a
    usable one is OK (its table made)."""
    from tests.test_serve_support import serve_command

    def check(database: str) -> subprocess.CompletedProcess[str]:
        cfg = tmp_path / "check.toml"
        cfg.write_text(f'[server]\nhttp = "127.0.0.1:1"\n[records]\ndatabase = "{database}"\n')
        return subprocess.run(serve_command() + ["--config", str(cfg), "--check"], capture_output=True, text=True, timeout=60)

    for database, url in ((str(tmp_path), f"sqlite:///{tmp_path}"), (str(tmp_path / "no" / "r.db"), f"sqlite:///{tmp_path / 'no' / 'r.db'}")):
        p = check(database)
        assert p.returncode == 2 and p.stderr == f"error: [records].database: cannot use {url}: OperationalError: unable to open database file\n", p.stderr
    p = check(f"postgresql://postgres:secret@127.0.0.1:{serve_port()}/x")
    assert p.returncode == 2 and p.stderr.startswith("error: [records].database: cannot use postgresql+psycopg://postgres:***@127.0.0.1:")
    assert "secret" not in p.stderr and "Connection refused" in p.stderr and p.stderr.count("\n") == 1, p.stderr
    # a password in the query string (libpq takes password and sslpassword there) is hidden too
    p = check(f"postgresql://postgres@127.0.0.1:{serve_port()}/x?password=hunter2&sslpassword=abc123")
    assert p.returncode == 2 and "hunter2" not in p.stderr and "abc123" not in p.stderr, p.stderr
    assert "password=***" in p.stderr and "sslpassword=***" in p.stderr, p.stderr
    p = check(str(tmp_path / "ok.db"))
    assert p.returncode == 0 and p.stdout.endswith(": OK\n"), p.stdout + p.stderr
    assert (tmp_path / "ok.db").exists()


def test_a_database_that_never_answers_is_slow_then_down_never_just_dropping(monkeypatch: pytest.MonkeyPatch) -> None:
    """A records database that accepts the connection and never answers, with the queue full and
    records dropped: /healthz's reason is "slow" once the connect has taken SLOW seconds, then
    "down" when it fails; never "dropped" in between (that reason is for an overload of a database
    that answers)."""
    from stirshaken.serve import records as records_mod

    monkeypatch.setattr(records_mod, "SLOW", 0.3)
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        hole.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(hole.accept()[0])  # accepted, never answered
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    r = Records(log=False, database=f"postgresql://postgres@127.0.0.1:{hole.getsockname()[1]}/x?sslmode=disable", queue_size=2)
    assert r.writer is not None
    r.writer.connect_timeout = 2.0
    try:
        r.start()
        for i in range(5):
            r.add({"interface": "rest", "service": "signing", "call_id": f"h{i}", "latency": 0.0})
        assert r.dropped == 3
        seen: list[str | None] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (seen and (seen[-1] or "").startswith("records database down")):
            seen.append(r.problem)
            time.sleep(0.01)
        assert (seen[-1] or "").startswith("records database down"), seen[-5:]
        first_slow = next(i for i, x in enumerate(seen) if (x or "").startswith("records database slow"))
        after = seen[first_slow:]  # (before the connect has taken SLOW seconds the drops are all that is known)
        assert all((x or "").startswith(("records database slow", "records database down")) for x in after), sorted(set(map(str, after)))
    finally:
        stop.set()
        r.close(timeout=1.0)
        t.join(2)
        for c in held:
            c.close()
        hole.close()


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
def test_a_tenant_named_in_utf8_and_request_error_lines(pki_x5u: tuple[Any, FileServer, Path], engine: str) -> None:
    """``X-Tenant`` in UTF-8 finds the tenant of that name (not its Latin-1 reading); an unknown
    one in bytes that are not UTF-8 or with a C1 control is a 400 SVC4005 whose body is JSON, whose
    record is written, and whose "request error" log line is printable, its request_id the
    record's call_id."""
    pki, x5u, d = pki_x5u
    tenant = f'[[signing.tenant]]\nname = "t\u00e9n"\nkey = "{pki.sp_key}"\nx5u = "{x5u.url("sp-chain.pem")}"\nspc = "1234"\n'
    ports = {"http": serve_port()}
    toml = serve_toml(pki, x5u, http=ports["http"], engine=engine, extra_signing=tenant)
    p = ServeProcess(d, toml, ports["http"], name=f"rec-tenant-{engine}")
    body = orjson.dumps({"signingRequest": {"attest": "A", "dest": {"tn": [DEST]}, "iat": int(time.time()), "orig": {"tn": ORIG}}})

    def sign(tenant: bytes, rid: bytes) -> tuple[int, bytes]:
        with socket.create_connection(("127.0.0.1", ports["http"]), timeout=10) as s:
            s.sendall(b"POST /stir/v1/signing HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json\r\n"
                      b"X-Tenant: " + tenant + b"\r\nX-RequestID: " + rid + b"\r\nContent-Length: " + str(len(body)).encode()
                      + b"\r\nConnection: close\r\n\r\n" + body)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return int(data.split(b" ", 2)[1]), data.split(b"\r\n\r\n", 1)[1]

    try:
        assert sign("t\u00e9n".encode(), b"ten-utf8")[0] == 200
        for tenant_bytes, rid in ((b"bad-\xff", b"ten-bad-\xff"), (b"c1\xc2\x9b", b"ten-c1\xc2\x9b")):
            status, answer = sign(tenant_bytes, rid)
            assert status == 400 and orjson.loads(answer)["requestError"]["serviceException"]["messageId"] == "SVC4005", answer
        time.sleep(FLUSH_DELAY + 0.3)
    finally:
        p.stop()
    text = p.log.read_text()
    records = {doc["call_id"]: doc for doc in map(json.loads, record_lines(p.log))}
    assert records["ten-utf8"]["tenant"] == "t\u00e9n" and records["ten-utf8"]["status"] == 200
    assert records["ten-bad-\\xff"]["status"] == 400 and records["ten-c1\x9b"]["status"] == 400, sorted(records)
    errors = [json.loads(line) for line in text.splitlines() if line.startswith("{") and '"request error"' in line]
    assert sorted(e["request_id"] for e in errors) == sorted(["ten-bad-\\xff", "ten-c1\x9b"]) and all(line.isprintable() for line in text.splitlines())
    assert "Traceback" not in text


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
def test_an_accept_field_in_utf8_is_named_as_text(pki_x5u: tuple[Any, FileServer, Path], engine: str) -> None:
    """An ``Accept`` the service cannot answer, in UTF-8: the 406 SVC4002 answer and its record
    name it as UTF-8 text (once its Latin-1 reading, "tÃ«xt/plain")."""
    pki, x5u, d = pki_x5u
    with serving(d, pki, x5u, f"rec-accept-{engine}", engine=engine) as (p, ports):
        body = orjson.dumps({"signingRequest": {"attest": "A", "dest": {"tn": [DEST]}, "iat": int(time.time()), "orig": {"tn": ORIG}}})
        with socket.create_connection(("127.0.0.1", ports["http"]), timeout=10) as s:
            s.sendall(b"POST /stir/v1/signing HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: " + "t\u00ebxt/plain".encode()
                      + b"\r\nX-RequestID: accept-utf8\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        time.sleep(FLUSH_DELAY + 0.3)
    answer = orjson.loads(data.split(b"\r\n\r\n", 1)[1])["requestError"]["serviceException"]
    assert answer["messageId"] == "SVC4002" and "t\u00ebxt/plain" in answer["variables"], answer
    rec = next(doc for doc in map(json.loads, record_lines(p.log)) if doc["call_id"] == "accept-utf8")
    assert "t\u00ebxt/plain" in rec["reason"] and "\u00c3" not in rec["reason"], rec


async def test_the_down_line_counts_records_not_flushes(caplog: pytest.LogCaptureFixture) -> None:
    """"records database down" says how many records wait (``queued``), not how many flushes
    queued them (each flush is one entry of the queue)."""
    r = Records(log=False, database=f"postgresql://postgres@127.0.0.1:{serve_port()}/x?sslmode=disable", queue_size=1000)
    for i in range(600):
        r.add({"interface": "rest", "service": "signing", "call_id": f"q{i}", "latency": 0.0})
    await asyncio.sleep(FLUSH_DELAY + 0.1)
    assert r.queue is not None and 1 < len(r.queue) < 600  # (flushes of up to 256 records)
    with caplog.at_level(logging.WARNING, logger="stirshaken.serve"):
        r.start()
        try:
            deadline = time.monotonic() + 10
            while r.writer.down is None and time.monotonic() < deadline:  # type: ignore[union-attr]
                await asyncio.sleep(0.05)
        finally:
            r.close(timeout=0.5)
    down = [x for x in caplog.records if x.getMessage().startswith("records database down")]
    assert len(down) == 1 and down[0].queued == 600, [(x.getMessage(), getattr(x, "queued", None)) for x in caplog.records]  # type: ignore[attr-defined]


def test_aiohttp_refusing_a_request_it_cannot_parse_is_one_line(pki_x5u: tuple[Any, FileServer, Path]) -> None:
    """With ``http_engine = "aiohttp"`` a field value holding control characters is refused by
    aiohttp's parser (400): its line is one WARNING naming the peer and the parser's reason,
    not an ERROR with a traceback."""
    pki, x5u, d = pki_x5u
    with serving(d, pki, x5u, "rec-aiohttp-bad", engine="aiohttp") as (p, ports):
        with socket.create_connection(("127.0.0.1", ports["http"]), timeout=10) as s:
            s.sendall(b"POST /stir/v1/signing HTTP/1.1\r\nHost: x\r\nX-RequestID: a\x01b\x1b\x7f\r\nContent-Length: 2\r\n\r\n{}")
            assert s.recv(1000).startswith(b"HTTP/1.0 400 ")
        wait_for(lambda: "bad HTTP request refused" in p.log.read_text())
    text = p.log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if '"aiohttp.server"' in line]
    assert [(x["level"], x["msg"], x["peer"], x["error"]) for x in lines] == [("WARNING", "bad HTTP request refused", "127.0.0.1", "Invalid header value char")], lines
    assert "Traceback" not in text and '"exc"' not in text


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
def test_a_body_that_cannot_be_read_or_a_peer_that_leaves(pki_x5u: tuple[Any, FileServer, Path], engine: str) -> None:
    """A body in a ``Content-Encoding`` that does not decode is 400 SVC4006 with its record on both
    engines (aiohttp answered 500 and logged two tracebacks); a peer that closes before the end of
    its body leaves at most one WARNING line, never a traceback."""
    pki, x5u, d = pki_x5u
    with serving(d, pki, x5u, f"rec-body-{engine}", engine=engine) as (p, ports):
        with socket.create_connection(("127.0.0.1", ports["http"]), timeout=10) as s:
            s.sendall(b"POST /stir/v1/signing HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                      b"X-RequestID: gz-1\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnotgzip!!!")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 400 "), data[:200]
        assert orjson.loads(data.split(b"\r\n\r\n", 1)[1])["requestError"]["serviceException"]["messageId"] == "SVC4006"
        with socket.create_connection(("127.0.0.1", ports["http"]), timeout=10) as s:
            s.sendall(b"POST /stir/v1/signing HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
                      + b"{" * 20)
        time.sleep(0.5)
        wait_for(lambda: any(doc["call_id"] == "gz-1" for doc in map(json.loads, record_lines(p.log))))
    text = p.log.read_text()
    assert "Traceback" not in text and '"exc"' not in text and '"level":"ERROR"' not in text, text[-2000:]
    rec = next(doc for doc in map(json.loads, record_lines(p.log)) if doc["call_id"] == "gz-1")
    assert rec["status"] == 400 and rec["code"] is None and "SVC4006" in rec["reason"], rec
    if engine == "aiohttp":
        assert rec["reason"].endswith("the body could not be read: Can not decode content-encoding: gzip"), rec


@pytest.mark.parametrize(("accept", "ok"), [
    ("application/json", True), ("application/json;q=0.5", True), ("text/plain, application/json;q=0.001", True),
    ("application/json;q=0", False), ("application/json; q=0", False), ("application/json;\tq=0", False),
    ("application/json;q=0.0", False), ("application/json;q=0.000", False), ("application/json;Q=0", False), ("text/plain", False),
    ("*/*;q=0, application/json", True)])
def test_accept_weights(accept: str, ok: bool) -> None:
    """``Accept`` admits JSON unless every range that matches it has the weight 0, however the
    weight is written (RFC 9110 §12.4.2, §12.5.1)."""
    from stirshaken.serve.rest import _accept_ok

    assert _accept_ok(accept) is ok
