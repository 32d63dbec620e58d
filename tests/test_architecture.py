"""The layers of the tree hold: import-linter's contracts (pyproject.toml [tool.importlinter]) run
as part of the test command, and a broken one fails the suite with import-linter's report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    exe = Path(sys.executable).with_name("lint-imports")
    p = subprocess.run([str(exe), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert "BROKEN" not in p.stdout and p.stdout.count("KEPT") >= 4


def test_a_broken_layer_is_reported(tmp_path):
    """The contract can fail: a copy of the package where the core imports the STI-VS breaks it."""
    import shutil

    shutil.copytree(ROOT / "src" / "stirshaken", tmp_path / "stirshaken")
    bad = tmp_path / "stirshaken" / "core" / "tn.py"
    bad.write_text(bad.read_text() + "\nfrom stirshaken.vs import verifier as _upward  # noqa\n")
    exe = Path(sys.executable).with_name("lint-imports")
    p = subprocess.run([str(exe), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert p.returncode != 0 and "BROKEN" in p.stdout, p.stdout[-2000:] + p.stderr[-1000:]
    assert "stirshaken.core.tn -> stirshaken.vs.verifier" in p.stdout


def test_signing_path_loads_no_database_or_server():
    code = (
        "import sys, stirshaken, stirshaken.core.passport, stirshaken.serve.signing;"
        "bad = sorted(m for m in ('sqlalchemy', 'aiohttp', 'redis', 'typer', 'rich') if m in sys.modules);"
        "print(','.join(bad))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == ""


def test_core_tests_mirror_the_core_modules():
    """One test module per core module (tests/core/test_<module>.py), and no test module there
    that names no module."""
    core = ROOT / "src" / "stirshaken" / "core"
    modules = {p.stem for p in core.glob("*.py") if p.stem != "__init__"} | {p.name for p in core.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    tests = {p.stem.removeprefix("test_") for p in (ROOT / "tests" / "core").glob("test_*.py")}
    assert modules == tests, (sorted(modules - tests), sorted(tests - modules))


def test_no_sys_path_manipulation_in_tests():
    offenders = [p.name for p in (ROOT / "tests").rglob("*.py") if "sys.path." in p.read_text() and p.name != "test_architecture.py"]
    assert offenders == []
