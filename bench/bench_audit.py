"""Benchmark of ``stirshaken audit`` (stirshaken.analysis.audit) against the warm verifier.

Run (from the repository root; ``make bench-audit``)::

    .venv/bin/python bench/bench_audit.py                    # 200,000 INVITEs, jobs 1 and 2
    .venv/bin/python bench/bench_audit.py --invites 20000 --jobs 1 2 4

What it does:

1. a test PKI with ``--certs`` SP certificates (one SPC each) and their chains in a directory
   (the offline ``--certs`` rule: the URL's file name);
2. a pcap of ``--invites`` signed INVITEs (plus 5 % unsigned ones), written with a minimal pcap
   writer (Ethernet/IPv4; 80 % UDP, 20 % TCP in a few long flows with two INVITEs in one segment
   every fourth segment).  About 10 % fail: 4 % spoofed calling number (438), 2 % altered
   signature (438), 3 % stale iat against the Date header (403), 1 % an x5u with no chain (436);
3. the warm ``Verifier.verify`` rate over up to 30,000 distinct calls of the capture, each verified
   once (static chains, credentials validated beforehand, no I/O), in calls per CPU second;
4. the audit of the capture with ``--jobs 1`` (INVITEs per CPU second, and per wall second) and
   with each ``--jobs N`` given (per wall second); the goal is one-core audit >= 0.5 x the warm
   verify rate.

Everything is local; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import email.utils
import os
import random
import struct
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from stirshaken.analysis.audit import AuditOptions, run_audit  # noqa: E402
from stirshaken.analysis.inputs import parse_sip  # noqa: E402
from stirshaken.core.certificates import create_intermediate, create_root, create_sp_certificate, pem  # noqa: E402
from stirshaken.core.passport import Signer  # noqa: E402
from stirshaken.vs.verifier import Verifier, VerifierConfig  # noqa: E402

ORIG_BASE, DEST = 12155550000, "12155551213"


class PcapWriter:
    """A minimal pcap writer (libpcap format, microsecond times, Ethernet): enough to produce a
    large capture fast (measured: scapy builds and serializes about 2,000 UDP packets per CPU second,
    this writes about 300,000).  IP and UDP/TCP
    checksums are left zero, as captures of offloading NICs have them."""

    def __init__(self, path: Path):
        self.fh = open(path, "wb")
        self.fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        self.ip_id = 0
        self.eth = bytes.fromhex("020000000002" "020000000001" "0800")

    def _ip(self, proto: int, src: bytes, dst: bytes, payload: bytes) -> bytes:
        self.ip_id = (self.ip_id + 1) & 0xFFFF
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), self.ip_id, 0x4000, 64, proto, 0, src, dst) + payload

    def _write(self, t: float, frame: bytes) -> None:
        sec = int(t)
        self.fh.write(struct.pack("<IIII", sec, int((t - sec) * 1e6), len(frame), len(frame)) + frame)

    def udp(self, t: float, src: bytes, dst: bytes, sport: int, dport: int, data: bytes) -> None:
        self._write(t, self.eth + self._ip(17, src, dst, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data))

    def tcp(self, t: float, src: bytes, dst: bytes, sport: int, dport: int, seq: int, data: bytes) -> None:
        hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, 1, 5 << 4, 0x18, 65535, 0, 0)
        self._write(t, self.eth + self._ip(6, src, dst, hdr + data))

    def close(self) -> None:
        self.fh.close()


def invite(n: int, orig: str, identity: str | None, date: float) -> bytes:
    lines = [f"INVITE sip:+{DEST}@sbc.example.net SIP/2.0", f"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKb{n}",
             f"From: <sip:+{orig}@carrier.example>;tag=f{n}", f"To: <sip:+{DEST}@sbc.example.net>", f"Call-ID: bench-{n}@carrier.example",
             "CSeq: 1 INVITE", "Max-Forwards: 69", "Contact: <sip:198.51.100.7:5060>", f"Date: {email.utils.formatdate(date, usegmt=True)}",
             f"P-Asserted-Identity: <sip:+{orig}@carrier.example>"]
    if identity:
        lines.append(f"Identity: {identity}")
    body = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    lines += ["Content-Type: application/sdp", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def build(d: Path, invites: int, ncerts: int, seed: int = 1) -> tuple[Path, Path, list[tuple[bytes, float]]]:
    """The PKI, the chain directory and the capture; returns (root file, certs dir, a sample of
    (INVITE bytes, capture time) for the verifier measurement)."""
    rnd = random.Random(seed)
    rk, ik = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = create_root(rk)
    inter = create_intermediate(ik, root, rk)
    (d / "root.pem").write_bytes(pem([root]))
    certs = d / "certs"
    certs.mkdir(exist_ok=True)
    signers = []
    for i in range(ncerts):
        k = ec.generate_private_key(ec.SECP256R1())
        spc = f"{100 + i}A"
        (certs / f"sp{i}.pem").write_bytes(pem([create_sp_certificate(k, inter, ik, spc=spc), inter]))
        signers.append(Signer(k, f"https://cr{i % 5}.example.net/certs/sp{i}.pem"))
    ghost = Signer(ec.generate_private_key(ec.SECP256R1()), "https://cr.example.org/certs/unknown.pem")
    cap = d / "bench.pcap"
    w = PcapWriter(cap)
    t0 = time.time() + 5
    sample: list[tuple[bytes, float]] = []
    tcp_flows = [[b"\xc6\x33\x64" + bytes([10 + f]), 40000 + f, 1000] for f in range(8)]
    pending: dict[int, bytes] = {}
    n_total = invites + invites // 19  # + ~5 % unsigned
    for n in range(n_total):
        t = t0 + n * 0.05
        orig = str(ORIG_BASE + rnd.randrange(10000))
        r = rnd.random()
        unsigned = n % 20 == 19
        ident = None
        if not unsigned:
            s = ghost if r < 0.01 else signers[rnd.randrange(ncerts)]
            iat = int(t) - 300 if 0.01 <= r < 0.04 else int(t)
            ident = s.identity(orig=orig, dest=[DEST], attest=rnd.choice("AAAAABBC"), iat=iat, origid=str(uuid.UUID(int=rnd.getrandbits(128), version=4)))
            if 0.04 <= r < 0.06:
                h, p, rest = ident.split(".", 2)
                ident = f"{h}.{p}.{'AAAA' if rest[:4] != 'AAAA' else 'BBBB'}{rest[4:]}"
            if 0.06 <= r < 0.10:
                orig = str(ORIG_BASE + 10000 + rnd.randrange(100))  # the From differs from the signed orig
        msg = invite(n, orig, ident, t)
        if len(sample) < 30000 and ident is not None:
            sample.append((msg, t))
        if n % 5:
            w.udp(t, b"\xc6\x33\x64\x07", b"\xcb\x00\x71\x05", 5060, 5060, msg)
        else:
            f = (n // 5) % len(tcp_flows)
            flow = tcp_flows[f]
            if f in pending:  # every other TCP INVITE of a flow shares a segment with the previous one
                data = pending.pop(f) + msg
                w.tcp(t, flow[0], b"\xcb\x00\x71\x05", flow[1], 5060, flow[2], data)
                flow[2] += len(data)
            else:
                pending[f] = msg
    for f, data in pending.items():
        flow = tcp_flows[f]
        w.tcp(t0 + n_total * 0.05, flow[0], b"\xcb\x00\x71\x05", flow[1], 5060, flow[2], data)
    w.close()
    return d / "root.pem", certs, sample


def verify_rate(root: Path, certs: Path, sample: list[tuple[bytes, float]]) -> float:
    """Warm ``Verifier.verify`` calls per CPU second over distinct calls (static chains), each
    verified once as in an audit (a repeated token would hit the decoder's caches)."""
    from stirshaken.analysis.audit import cert_file_for
    from stirshaken.core.certificates import load_certificates

    v = Verifier(VerifierConfig(trust_anchors=[str(root)], fetch_crl_distribution_points=False))
    calls = []
    for msg, t in sample:
        c = parse_sip(msg, fallback_time=t)
        assert c is not None
        url = c.info.identities[0].split("info=<", 1)[1].split(">", 1)[0]
        if not v.is_static(url):
            f = cert_file_for(certs, url)
            if f is None:
                continue
            v.add_static_chain(url, load_certificates(f.read_bytes()))
        calls.append(c)
    warm, timed = calls[:200], calls[200:]
    for c in warm:  # the validated credentials are cached; the timed calls are distinct tokens, each seen once
        v.verify(c.info, now=c.time)
    n = len(timed)
    c0 = time.process_time()
    for c in timed:
        v.verify(c.info, now=c.time)
    rate = n / (time.process_time() - c0)
    v.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--invites", type=int, default=200_000)
    ap.add_argument("--certs", type=int, default=40)
    ap.add_argument("--jobs", type=int, nargs="*", default=[2])
    ap.add_argument("--dir", type=Path, default=None, help="Keep the PKI and capture here (default: a temporary directory).")
    a = ap.parse_args()
    d = a.dir or Path(tempfile.mkdtemp(prefix="bench-audit-"))
    d.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    root, certs, sample = build(d, a.invites, a.certs)
    size = (d / "bench.pcap").stat().st_size
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other load skews the wall-clock and --jobs figures)")
    print(f"capture: {d / 'bench.pcap'} ({size / 1e6:.1f} MB, {a.invites} signed INVITEs + unsigned; built in {time.perf_counter() - t:.1f} s)")
    if hasattr(os, "sched_setaffinity") and os.environ.get("BENCH_PIN", "1") != "0":
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    vr = verify_rate(root, certs, sample)
    print(f"warm Verifier.verify: {vr:,.0f} calls per CPU second")
    opts = AuditOptions(config=VerifierConfig(trust_anchors=[str(root)], fetch_crl_distribution_points=False), certs_dir=certs)
    c0, w0 = time.process_time(), time.perf_counter()
    st = run_audit(opts, [d / "bench.pcap"])
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    s = st.summary()
    print(f"audit --jobs 1: {s['signed']:,} signed / {s['invites']:,} INVITEs, {s['passed_share_of_signed']:.1%} passed; "
          f"{s['signed'] / cpu:,.0f} INVITEs per CPU second, {s['signed'] / wall:,.0f} per wall second")
    print(f"ratio audit (one core, CPU) / warm verify: {s['signed'] / cpu / vr:.2f} (goal >= 0.5)")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    import resource

    for j in a.jobs:
        w0 = time.perf_counter()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        stj = run_audit(opts, [d / "bench.pcap"], jobs=j)
        wall = time.perf_counter() - w0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wcpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
        assert stj.signed == st.signed and stj.passed == st.passed, (stj.summary(), s)
        print(f"audit --jobs {j}: {stj.signed / wall:,.0f} INVITEs per wall second ({wall:.1f} s; same counts); "
              f"workers' CPU {wcpu:.1f} s in all ({cpu:.1f} s with one process)")
    reasons = {r["reason"]: r["calls"] for r in st.table("reason")}
    print("reasons:", ", ".join(f"{k}: {v}" for k, v in reasons.items()))


if __name__ == "__main__":
    main()
