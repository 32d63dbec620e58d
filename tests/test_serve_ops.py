"""Operations of a real ``stirshaken serve``: /metrics parsed by the Prometheus client's own parser
(families, types, labels, with 1 and 2 workers), the Grafana dashboard's queries against it, and
/healthz following a private Redis going away and coming back."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
import urllib.request

from tests.test_serve_support import DEST, ORIG, FileServer, ServeProcess, make_pki, serve_port, serve_toml

prometheus_parser = pytest.importorskip("prometheus_client.parser")

ROOT = Path(__file__).resolve().parents[1]


def http(port: int, path: str, body: Any = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=orjson.dumps(body) if body is not None else None,
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def sign_and_verify(port: int) -> None:
    now = int(time.time())
    st, body = http(port, "/stir/v1/signing", {"signingRequest": {"attest": "A", "dest": {"tn": [DEST]}, "iat": now, "orig": {"tn": ORIG},
                                                                  "origid": "123e4567-e89b-12d3-a456-426614174000"}})
    assert st == 200, body
    identity = orjson.loads(body)["signingResponse"]["identity"]
    st, body = http(port, "/stir/v1/verification", {"verificationRequest": {"from": {"tn": ORIG}, "to": {"tn": [DEST]}, "time": now,
                                                                            "identity": identity}})
    assert st == 200 and orjson.loads(body)["verificationResponse"]["verstat"] == "TN-Validation-Passed", body
    st, body = http(port, "/stir/v1/verification", {"verificationRequest": {"from": {"tn": "12155550000"}, "to": {"tn": [DEST]},
                                                                            "time": now, "identity": identity}})
    assert st == 200 and orjson.loads(body)["verificationResponse"]["reasoncode"] == 438, body


def families(port: int) -> dict[str, Any]:
    st, text = http(port, "/metrics")
    assert st == 200
    return {f.name: f for f in prometheus_parser.text_string_to_metric_families(text.decode())}


@pytest.fixture(scope="module")
def pki_x5u(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, FileServer, Path]]:
    d = tmp_path_factory.mktemp("ops")
    pki = make_pki(d / "pki")
    x5u = FileServer(d / "pki")
    try:
        yield pki, x5u, d
    finally:
        x5u.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_parse_with_prometheus_client(pki_x5u: tuple[Any, FileServer, Path], workers: int) -> None:
    pki, x5u, d = pki_x5u
    port = serve_port()
    serve = ServeProcess(d, serve_toml(pki, x5u, http=port, workers=workers), port, name=f"metrics{workers}")
    try:
        for _ in range(4):  # with 2 workers, spread over both
            sign_and_verify(port)
        deadline = time.time() + 15
        while True:  # the worker that counted may not answer: its snapshot comes within 1 s
            fam = families(port)
            v = fam.get("stirshaken_verified")
            if v is not None and sum(s.value for s in v.samples) == 8 and (workers == 1 or len(fam["stirshaken_process_open_fds"].samples) == 2):
                break
            assert time.time() < deadline, sorted(fam)
            time.sleep(0.3)
        assert v.type == "counter"
        passed = [s for s in v.samples if s.labels.get("verstat") == "TN-Validation-Passed"]
        assert passed and all(s.name == "stirshaken_verified_total" for s in v.samples)
        assert passed[0].labels == {"interface": "rest", "verstat": "TN-Validation-Passed", "reason_code": "0", "attest": "A"}
        assert sum(s.value for s in passed) == 4
        failed = [s for s in v.samples if s.labels["reason_code"] == "438"]
        assert sum(s.value for s in failed) == 4 and failed[0].labels["verstat"] == "No-TN-Validation"
        assert fam["stirshaken_signed"].type == "counter" and sum(s.value for s in fam["stirshaken_signed"].samples) == 4
        # every counter's samples end in _total; no gauge folds statistics together any more
        for f in fam.values():
            if f.type == "counter":
                assert all(s.name.endswith(("_total", "_created")) for s in f.samples), f.name
        assert "stirshaken_verifier" not in fam
        ev = fam["stirshaken_verifier_events"]
        assert ev.type == "counter" and {s.labels["event"] for s in ev.samples} >= {"verifications", "cache_hits", "fetches"}
        assert sum(s.value for s in ev.samples if s.labels["event"] == "verifications") == 8  # summed over workers
        from stirshaken import __version__
        bi = fam["stirshaken_build_info"]
        assert bi.type == "gauge" and [(s.labels, s.value) for s in bi.samples] == [({"version": __version__}, 1)]
        workers_seen = {str(i) for i in range(workers)}
        for name, kind in (("stirshaken_process_cpu_seconds", "counter"), ("stirshaken_process_resident_memory_bytes", "gauge"),
                           ("stirshaken_process_open_fds", "gauge")):
            f = fam[name]
            assert f.type == kind and {s.labels["worker"] for s in f.samples} == workers_seen, name
            assert all(s.value > 0 for s in f.samples), name
        rss = fam["stirshaken_process_resident_memory_bytes"].samples
        assert all(5e6 < s.value < 2e9 for s in rss)  # a Python worker: megabytes, not pages
        assert fam["stirshaken_latency_seconds"].type == "histogram"
        # the key + x5u signers of this configuration have no certificate known here: no expiry family
        assert "stirshaken_signer_certificate_expiry_seconds" not in fam
        assert http(port, "/healthz") == (200, b'{"status":"ok","reasons":[]}')
    finally:
        assert serve.stop() == 0


def dashboard_metrics() -> set[str]:
    doc = json.loads((ROOT / "packaging" / "grafana-dashboard.json").read_text())
    names = set()
    for p in doc["panels"]:
        for t in p["targets"]:
            names |= {n for n in re.findall(r"\bstirshaken_[a-z_]+", t["expr"])}
    return names


def test_grafana_dashboard_queries_exist(pki_x5u: tuple[Any, FileServer, Path]) -> None:
    pki, x5u, d = pki_x5u
    port, sipv = serve_port(), serve_port()
    serve = ServeProcess(d, serve_toml(pki, x5u, http=port, sip_verification=sipv), port, name="grafana")
    try:
        sign_and_verify(port)
        # an unsigned call over SIP: counted apart from the verifications
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.sendto((f"INVITE sip:{DEST}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-u1\r\n"
                  f"From: <sip:{ORIG}@127.0.0.1>;tag=a\r\nTo: <sip:{DEST}@127.0.0.1>\r\nCall-ID: u1\r\nCSeq: 1 INVITE\r\n"
                  "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(), ("127.0.0.1", sipv))
        assert s.recv(65535).startswith(b"SIP/2.0 302")
        s.close()
        time.sleep(0.2)
        st, text = http(port, "/metrics")
        exposed = set()
        for f in prometheus_parser.text_string_to_metric_families(text.decode()):
            exposed |= {smp.name for smp in f.samples}
        wanted = dashboard_metrics()
        assert {"stirshaken_verified_total", "stirshaken_process_resident_memory_bytes", "stirshaken_unsigned_calls_total"} <= wanted
        assert wanted <= exposed, wanted - exposed
        unsigned = [smp for f in prometheus_parser.text_string_to_metric_families(text.decode()) for smp in f.samples
                    if smp.name == "stirshaken_unsigned_calls_total"]
        assert [(u.labels, u.value) for u in unsigned] == [({"interface": "sip"}, 1)]
    finally:
        assert serve.stop() == 0


# --- /healthz and a private Redis --------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return p
        except OSError:
            assert time.time() < deadline, "redis-server did not start"
            time.sleep(0.05)


def wait_health(port: int, status: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.time() + timeout
    while True:
        st, body = http(port, "/healthz")
        doc = orjson.loads(body)
        if st == 200 and doc["status"] == status:
            return doc
        assert time.time() < deadline, (st, doc)
        time.sleep(0.2)


def test_healthz_follows_redis(pki_x5u: tuple[Any, FileServer, Path]) -> None:
    pki, x5u, d = pki_x5u
    rport = free_port()
    redis = start_redis(rport)
    port = serve_port()
    serve = ServeProcess(d, serve_toml(pki, x5u, http=port, extra_verification=f'redis = "redis://127.0.0.1:{rport}/0"'), port, name="health")
    try:
        assert wait_health(port, "ok") == {"status": "ok", "reasons": []}
        redis.terminate()
        redis.wait(10)
        doc = wait_health(port, "degraded")
        assert len(doc["reasons"]) == 1 and doc["reasons"][0].startswith("redis unreachable")
        redis = start_redis(rport)
        assert wait_health(port, "ok") == {"status": "ok", "reasons": []}
        time.sleep(0.5)
        log = serve.log.read_text()
        assert log.count("health degraded") == 1 and log.count("health ok again") == 1, log[-3000:]  # each change logged once
    finally:
        code = serve.stop()
        redis.terminate()
        redis.wait(10)
    assert code == 0


async def test_health_certificate_expiry_reasons() -> None:
    from stirshaken.serve.health import Health

    now = time.time()
    h = Health(certificate_expiry=lambda: {"a": now + 30 * 86400})
    assert await h.check() == [] and h.status == "ok"
    h.certificate_expiry = lambda: {"a": now + 2 * 86400, "b": now - 60}
    reasons = await h.check()
    assert h.status == "degraded" and reasons[0].startswith("signing certificate of 'a' expires in 2.0 days")
    assert reasons[1] == "signing certificate of 'b' expired"


def test_inventory_event_counts_are_counters() -> None:
    from stirshaken.serve.metrics import Metrics

    class Inv:
        def stats(self) -> dict[str, int]:
            return {"inventory_tns": 5, "inventory_dno_refused": 2, "inventory_reloads": 1}

    m = Metrics()
    m.stats_sources.append(Inv())
    fam = {f.name: f for f in prometheus_parser.text_string_to_metric_families(m.render().decode())}
    assert fam["stirshaken_inventory_tns"].type == "gauge" and fam["stirshaken_inventory_tns"].samples[0].value == 5
    assert fam["stirshaken_inventory_dno_refused"].type == "counter"
    assert fam["stirshaken_inventory_reloads"].samples[0].name == "stirshaken_inventory_reloads_total"
