"""The repository explains its own citations: every rule ID (``CM-12``, ``VS-06``, ...) and every
ATIS-1000082 failure case (``E17``) that the code, the docs or the command line cite has an entry
in docs/requirements.md, and every module that document names exists."""

from __future__ import annotations

import ast
import datetime as dt
import re
from pathlib import Path

import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from stirshaken.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "requirements.md"
PKG = ROOT / "src" / "stirshaken"
TEXT_SUFFIXES = {".py", ".md", ".sh", ".toml", ".txt", ".rst", ".cfg", ".ini", ".yaml", ".yml", ".json"}

# --- what the document defines ------------------------------------------------------------------

_HEADING = re.compile(r"^### ([A-Z]{2,3}-\d{2}) — \S", re.M)
_CASE_ROW = re.compile(r"^\| (E\d{1,2}) \|", re.M)


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def defined_ids(text: str) -> set[str]:
    """IDs with a ``### XX-nn — title`` entry."""
    return set(_HEADING.findall(text))


def defined_cases(text: str) -> set[str]:
    """ATIS-1000082 failure cases with a row ``| En |`` in the table."""
    return set(_CASE_ROW.findall(text))


def citation_patterns(prefixes: set[str]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(single ID, range ``XX-01..XX-05``) patterns for the prefixes the document defines."""
    alt = "|".join(sorted(prefixes))
    single = re.compile(rf"\b(?:{alt})-\d{{2}}\b")
    ranged = re.compile(rf"\b({alt})-(\d{{2}})\s*(?:\.\.|–)\s*\1-(\d{{2}})\b")
    return single, ranged


def cited_ids(text: str, prefixes: set[str]) -> set[str]:
    """Every ID a text cites, ranges expanded (``PA-01..PA-03`` cites PA-01, PA-02 and PA-03)."""
    single, ranged = citation_patterns(prefixes)
    found = set(single.findall(text))
    for prefix, lo, hi in ranged.findall(text):
        found.update(f"{prefix}-{n:02d}" for n in range(int(lo), int(hi) + 1))
    return found


_CASE = re.compile(r"\bE(\d{1,2})\b")


def cited_cases(text: str) -> set[str]:
    """ATIS-1000082 cases cited as ``E7``, ``E7/E8`` or ``E3-E19`` (a dash range is expanded)."""
    found = {f"E{n}" for n in _CASE.findall(text)}
    for lo, hi in re.findall(r"\bE(\d{1,2})-E(\d{1,2})\b", text):
        found.update(f"E{n}" for n in range(int(lo), int(hi) + 1))
    return found


def _files(*parts: str) -> list[Path]:
    out: list[Path] = []
    for part in parts:
        p = ROOT / part
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out.extend(f for f in sorted(p.rglob("*")) if f.is_file() and f.suffix in TEXT_SUFFIXES and "__pycache__" not in f.parts)
    return [f for f in out if f.resolve() != Path(__file__).resolve()]


def _citations(files: list[Path], prefixes: set[str]) -> dict[str, set[str]]:
    """ID -> the files (relative names) citing it."""
    where: dict[str, set[str]] = {}
    for f in files:
        for rule in cited_ids(f.read_text(encoding="utf-8", errors="replace"), prefixes):
            where.setdefault(rule, set()).add(str(f.relative_to(ROOT)))
    return where


CITING = ("src", "docs", "README.md", "bench", "tests")


# --- the helpers themselves can fail ---------------------------------------------------------------


def test_scanner_expands_ranges_and_ignores_lookalikes():
    prefixes = {"CM", "PA", "AC"}
    text = "see PA-01..PA-03 and CM-12, not XCM-13 or CM-123 or AB-01; AC-04–AC-05"
    assert cited_ids(text, prefixes) == {"PA-01", "PA-02", "PA-03", "CM-12", "AC-04", "AC-05"}
    assert cited_cases("E3-E5, E17/E18, not E164 or FE1") == {"E3", "E4", "E5", "E17", "E18"}


def test_document_defines_the_areas_in_use():
    text = _doc()
    ids = defined_ids(text)
    prefixes = {i.split("-")[0] for i in ids}
    assert {"CM", "VS", "PA", "AC", "CR", "PT"} <= prefixes
    assert defined_cases(text) == {f"E{n}" for n in range(1, 20)}
    # one entry per ID, each saying where it comes from and what the project does with it
    heads = _HEADING.findall(text)
    assert len(heads) == len(ids), [h for h in heads if heads.count(h) > 1]
    entries = re.split(r"^### ", text, flags=re.M)[1:]
    for entry in entries:
        rule = entry.split(" ", 1)[0]
        if not re.fullmatch(r"[A-Z]{2,3}-\d{2}", rule):
            continue
        body = entry.split("\n## ", 1)[0]
        assert "Source:" in body or "Not settled" in body, rule
        assert re.search(r"Enforced by:|Implemented in:|Project choice:", body), rule


def test_document_names_existing_modules():
    """Every ``area/module.py`` (or ``area/package/module.py``) path the document names exists under
    src/stirshaken/ (modules move)."""
    named = set(re.findall(r"`((?:core|net|vs|pki|serve|lab|cli)/(?:[a-z_]+/)?[a-z_]+\.py)`", _doc()))
    assert len(named) > 10
    missing = sorted(p for p in named if not (PKG / p).is_file())
    assert not missing, missing
    tests = set(re.findall(r"`(tests/[a-z_]+\.py)`", _doc()))
    assert not sorted(p for p in tests if not (ROOT / p).is_file())


# --- (a) every cited ID resolves -------------------------------------------------------------------


def test_every_cited_rule_id_is_defined():
    text = _doc()
    ids = defined_ids(text)
    prefixes = {i.split("-")[0] for i in ids}
    where = _citations(_files(*CITING), prefixes)
    # the scan reaches the code: the certificate profile checker cites its rules
    assert {"CM-12", "CM-13", "PA-01", "AC-03"} <= where.keys()
    assert any(f.startswith("src/") for f in where["CM-12"])
    undefined = {rule: sorted(files) for rule, files in where.items() if rule not in ids}
    assert not undefined, f"cited but not in docs/requirements.md: {undefined}"


def test_every_cited_failure_case_is_defined():
    cases = defined_cases(_doc())
    where: dict[str, set[str]] = {}
    for f in _files("src", "docs", "README.md", "bench"):
        for case in cited_cases(f.read_text(encoding="utf-8", errors="replace")):
            where.setdefault(case, set()).add(str(f.relative_to(ROOT)))
    assert {"E17", "E3"} <= where.keys()
    undefined = {c: sorted(fs) for c, fs in where.items() if c not in cases}
    assert not undefined, undefined


# --- (b) no reference to the checklist outside the repository ----------------------------------------

# split so that this file does not cite them: documents that live outside the repository
_OUTSIDE = ("STANDARDS" + ".md", "DEPENDENCIES" + ".md", "STYLE" + ".md", "ANCHORS" + ".md", "shared" + "/")


def test_no_reference_to_documents_outside_the_repository():
    hits = []
    for f in _files("src", "docs", "README.md", "tests", "bench"):
        for n, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if any(o in line for o in _OUTSIDE):
                hits.append(f"{f.relative_to(ROOT)}:{n}")
    assert not hits, f"{len(hits)} references to documents outside the repository (use docs/requirements.md): {hits[:20]}"


# --- (c) what the command line prints --------------------------------------------------------------


def _string_constants(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_cli_source_strings_cite_defined_ids():
    ids = defined_ids(_doc())
    prefixes = {i.split("-")[0] for i in ids}
    cli_files = sorted((PKG / "cli").glob("*.py"))
    assert cli_files
    cited = set()
    for f in cli_files:
        for s in _string_constants(f):
            cited |= cited_ids(s, prefixes)
    assert cited <= ids, sorted(cited - ids)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _bad_certificates() -> dict[str, x509.Certificate]:
    """Certificates that break most of the profile, so ``stirshaken profile`` cites many rules."""
    now = dt.datetime.now(dt.timezone.utc)
    k256 = ec.generate_private_key(ec.SECP256R1())
    k384 = ec.generate_private_key(ec.SECP384R1())
    root = (
        x509.CertificateBuilder().subject_name(_name("Test")).issuer_name(_name("Test")).public_key(k256.public_key())
        .serial_number(99).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=False)
        .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier("http://pa.example/crl")], None, None, None)]), critical=False)
        .add_extension(x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier("1.2.3.4"), None)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(k256, hashes.SHA256())
    )
    sp = (
        x509.CertificateBuilder().subject_name(_name("Acme")).issuer_name(_name("Test")).public_key(k384.public_key())
        .serial_number(5).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
        .sign(k384, hashes.SHA384())
    )
    return {"root": root, "sp": sp}


def test_cli_profile_output_cites_defined_ids(tmp_path):
    """``stirshaken profile`` prints deviations as ``CM-xx ...``: each ID is defined and is one the
    source scan of (a) sees (the messages live in src/, so (a) covers them)."""
    text = _doc()
    ids = defined_ids(text)
    prefixes = {i.split("-")[0] for i in ids}
    in_source = _citations(_files("src"), prefixes).keys()
    runner = CliRunner()
    printed: set[str] = set()
    for role, cert in _bad_certificates().items():
        path = tmp_path / f"{role}.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        res = runner.invoke(app, ["profile", str(path), "--role", role, "--json"])
        assert res.exit_code == 1, res.output
        deviations = orjson.loads(res.stdout)["deviations"]
        assert deviations
        for line in deviations:
            found = cited_ids(line, prefixes)
            assert found, f"deviation without a rule ID: {line!r}"
            printed |= found
    # the bad certificates exercise a good part of the profile
    assert len(printed) >= 8, sorted(printed)
    assert printed <= ids, sorted(printed - ids)
    assert printed <= in_source, sorted(printed - in_source)
