"""Run one fuzz target under atheris (libFuzzer), coverage-guided: ``python -m fuzz.one TARGET SECONDS``.

The project's modules are instrumented as the target imports them.  The run is seeded from the
target's valid samples (written to ``.fuzz/seeds/TARGET/``) and the corpus of earlier runs
(``.fuzz/corpus/TARGET/``, where new inputs are kept); an input that breaks a property is
written to ``.fuzz/findings/TARGET/`` and ends the run.  Extra arguments go to libFuzzer
(``-runs=N``, ``-jobs=N``, a file to replay, ...).  ``make fuzz`` runs every target this way
(:mod:`fuzz.__main__`).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("FUZZ_DIR", ROOT / ".fuzz"))


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit("usage: python -m fuzz.one TARGET SECONDS [libFuzzer options]")
    name, seconds, extra = argv[0], int(argv[1]), argv[2:]
    try:
        import atheris
    except ImportError:
        raise SystemExit("atheris is not installed: pip install -e '.[fuzz]' (or: make fuzz)") from None
    os.environ.setdefault("STIRSHAKEN_FUZZ_MATERIAL", str(WORK / "material" / name))
    with atheris.instrument_imports(include=["stirshaken"]):
        from fuzz.targets import load

        target = load(name)
        from fuzz.material import material

        m = material()
    seeds, corpus, findings = (WORK / d / name for d in ("seeds", "corpus", "findings"))
    for d in (seeds, corpus, findings):
        d.mkdir(parents=True, exist_ok=True)
    for old in seeds.iterdir():
        old.unlink()
    for sample in target.seeds(m):
        (seeds / hashlib.sha1(sample).hexdigest()).write_bytes(sample)
    dictionary = WORK / "dict" / f"{name}.dict"
    dictionary.parent.mkdir(parents=True, exist_ok=True)
    dictionary.write_text("".join('"' + "".join(f"\\x{b:02x}" for b in token) + '"\n' for token in target.tokens))
    check = target.check

    def test_one_input(data: bytes) -> None:
        check(data)

    args = [sys.argv[0], f"-max_total_time={seconds}", f"-max_len={target.max_len}", "-timeout=10", "-rss_limit_mb=2048",
            f"-dict={dictionary}", f"-artifact_prefix={findings}/", "-print_final_stats=1", *extra]
    if not any(not a.startswith("-") for a in extra):  # no file or directory given: fuzz the corpus
        args += [str(corpus), str(seeds)]
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv[1:])
