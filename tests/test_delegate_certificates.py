"""Delegate certificates (RFC 9060, ATIS-1000092) through the CLI: an SP's delegate-issuing CA
issues an enterprise certificate for TNs/ranges inside its authority (refusing others); the
STI-AS signs with it; the STI-VS validates the chain through the SP certificate and checks the
orig TN against the delegate's TNAuthList (438 when outside)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from stirshaken.cli.main import app
from stirshaken.core import certificates as certs
from stirshaken.core.tnauthlist import TN, TNAuthList, TNRange, from_certificate


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return res.exit_code, res.output


def test_delegate_issue_sign_verify(tmp_path: Path) -> None:
    f = {n: str(tmp_path / n) for n in ("root.key", "root.pem", "ica.key", "ica.pem", "sp.key", "sp.pem", "ent.key", "ent.pem")}
    for k in ("root.key", "ica.key", "sp.key", "ent.key"):
        assert run("keygen", "--out", f[k])[0] == 0
    assert run("cert", "root", "--key", f["root.key"], "--out", f["root.pem"])[0] == 0
    assert run("cert", "intermediate", "--key", f["ica.key"], "--issuer-cert", f["root.pem"], "--issuer-key", f["root.key"],
               "--out", f["ica.pem"], "--path-length", "1", "--crl-url", "http://127.0.0.1:9/crl")[0] == 0
    code, text = run("cert", "sp", "--ca", "--key", f["sp.key"], "--spc", "1234", "--issuer-cert", f["ica.pem"],
                     "--issuer-key", f["ica.key"], "--out", f["sp.pem"], "--crl-url", "http://127.0.0.1:9/crl")
    assert code == 0, text
    # a TN outside the SP's authority is refused, nothing written
    code, text = run("cert", "delegate", "--issuer-cert", f["sp.pem"], "--issuer-key", f["sp.key"], "--key", f["ent.key"],
                     "--tn", "13105550000", "--authority", "1215555", "--out", f["ent.pem"])
    assert code == 2 and "TN 13105550000 is outside the issuer's authority" in text and not Path(f["ent.pem"]).exists(), text
    code, text = run("cert", "delegate", "--issuer-cert", f["sp.pem"], "--issuer-key", f["sp.key"], "--key", f["ent.key"],
                     "--tn", "12155551212", "--out", f["ent.pem"])
    assert code == 2 and "--authority" in text  # an SPC alone names no TNs
    code, text = run("cert", "delegate", "--issuer-cert", f["sp.pem"], "--issuer-key", f["sp.key"], "--key", f["ent.key"],
                     "--tn", "12155551212", "--range", "12155550000:100", "--authority", "1215555", "--crl-url", "http://127.0.0.1:9/crl",
                     "--out", f["ent.pem"])
    assert code == 0, text
    chain = f["ent.pem"] + ".chain"
    Path(chain).write_bytes(Path(f["ent.pem"]).read_bytes() + Path(f["ica.pem"]).read_bytes())
    leaf = certs.load_certificates(Path(f["ent.pem"]).read_bytes())[0]
    tn = from_certificate(leaf)
    assert tn is not None and tn[0] == TNAuthList((TN("12155551212"), TNRange("12155550000", 100)))
    code, text = run("profile", f["ent.pem"])
    assert "delegate certificate (RFC 9060): TN 12155551212, range 12155550000+100" in text, text

    def verify(orig: str) -> tuple[int, str]:
        code, ident = run("sign", "--key", f["ent.key"], "--x5u", "https://sp.example/ent.pem", "--attest", "A",
                          "--orig", orig, "--dest", "12155550199")
        assert code == 0, ident
        return run("verify", ident.strip().splitlines()[-1], "--cert", chain, "--trust-anchor", f["root.pem"],
                   "--orig", orig, "--dest", "12155550199")

    code, text = verify("12155551212")  # the single TN
    assert code == 0 and "TN-Validation-Passed" in text, text
    code, text = verify("12155550042")  # inside the range
    assert code == 0 and "TN-Validation-Passed" in text, text
    code, text = verify("12155550100")  # just past the range: 438, not authorized
    assert code != 0 and "438" in text and "delegate certificate does not cover calling number 12155550100" in text, text
