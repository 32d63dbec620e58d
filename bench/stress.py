"""Bounded stress run of ``stirshaken serve`` on loopback (``make stress``; issue 17).

Each scenario starts a real ``stirshaken serve`` (ports 21000-21999), attacks it, and asserts:

* ``pipeline``  one client pipelines signing requests without reading: the worker's RSS stays
  under a ceiling, a health check still answers;
* ``slowloris`` hundreds of connections send a byte a second: health checks from another source
  address keep answering, the slow connections are closed after ``header_timeout``;
* ``sipdesync`` SIP over TCP: good + malformed + good messages in one read, and good + unframeable
  bytes: every good message is answered, the service goes on;
* ``sigterm``   SIP (UDP, TCP) and REST verifications in flight (slow x5u server) when SIGTERM
  arrives: all answered;
* ``killworker`` workers killed 12 times in a row (more than the 10-in-60-s budget): the service
  keeps answering and the supervisor keeps running;
* ``redis``     (when ``redis-server`` exists) a private Redis on a Unix socket is stopped and
  restarted under verification load: every request answered.

``--short`` shortens every phase (about 30 s in all, used by tests/test_hardening.py::test_short_stress_run); the full run
takes about a minute.  Exit status 0 when every assertion holds; one line per scenario.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src")] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])

from tests.test_serve_support import DEST, ORIG, FileServer, ServeProcess, make_pki, serve_port, serve_toml  # noqa: E402

HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (/proc/PID/statm)."""
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def health(port: int, source: str = "127.0.0.2", timeout: float = 2.0) -> bool:
    """One GET /healthz from ``source`` (another loopback address than the attackers')."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0)) as s:
            s.sendall(HEALTH)
            return s.recv(4096).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def sign_request(n: int = 1) -> bytes:
    body = json.dumps({"signingRequest": {"attest": "A", "dest": {"tn": [DEST]}, "iat": int(time.time()), "orig": {"tn": ORIG}}}).encode()
    return (b"POST /stir/v1/signing HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body) * n


def invite(branch: str, *, transport: str = "UDP", extra: str = "", dest: str = DEST) -> bytes:
    return (f"INVITE sip:{dest}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{transport} 127.0.0.1:5090;branch=z9hG4bK{branch}\r\n"
            f"From: <sip:{ORIG}@127.0.0.1>;tag=a\r\nTo: <sip:{dest}@127.0.0.1>\r\nCall-ID: {branch}\r\nCSeq: 1 INVITE\r\n"
            f"Max-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n").encode()


class Env:
    """A test PKI, an x5u server, a directory; :meth:`serve` starts ``stirshaken serve``."""

    def __init__(self, short: bool):
        self.short = short
        self.dir = Path(tempfile.mkdtemp(prefix="stirshaken-stress-"))
        self.pki = make_pki(self.dir / "pki")
        self.x5u = FileServer(self.pki.dir)
        self.procs: list[ServeProcess] = []

    def serve(self, name: str, **kw: Any) -> tuple[ServeProcess, dict[str, int]]:
        ports = {"http": serve_port(), "sip_signing": serve_port(), "sip_verification": serve_port()}
        x5u = kw.pop("x5u", self.x5u)
        p = ServeProcess(self.dir, serve_toml(self.pki, x5u, http=ports["http"], sip_signing=ports["sip_signing"],
                                              sip_verification=ports["sip_verification"], **kw), ports["http"], name=name)
        self.procs.append(p)
        return p, ports

    def close(self) -> None:
        for p in self.procs:
            p.stop()
        self.x5u.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# --- scenarios --------------------------------------------------------------------------------


def pipeline(env: Env) -> str:
    p, ports = env.serve("pipeline")
    pid = p.proc.pid
    before = rss_mb(pid)
    burst = sign_request(200)
    stop = time.monotonic() + (5 if env.short else 15)
    sent = 0
    s = socket.create_connection(("127.0.0.1", ports["http"]))
    s.settimeout(0.5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    peak = before
    while time.monotonic() < stop:
        try:
            s.sendall(burst)
            sent += len(burst)
        except (socket.timeout, OSError):
            time.sleep(0.05)  # the server stopped reading: good
        peak = max(peak, rss_mb(pid))
    ok = health(ports["http"])
    s.close()
    after = rss_mb(pid)
    assert peak - before < 64, f"worker RSS grew {before:.0f} -> {peak:.0f} MiB"
    assert ok, "health check not answered during the pipelining"
    return f"RSS {before:.0f} -> peak {peak:.0f} MiB (after {after:.0f}), {sent / 2**20:.1f} MiB sent, health ok"


def slowloris(env: Env) -> str:
    p, ports = env.serve("slowloris")
    n = 300 if env.short else 1200
    conns = []
    for _ in range(n):
        try:
            c = socket.create_connection(("127.0.0.1", ports["http"]), timeout=2)
            c.sendall(b"P")
            conns.append(c)
        except OSError:
            break
    answered = 0
    deadline = time.monotonic() + 14  # header_timeout 10 s + sweep
    checks = 0
    while time.monotonic() < deadline:
        for c in conns:
            try:
                c.send(b"O")
            except OSError:
                pass
        checks += 1
        answered += health(ports["http"])
        time.sleep(1.0)
    closed = 0
    for c in conns:
        c.settimeout(0.2)
        try:
            c.send(b"S")
            data = c.recv(4096)
            closed += data == b"" or data.startswith(b"HTTP/1.1 408")
        except OSError:
            closed += 1
        c.close()
    assert answered >= checks - 1, f"health answered {answered}/{checks} under slowloris"
    assert closed >= len(conns) * 0.99, f"only {closed}/{len(conns)} slow connections were closed"
    return f"{len(conns)} slow connections ({n} tried; over the per-source cap refused), health {answered}/{checks}, {closed} closed by the header timeout"


def sipdesync(env: Env) -> str:
    p, ports = env.serve("sipdesync")
    port = ports["sip_signing"]
    good = 0
    rounds = 20 if env.short else 100
    for i in range(rounds):
        bad = invite(f"bad{i}", transport="TCP").replace(b"Via: SIP/2.0/TCP 127.0.0.1:5090;", b'Via: SIP/2.0/TCP 127.0.0.1:5090;x="a,b;')
        data = invite(f"g1-{i}", transport="TCP") + bad + invite(f"g2-{i}", transport="TCP")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(data)
            got = b""
            while got.count(b"SIP/2.0 ") < 3:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        assert got.count(b"SIP/2.0 302") == 2 and got.count(b"SIP/2.0 400") == 1, got[:300]
        # then unframeable bytes after a good message: the good one is answered, then 400 and close
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(invite(f"g3-{i}", transport="TCP") + b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bKx\r\n"
                      b"From: <sip:1@h>;tag=1\r\nTo: <sip:2@h>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: x\r\n\r\n")
            got = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        assert got.count(b"SIP/2.0 302") == 1 and b"SIP/2.0 400" in got, got[:300]
        good += 3
    assert health(ports["http"])
    return f"{rounds} rounds: {good} good messages answered around malformed/unframeable ones"


class SlowHandler(http.server.SimpleHTTPRequestHandler):
    delay = 1.5

    def do_GET(self) -> None:  # noqa: N802
        time.sleep(self.delay)
        self.path = "/sp-chain.pem"  # every name is the chain: distinct URLs, no shared fetch
        super().do_GET()

    def log_message(self, *a: Any) -> None:
        pass


def identity_for(env: Env, x5u: str) -> str:
    from stirshaken.core.keys import load_private_key
    from stirshaken.core.passport import Signer

    return Signer(load_private_key(env.pki.sp_key), x5u).identity(orig=ORIG, dest=[DEST], attest="A")


def sigterm(env: Env) -> str:
    import functools

    slow = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SlowHandler, directory=str(env.pki.dir)))
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    results: dict[str, int] = {"udp": 0, "tcp": 0, "rest": 0}
    try:
        p, ports = env.serve("sigterm")
        n = 10
        lock = threading.Lock()

        def one(kind: str, i: int) -> None:
            x5u = f"http://127.0.0.1:{slow.server_address[1]}/{kind}{i}.pem"  # distinct: no shared fetch
            ident = identity_for(env, x5u)
            ok = False
            try:
                if kind == "rest":
                    body = json.dumps({"verificationRequest": {"from": {"tn": ORIG}, "to": {"tn": [DEST]}, "time": int(time.time()),
                                                               "identity": ident}}).encode()
                    with socket.create_connection(("127.0.0.1", ports["http"]), timeout=10) as s:
                        s.sendall(b"POST /stir/v1/verification HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
                                  + str(len(body)).encode() + b"\r\n\r\n" + body)
                        got = s.recv(65536)
                        ok = got.startswith(b"HTTP/1.1 200") and b"TN-Validation-Passed" in got
                elif kind == "udp":
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                        s.settimeout(10)
                        s.sendto(invite(f"u{i}", extra=f"Identity: {ident}\r\n"), ("127.0.0.1", ports["sip_verification"]))
                        ok = b"verstat=TN-Validation-Passed" in s.recvfrom(65536)[0]
                else:
                    with socket.create_connection(("127.0.0.1", ports["sip_verification"]), timeout=10) as s:
                        s.sendall(invite(f"t{i}", transport="TCP", extra=f"Identity: {ident}\r\n"))
                        ok = b"verstat=TN-Validation-Passed" in s.recv(65536)
            except OSError:
                ok = False
            with lock:
                results[kind] += ok

        threads = [threading.Thread(target=one, args=(k, i)) for k in results for i in range(n)]
        for t in threads:
            t.start()
        time.sleep(0.7)  # every request sent, every verification waiting for its x5u
        p.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(15)
        code = p.proc.wait(15)
    finally:
        slow.shutdown()
        slow.server_close()
    assert all(v == n for v in results.values()), f"answered after SIGTERM: {results} of {n} each"
    assert code == 0, f"serve exited {code}"
    return f"in flight at SIGTERM, answered: UDP {results['udp']}/{n}, TCP {results['tcp']}/{n}, REST {results['rest']}/{n}; exit 0"


def workers_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(x) for x in out]


def killworker(env: Env) -> str:
    p, ports = env.serve("killworker", workers=2)
    kills = 0
    answered = checks = 0
    deadline = time.monotonic() + 30
    while kills < 12 and time.monotonic() < deadline:
        kids = workers_of(p.proc.pid)
        if kids:
            os.kill(kids[0], signal.SIGKILL)
            kills += 1
        for _ in range(3):
            checks += 1
            answered += health(ports["http"], timeout=1.0)
            time.sleep(0.1)
    alive = p.proc.poll() is None
    back = time.monotonic() + 20  # the last restarts are backed off (1, 2, 4 ... s)
    while alive and not health(ports["http"]) and time.monotonic() < back:
        time.sleep(0.2)
    later = sum(health(ports["http"]) for _ in range(10)) if alive else 0
    assert alive, f"supervisor exited ({p.proc.returncode}) after {kills} worker deaths: {p.log.read_text()[-1500:]}"
    assert later >= 9, f"health answered {later}/10 after the deaths"
    return f"{kills} workers killed; supervisor running; health {answered}/{checks} during, {later}/10 after"


def redis_restart(env: Env) -> str:
    exe = shutil.which("redis-server")
    if exe is None:
        return "skipped (no redis-server)"
    sock = env.dir / "redis.sock"

    def start() -> subprocess.Popen[bytes]:
        r = subprocess.Popen([exe, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        return r

    r = start()
    try:
        p, ports = env.serve("redis", extra_verification=f'redis = "unix://{sock}"')
        ident = identity_for(env, env.x5u.url("sp-chain.pem"))
        body = json.dumps({"verificationRequest": {"from": {"tn": ORIG}, "to": {"tn": [DEST]}, "time": int(time.time()),
                                                   "identity": ident}}).encode()
        req = (b"POST /stir/v1/verification HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
               + str(len(body)).encode() + b"\r\n\r\n" + body)
        total = ok = 0
        stop_at = time.monotonic() + (2 if env.short else 5)
        restarted = False
        end = time.monotonic() + (6 if env.short else 15)
        with socket.create_connection(("127.0.0.1", ports["http"]), timeout=5) as s:
            while time.monotonic() < end:
                if r.poll() is None and time.monotonic() > stop_at and not restarted:
                    r.terminate()
                    r.wait(5)
                    sock.unlink(missing_ok=True)
                    restart_at = time.monotonic() + 2
                    restarted = True
                if restarted and r.poll() is not None and time.monotonic() > restart_at:
                    r = start()
                s.sendall(req)
                got = b""
                while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"}"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                total += 1
                ok += got.startswith(b"HTTP/1.1 200") and b"verstat" in got
    finally:
        r.terminate()
        r.wait(5)
    assert total and ok == total, f"{ok}/{total} verifications answered across the Redis restart"
    return f"{ok}/{total} verifications answered while the private Redis was stopped and restarted"


SCENARIOS: dict[str, Callable[[Env], str]] = {"pipeline": pipeline, "slowloris": slowloris, "sipdesync": sipdesync,
                                              "sigterm": sigterm, "killworker": killworker, "redis": redis_restart}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true", help="shorter phases (about 30 s in all)")
    ap.add_argument("scenarios", nargs="*", default=list(SCENARIOS), help=f"subset of {', '.join(SCENARIOS)}")
    a = ap.parse_args(argv)
    env = Env(a.short)
    failed = 0
    try:
        for name in a.scenarios:
            t0 = time.monotonic()
            try:
                msg = SCENARIOS[name](env)
                print(f"ok   {name:10s} {time.monotonic() - t0:5.1f} s  {msg}", flush=True)
            except AssertionError as exc:
                failed += 1
                print(f"FAIL {name:10s} {time.monotonic() - t0:5.1f} s  {exc}", flush=True)
    finally:
        env.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
