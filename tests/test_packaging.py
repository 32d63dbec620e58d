"""What an operator installs: the systemd unit verifies, the container recipe runs as a non-root
user, the licence and the version have one source each, the CHANGELOG covers the version."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import stirshaken

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "packaging" / "stirshaken.service"


def _unit_for_this_machine(tmp_path: Path) -> Path:
    """The shipped unit with ExecStart pointing at this venv's stirshaken (systemd-analyze checks
    that the executable exists)."""
    exe = Path(sys.executable).with_name("stirshaken")
    unit = tmp_path / "stirshaken.service"
    unit.write_text(UNIT.read_text().replace("/opt/stirshaken/bin/stirshaken", str(exe)))
    return unit


def test_systemd_unit_verifies_without_warnings(tmp_path):
    assert shutil.which("systemd-analyze"), "systemd-analyze is installed by scripts/install-deps.sh"
    p = subprocess.run(["systemd-analyze", "verify", str(_unit_for_this_machine(tmp_path))], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "stirshaken.service" not in p.stderr, p.stderr  # unknown keys are only warnings: none allowed


def test_systemd_verify_can_fail(tmp_path):
    unit = _unit_for_this_machine(tmp_path)
    unit.write_text(unit.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilegez=yes"))
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "Unknown key 'NoNewPrivilegez'" in p.stderr


def test_systemd_unit_is_hardened_and_reloads_by_sighup():
    text = UNIT.read_text()
    for line in ("User=stirshaken", "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes",
                 "ReadOnlyPaths=/etc/stirshaken", "PrivateTmp=yes", "ExecReload=/bin/kill -HUP $MAINPID", "UMask=0077"):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    assert "serve --config /etc/stirshaken/stirshaken.toml --check" in text  # a bad config never starts


def test_containerfile_installs_the_wheel_as_non_root():
    text = (ROOT / "packaging" / "Containerfile").read_text()
    assert re.search(r"^FROM \S*python:3\.\d+-slim$", text, re.M)
    assert "pip install --no-cache-dir /tmp/stirshaken-*.whl" in text
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] not in ("root", "0")


def test_license_matches_pyproject():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "MIT" and meta["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_changelog_covers_the_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## {re.escape(stirshaken.__version__)}\b", text, re.M)
    assert "Upgrading" in text


@pytest.mark.parametrize("doc", ["docs/operations.md"])
def test_operations_doc_has_the_procedures(doc):
    text = (ROOT / doc).read_text()
    for heading in ("Install as a service", "Upgrade", "Key rotation"):
        assert heading in text, heading
