"""``stirshaken inspect``: header / SIP request / verificationRequest inputs, the verdict equal to
``stirshaken verify`` on the same input, the x5u fetch and SSRF decision, the chain, fixes."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from stirshaken.cli.main import app

from tests.test_serve_support import FileServer, make_pki

ORIG, DEST = "12155551212", "12155551213"
X5U = "https://cr.example.net/sp-chain.pem"
runner = CliRunner()


def cli(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_pki(tmp_path_factory.mktemp("inspect-pki"))


def sign(pki: Any, x5u: str = X5U, orig: str = ORIG) -> str:
    r = cli("sign", "--key", str(pki.sp_key), "--x5u", x5u, "--allow-http-x5u", "--allow-private-x5u", "--attest", "A",
            "--orig", orig, "--dest", DEST)  # some cases sign for a loopback http x5u on purpose
    assert r.exit_code == 0, r.output
    return r.stdout.strip()


def inspect_json(*args: str, input: str | None = None) -> tuple[int, dict[str, Any]]:
    r = cli("inspect", *args, "--json", input=input)
    assert r.exit_code in (0, 1), r.output
    return r.exit_code, orjson.loads(r.stdout)


def verify_json(identity: str, *args: str) -> tuple[int, dict[str, Any]]:
    r = cli("verify", identity, *args, "--json")
    return r.exit_code, orjson.loads(r.stdout)


def sip_invite(identity: str, frm: str = ORIG, date: str | None = None) -> str:
    """An INVITE as copied from sngrep: LF line ends, a Content-Length counting CRLFs."""
    lines = [f"INVITE sip:+{DEST}@b.example SIP/2.0", "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinspect",
             f"From: \"Alice\" <sip:+{frm}@a.example>;tag=77", f"To: <sip:+{DEST}@b.example>", "Call-ID: inspect-1@a.example",
             "CSeq: 1 INVITE", f"Identity: {identity}", "Content-Type: application/sdp", "Content-Length: 12"]
    if date:
        lines.append(f"Date: {date}")
    return "\n".join(lines) + "\n\nv=0\no=- 1 1\n"


def test_valid_header_agrees_with_verify(pki: Any) -> None:
    ident = sign(pki)
    common = ("--trust-anchor", str(pki.root), "--cert", str(pki.sp_chain), "--orig", ORIG, "--dest", DEST)
    code, rep = inspect_json(ident, *common)
    vcode, vres = verify_json(ident, *common)
    assert code == vcode == 0
    assert rep["verdict"]["verstat"] == vres["verstat"] == "TN-Validation-Passed"
    assert rep["verdict"]["attest"] == "A"
    p = rep["passports"][0]
    assert p["header"]["x5u"] == X5U and p["claims"]["orig"]["tn"] == ORIG
    assert abs(p["iat"]["age_seconds"]) < 30 and p["iat"]["date"].endswith("Z")
    assert [c["check"] for c in p["checks"] if not c["ok"]] == []
    assert p["signature"]["ok"] is True
    chain = p["chain"]
    assert len(chain) == 2 and chain[0]["subject"].startswith("CN=SHAKEN 1234")
    assert chain[0]["tnauthlist"]["spc"] == ["1234"] and chain[0]["validity"] == "valid"
    assert chain[1]["issuer_is_trust_anchor"] is True
    assert p["x5u"]["fetch"]["source"].startswith("static chain")


def test_sip_request_lf_line_ends_takes_from_and_to(pki: Any) -> None:
    ident = sign(pki)
    code, rep = inspect_json("-", "--trust-anchor", str(pki.root), "--cert", str(pki.sp_chain), input=sip_invite(ident))
    assert code == 0, rep["verdict"]
    assert rep["input"]["call_id"] == "inspect-1@a.example"
    assert rep["input"]["calling_tns"] == [ORIG] and DEST in rep["input"]["called_tns"]
    # spoofed From: the same verdict as verify with that calling number, and a fix
    code, rep = inspect_json("-", "--trust-anchor", str(pki.root), "--cert", str(pki.sp_chain), input=sip_invite(ident, frm="12155550000"))
    vcode, vres = verify_json(ident, "--trust-anchor", str(pki.root), "--cert", str(pki.sp_chain), "--orig", "12155550000", "--dest", DEST)
    assert code == vcode == 1
    assert (rep["verdict"]["verstat"], rep["verdict"]["sip_code"], rep["verdict"]["description"]) == \
           (vres["verstat"], vres["reasoncode"], vres["reasondesc"])
    assert "normalization" in rep["verdict"]["fix"]
    assert rep["passports"][0]["claims"]["orig"]["tn"] == ORIG  # still decoded for display


def test_stale_date_header_of_the_request(pki: Any) -> None:
    ident = sign(pki)
    old = "Sun, 01 Jan 2023 00:00:00 GMT"
    code, rep = inspect_json("-", "--trust-anchor", str(pki.root), "--cert", str(pki.sp_chain), input=sip_invite(ident, date=old))
    assert code == 1 and rep["verdict"]["sip_code"] == 403
    assert "NTP" in rep["verdict"]["fix"]


def test_verification_request_json(pki: Any) -> None:
    ident = sign(pki)
    body = json.dumps({"verificationRequest": {"from": {"tn": ORIG}, "to": {"tn": [DEST]}, "time": int(time.time()), "identity": ident}})
    code, rep = inspect_json(body, "--trust-anchor", str(pki.root), "--cert", str(pki.sp_chain))
    assert code == 0 and rep["input"]["source"] == "verificationRequest"
    r = cli("inspect", '{"verificationRequest": {"from": {"tn": "1"}}}', "--trust-anchor", str(pki.root))
    assert r.exit_code == 2 and "missing 'to'" in r.output and "Traceback" not in r.output


def test_tampered_signature_names_the_check_and_fix(pki: Any) -> None:
    ident = sign(pki)
    h, p, rest = ident.split(".", 2)
    claims = orjson.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["attest"] = "B"
    p2 = base64.urlsafe_b64encode(orjson.dumps(claims, option=orjson.OPT_SORT_KEYS)).rstrip(b"=").decode()
    bad = f"{h}.{p2}.{rest}"
    common = ("--trust-anchor", str(pki.root), "--cert", str(pki.sp_chain), "--orig", ORIG, "--dest", DEST)
    code, rep = inspect_json(bad, *common)
    vcode, vres = verify_json(bad, *common)
    assert code == vcode == 1 and rep["verdict"]["description"] == vres["reasondesc"]
    pp = rep["passports"][0]
    assert pp["signature"]["ok"] is False
    failed = [c for c in pp["checks"] if not c["ok"]]
    assert failed[-1]["check"] == "signature" and "key" in failed[-1]["fix"]


def test_x5u_fetch_record_and_ssrf_decision(pki: Any, tmp_path: Path) -> None:
    (tmp_path / "sp-chain.pem").write_bytes(pki.sp_chain.read_bytes())
    srv = FileServer(tmp_path)
    try:
        url = srv.url("sp-chain.pem")
        ident = sign(pki, x5u=url)
        code, rep = inspect_json(ident, "--trust-anchor", str(pki.root), "--orig", ORIG, "--dest", DEST,
                                 "--allow-http-x5u", "--allow-private-x5u")
        assert code == 0, rep["verdict"]
        x = rep["passports"][0]["x5u"]
        assert x["route"]["addresses"] == ["127.0.0.1"] and x["route"]["decision"].startswith("allowed")
        f = x["fetch"]
        assert f["source"] == "fetched" and f["status"] == 200 and f["certificates"] == 2 and f["seconds"] >= 0
        assert "last-modified" in f["cache_headers"]
        # the default policy refuses the private address: the SSRF decision and the verdict say so
        code, rep = inspect_json(ident, "--trust-anchor", str(pki.root), "--orig", ORIG, "--dest", DEST, "--allow-http-x5u")
        assert code == 1 and rep["verdict"]["sip_code"] == 436
        assert rep["passports"][0]["x5u"]["route"]["decision"].startswith("refused")
        vcode, vres = verify_json(ident, "--trust-anchor", str(pki.root), "--orig", ORIG, "--dest", DEST, "--allow-http-x5u")
        assert vres["reasondesc"] == rep["verdict"]["description"]
    finally:
        srv.close()


def test_unusable_input_is_one_line(pki: Any) -> None:
    r = cli("inspect", "", "--trust-anchor", str(pki.root))
    assert r.exit_code == 2 and "empty input" in r.output
    r = cli("inspect", "SIP/2.0 200 OK\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:a@b>;tag=1\nTo: <sip:c@d>\nCall-ID: x\nCSeq: 1 INVITE\n\n",
            "--trust-anchor", str(pki.root))
    assert r.exit_code == 2 and "response" in r.output
    r = cli("inspect", "x.y.z", "--trust-anchor", "/nonexistent/root.pem")
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_unreadable_at_file_is_one_line(pki: Any, tmp_path: Any) -> None:
    for name in (tmp_path / "missing.txt", tmp_path):
        r = cli("inspect", f"@{name}", "--trust-anchor", str(pki.root))
        assert r.exit_code == 2 and "cannot read" in r.output and "Traceback" not in r.output


def test_text_report_verdict_first(pki: Any) -> None:
    ident = sign(pki)
    r = cli("inspect", ident, "--trust-anchor", str(pki.root), "--cert", str(pki.sp_chain), "--orig", ORIG, "--dest", DEST)
    assert r.exit_code == 0
    first = r.stdout.splitlines()[0]
    assert first.startswith("TN-Validation-Passed")
    assert "TNAuthList" in r.stdout and "signature: PASS" in r.stdout
