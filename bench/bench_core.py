#!/usr/bin/env python3
"""Single-core sign and verify throughput of the core, next to ``openssl speed ecdsap256``.

    .venv/bin/python bench/bench_core.py [--seconds 1] [--rounds 5] [--profile sign|verify] [--no-openssl]
    BENCH_PIN=0 .venv/bin/python bench/bench_core.py     # do not pin the process to one CPU

* sign   = one full SHAKEN Identity header value: claims (new UUID origid, iat now), deterministic
           JSON (RFC 8225 §9), ES256, base64url, parameters; with the default nonce (OpenSSL's
           hedged random k, which is what ``openssl speed`` measures) and with RFC 6979
           (``deterministic=True``).
* verify = full Identity header parse + PASSporT decode (strict) + ES256 signature check + the
           decision by ``verify.verify_offline`` with an already validated credential
           (``ValidatedCredential``; the certificate is loaded once, as a VS cache would hold it).

* raw    = ``cryptography``'s ES256 call alone (``key.sign`` / ``public_key.verify`` of the same
           bytes), so that the cost of everything around the operation can be read off.

OpenSSL is measured in the same run (``openssl speed -seconds N ecdsap256``).  The measurements
are interleaved in rounds (ours, then OpenSSL, then ours again ...) and each round gives its own
ratio, so that a drift of the machine's speed during the run (a shared VM) moves both sides
alike; the median ratio over the rounds is what is compared with the target (>= 0.7 of OpenSSL's
sign and verify rates).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import platform
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import cryptography  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from stirshaken.core import certificates as C  # noqa: E402
from stirshaken.core.passport import Signer  # noqa: E402
from stirshaken.core.tnauthlist import TNAuthList  # noqa: E402
from stirshaken.core.verification import VerificationCache, verify_offline  # noqa: E402

X5U = "https://cr.example.net/sp-chain.pem"


def setup():
    rk, ik, sk = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = C.create_root(rk)
    inter = C.create_intermediate(ik, root, rk, crl_url="https://sti-pa.example.net/crl")
    sp = C.create_sp_certificate(sk, inter, ik, tnauthlist=TNAuthList.for_spc("1234"), crl_url="https://sti-pa.example.net/crl")
    credential = C.TrustStore([root]).validate([sp, inter])
    return sk, credential


def rate(fn, seconds: float) -> float:
    """Calls per second of CPU time of ``fn`` over about ``seconds`` (batched to keep timer
    overhead out).  CPU time, like ``openssl speed`` (which divides by user CPU time unless given
    ``-elapsed``), so that other load on a shared machine does not skew the ratio."""
    for _ in range(200):  # warm-up
        fn()
    n, batch = 0, 256
    clock = time.process_time
    start = clock()
    wall_deadline = time.perf_counter() + 4 * seconds  # bound the wall time on a busy machine
    while True:
        for _ in range(batch):
            fn()
        n += batch
        now = clock()
        if now - start >= seconds or time.perf_counter() >= wall_deadline:
            return n / (now - start)


def openssl_speed(seconds: int) -> tuple[float, float, str] | None:
    exe = shutil.which("openssl")
    if exe is None:
        return None
    p = subprocess.run([exe, "speed", "-seconds", str(seconds), "ecdsap256"], capture_output=True, text=True,
                       env={**os.environ, "OPENSSL_ia32cap": os.environ.get("OPENSSL_ia32cap", "")} if "OPENSSL_ia32cap" in os.environ else None)
    m = re.search(r"256 bits ecdsa \(nistp256\)\s+\S+s\s+\S+s\s+([\d.]+)\s+([\d.]+)", p.stdout)
    version = subprocess.run([exe, "version"], capture_output=True, text=True).stdout.strip()
    if m is None:
        return None
    return float(m.group(1)), float(m.group(2)), version


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=1.0, help="CPU seconds per operation and round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median ratio is used)")
    ap.add_argument("--profile", choices=["sign", "verify"], help="cProfile one loop and print the top functions")
    ap.add_argument("--no-openssl", action="store_true")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity") and os.environ.get("BENCH_PIN", "1") == "1":
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as openssl speed uses

    key, credential = setup()
    det = Signer(key, X5U, deterministic=True)
    rnd = Signer(key, X5U)  # the default: hedged random k
    orig, dest = "12155551212", ["12155551213"]
    identity = det.identity(orig=orig, dest=dest, attest="A")
    now = time.time()
    assert verify_offline(identity, credential, orig=orig, dest=dest, now=now).ok
    signing_input = identity.split(";", 1)[0].rsplit(".", 1)[0].encode()
    alg_det = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    alg_rnd = ec.ECDSA(hashes.SHA256())
    der_sig = key.sign(signing_input, alg_rnd)
    public_key = key.public_key()

    def sign_det():
        det.identity(orig=orig, dest=dest, attest="A")

    def sign_rnd():
        rnd.identity(orig=orig, dest=dest, attest="A")

    cache = VerificationCache()  # the caller's cache, as the STI-VS Verifier keeps one

    def verify():
        r = verify_offline(identity, credential, orig=orig, dest=dest, now=now, cache=cache)
        if not r.ok:  # pragma: no cover
            raise SystemExit(f"verification failed: {r.description}")

    if args.profile:
        fn = {"sign": sign_rnd, "verify": verify}[args.profile]
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(20000):
            fn()
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)
        return 0

    ops = {  # name: (function, which openssl rate it is compared with)
        "sign (default, hedged random k)": (sign_rnd, 0),
        "sign, deterministic=True (RFC 6979)": (sign_det, 0),
        "verify (parse+decode+sig+decision)": (verify, 1),
        "raw cryptography sign, random k": (lambda: key.sign(signing_input, alg_rnd), 0),
        "raw cryptography sign, RFC 6979": (lambda: key.sign(signing_input, alg_det), 0),
        "raw cryptography verify": (lambda: public_key.verify(der_sig, signing_input, alg_rnd), 1),
    }
    print(f"python {platform.python_version()}  cryptography {cryptography.__version__}  {platform.machine()}  "
          f"cpus {os.cpu_count()}  (single core, {args.rounds} rounds of {args.seconds:g} CPU s per operation)")
    gc.collect()
    gc.freeze()  # long-lived setup objects out of the collector's way, as a server after start
    rates: dict[str, list[float]] = {name: [] for name in ops}
    ratios: dict[str, list[float]] = {name: [] for name in ops}
    ossl_runs: list[tuple[float, float, str]] = []
    oss_seconds = int(max(1, round(args.seconds)))
    for rnd_no in range(args.rounds):
        round_rates = {name: rate(fn, args.seconds) for name, (fn, _) in ops.items()}
        ossl = None if args.no_openssl else openssl_speed(oss_seconds)
        for name, (_, which) in ops.items():
            rates[name].append(round_rates[name])
            if ossl is not None:
                ratios[name].append(round_rates[name] / ossl[which])
        if ossl is not None:
            ossl_runs.append(ossl)
            line = [f"{ratios[n][-1]:.2f}" for n in list(ops)[:3]]
            print(f"  round {rnd_no + 1}: openssl sign {ossl[0]:.0f}/s verify {ossl[1]:.0f}/s; "
                  f"ratios sign {line[0]}, sign-RFC6979 {line[1]}, verify {line[2]}", flush=True)
    print()
    print(f"{'operation (median of rounds)':40s} {'ops/s':>10s} {'us/op':>8s} {'openssl ops/s':>14s} {'ratio':>6s} {'range':>10s}")
    for name, (_, which) in ops.items():
        r = statistics.median(rates[name])
        if ossl_runs:
            ref = statistics.median(o[which] for o in ossl_runs)
            lo, hi = min(ratios[name]), max(ratios[name])
            print(f"{name:40s} {r:10.0f} {1e6 / r:8.1f} {ref:14.0f} {statistics.median(ratios[name]):6.2f} {lo:4.2f}-{hi:4.2f}")
        else:
            print(f"{name:40s} {r:10.0f} {1e6 / r:8.1f} {'n/a':>14s} {'n/a':>6s}")
    med = {name: 1e6 / statistics.median(v) for name, v in rates.items()}
    print(f"\naround the ES256 operation: sign +{med['sign (default, hedged random k)'] - med['raw cryptography sign, random k']:.1f} us, "
          f"sign-RFC6979 +{med['sign, deterministic=True (RFC 6979)'] - med['raw cryptography sign, RFC 6979']:.1f} us, "
          f"verify +{med['verify (parse+decode+sig+decision)'] - med['raw cryptography verify']:.1f} us")
    if ossl_runs:
        print(f"reference: `openssl speed -seconds {oss_seconds} ecdsap256` ({ossl_runs[0][2]}), once per round; "
              f"target ratio >= 0.70")
    gc.unfreeze()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
