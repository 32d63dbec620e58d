"""``python -m fuzz``: run the fuzz targets under atheris, each for a bounded time, and sum up.

    python -m fuzz [--seconds N] [TARGET ...]     # default: every target, FUZZ_SECONDS (60) each
    python -m fuzz --replay TARGET FILE ...       # run saved inputs through a target (no atheris needed)

Each target runs in its own process (:mod:`fuzz.one`), its log in ``.fuzz/logs/TARGET.log``.
The summary gives per target the executions, executions per second, coverage (libFuzzer's
``cov``/``ft`` counters), the corpus size and the findings; it is also written to
``.fuzz/summary.json``.  The exit status is 1 when anything was found.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

from fuzz.one import ROOT, WORK
from fuzz.targets import NAMES

_STAT = re.compile(r"stat::(\w+):\s+(\d+)")
_DONE = re.compile(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
_PROGRESS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")


def run_target(name: str, seconds: int) -> dict[str, object]:
    log_path = WORK / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    findings = WORK / "findings" / name
    before = set(findings.iterdir()) if findings.exists() else set()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))}
    started = time.monotonic()
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run([sys.executable, "-m", "fuzz.one", name, str(seconds)], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, timeout=seconds * 2 + 300)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = -1
    elapsed = time.monotonic() - started
    text = log_path.read_text(errors="replace")
    stats = {k: int(v) for k, v in _STAT.findall(text)}
    progress = _DONE.findall(text) or _PROGRESS.findall(text)
    cov = ft = corpus = 0
    if progress:
        _, cov, ft, corpus = (int(x) for x in progress[-1])
    new = sorted(p.name for p in (set(findings.iterdir()) if findings.exists() else set()) - before)
    return {
        "target": name, "seconds": round(elapsed, 1), "exit": code,
        "executions": stats.get("number_of_executed_units", 0), "exec_per_sec": stats.get("average_exec_per_sec", 0),
        "cov": cov, "ft": ft, "corpus": corpus, "findings": new, "log": str(log_path),
    }


def replay(name: str, files: list[str]) -> int:
    from fuzz.targets import load

    target = load(name)
    failed = 0
    for f in files:
        try:
            target.check(Path(f).read_bytes())
        except Exception:  # noqa: BLE001 - the finding, printed in full
            failed += 1
            print(f"--- {f}: FINDING")
            traceback.print_exc()
        else:
            print(f"--- {f}: ok")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", "60")), help="per target (FUZZ_SECONDS, default 60)")
    ap.add_argument("--replay", metavar="TARGET", help="run the given input files through TARGET and report")
    ap.add_argument("names", nargs="*", help=f"targets (default: all of {', '.join(NAMES)}); with --replay: files")
    args = ap.parse_args(argv)
    if args.replay:
        return replay(args.replay, args.names)
    names = args.names or list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        ap.error(f"unknown target(s) {', '.join(unknown)} (known: {', '.join(NAMES)})")
    print(f"fuzzing {len(names)} target(s), {args.seconds} s each; logs in {WORK / 'logs'}", flush=True)
    results = []
    for name in names:
        r = run_target(name, args.seconds)
        results.append(r)
        found = ", ".join(r["findings"]) or ("none" if r["exit"] == 0 else f"exit {r['exit']}, see {r['log']}")  # type: ignore[arg-type]
        print(f"{name:<13} {r['executions']:>10,} execs {r['exec_per_sec']:>7,}/s  cov {r['cov']:>5} ft {r['ft']:>6}  "
              f"corpus {r['corpus']:>5}  findings: {found}", flush=True)
    (WORK / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    bad = [r["target"] for r in results if r["findings"] or r["exit"] != 0]
    if bad:
        print(f"findings in: {', '.join(bad)} (inputs in {WORK / 'findings'}; replay: python -m fuzz --replay TARGET FILE)")
        return 1
    print("no findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
