"""The ``stirshaken`` command line, run as a subprocess (.venv/bin/stirshaken)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stirshaken.core import certificates as C
from stirshaken.core.b64 import b64url_decode, b64url_encode
from stirshaken.core.keys import load_private_key
from stirshaken.core.passport import decode

BIN = Path(sys.executable).with_name("stirshaken")
X5U = "https://cr.example.net/sp-chain.pem"  # nothing is fetched: verify gets the chain with --cert
HTTP_X5U = "http://127.0.0.1:23001/sp-chain.pem"
CRL_URL = "http://127.0.0.1:23001/inter.crl"


def run(*args, cwd=None, ok=True, env=None, input=None):
    p = subprocess.run([str(BIN), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "COLUMNS": "200", **(env or {})}, input=input)
    if ok is True:
        assert p.returncode == 0, (args, p.stdout, p.stderr)
    elif ok is False:
        assert p.returncode != 0, (args, p.stdout, p.stderr)
    return p


@pytest.fixture(scope="module")
def cli_chain(tmp_path_factory):
    """root -> intermediate -> SP made by our own commands (the intermediate key is encrypted)."""
    d = tmp_path_factory.mktemp("clichain")
    run("keygen", "-o", d / "root.key", cwd=d)
    run("keygen", "-o", d / "inter.key", "--passphrase", "pw", cwd=d)
    run("keygen", "-o", d / "sp.key", cwd=d)
    run("cert", "root", "--key", d / "root.key", "-o", d / "root.pem")
    run("cert", "intermediate", "--key", d / "inter.key", "--passphrase", "pw", "--issuer-cert", d / "root.pem",
        "--issuer-key", d / "root.key", "-o", d / "inter.pem", "--crl-url", CRL_URL)
    run("csr", "--key", d / "sp.key", "--spc", "1234", "-o", d / "sp.csr")
    run("cert", "sp", "--csr", d / "sp.csr", "--issuer-cert", d / "inter.pem", "--issuer-key", d / "inter.key",
        "--passphrase", "pw", "-o", d / "sp-chain.pem", "--chain", "--crl-url", CRL_URL)
    return d


def test_help_lists_core_commands():
    out = run("--help").stdout
    for cmd in ("keygen", "csr", "cert", "sign", "decode", "verify"):
        assert cmd in out
    assert "root" in run("cert", "--help").stdout


def test_keygen_mode_and_passphrase(cli_chain):
    for name in ("root.key", "inter.key", "sp.key"):
        assert stat.S_IMODE((cli_chain / name).stat().st_mode) == 0o600
    assert (cli_chain / "inter.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert (cli_chain / "sp.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    load_private_key(cli_chain / "inter.key", "pw")
    p = run("cert", "root", "--key", cli_chain / "inter.key", "-o", cli_chain / "x.pem", ok=False)
    assert "passphrase" in p.stderr and "Traceback" not in p.stderr


def test_issued_chain_profile(cli_chain):
    chain = C.load_certificates((cli_chain / "sp-chain.pem").read_bytes())
    root = C.load_certificates((cli_chain / "root.pem").read_bytes())[0]
    assert len(chain) == 2 and chain[1].subject == C.load_certificates((cli_chain / "inter.pem").read_bytes())[0].subject
    for c in (root, *chain):
        assert C.check_profile(c) == []
    assert C.TrustStore([root]).validate(chain).spc == "1234"
    csr = C.load_csr((cli_chain / "sp.csr").read_bytes())
    assert C.csr_tnauthlist(csr).spc == "1234"
    for f in ("root.pem", "inter.pem", "sp-chain.pem"):
        assert "conforms" in run("profile", cli_chain / f).stdout


def test_profile_reports_deviations(tmp_path, cli_chain):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = load_private_key(cli_chain / "root.key")
    root = C.load_certificates((cli_chain / "root.pem").read_bytes())[0]
    # a "root" with a CRL DP and an EKU
    b = (x509.CertificateBuilder().subject_name(root.subject).issuer_name(root.subject).public_key(key.public_key())
         .serial_number(99).not_valid_before(root.not_valid_before_utc).not_valid_after(root.not_valid_after_utc)
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=False)
         .add_extension(C.issuance._crl_dp(CRL_URL, None), critical=False)
         .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    bad = b.sign(key, hashes.SHA256())
    (tmp_path / "bad.pem").write_bytes(C.pem([bad]))
    p = run("profile", tmp_path / "bad.pem", "--role", "root", "--json", ok=False)
    devs = json.loads(p.stdout)["deviations"]
    assert p.returncode == 1
    for rule in ("CM-02", "CM-07", "CM-08", "CM-12", "CM-14"):
        assert any(d.startswith(rule) for d in devs), (rule, devs)
    del ec


def test_sign_decode_verify(cli_chain):
    d = cli_chain
    p = run("sign", "--key", d / "sp.key", "--x5u", X5U, "--attest", "a", "--orig", "+1 (215) 555-1212",
            "--dest", "12155551213", "--dest", "tel:+1-215-555-1214", "--origid", "123e4567-e89b-12d3-a456-426655440000")
    identity = p.stdout.strip()
    token, params = identity.split(";", 1)
    assert params == f"info=<{X5U}>;alg=ES256;ppt=shaken"
    pp = decode(token)
    assert pp.orig_tn == "12155551212" and pp.dest_tns == ("12155551213", "12155551214") and pp.attest == "A"
    assert pp.origid == "123e4567-e89b-12d3-a456-426655440000" and abs(pp.iat - time.time()) < 30
    (d / "id.txt").write_text(identity + "\n")
    out = run("verify", f"@{d / 'id.txt'}", "--cert", d / "sp-chain.pem", "--trust-anchor", d / "root.pem",
              "--orig", "12155551212", "--dest", "12155551214").stdout
    assert "TN-Validation-Passed" in out and "attest=A" in out
    j = json.loads(run("verify", identity, "--cert", d / "sp-chain.pem", "--trust-anchor", d / "root.pem", "--json").stdout)
    assert j["verstat"] == "TN-Validation-Passed"
    # stdin
    assert "TN-Validation-Passed" in run("verify", "-", "--cert", d / "sp-chain.pem", "--trust-anchor", d / "root.pem", input=identity).stdout
    dj = json.loads(run("decode", identity, "--json").stdout)
    assert dj["claims"]["orig"] == {"tn": "12155551212"} and dj["params"]["ppt"] == "shaken"
    assert dj["failed"] is None and [c["check"] for c in dj["checks"]][:2] == ["identity-syntax", "passport-header"]
    assert any(s.startswith("signature and certificate") for s in dj["skipped"])
    # the same token judged a day later: stale, as verify would answer (403), exit 1
    late = run("decode", identity, "--json", "--at", str(int(time.time()) + 86400), ok=False)
    assert late.returncode == 1 and json.loads(late.stdout)["failed"]["code"] == 403
    # verify names the comparisons it could not make
    jv = json.loads(run("verify", identity, "--cert", d / "sp-chain.pem", "--trust-anchor", d / "root.pem", "--json").stdout)
    assert [s.split(":")[0] for s in jv["skipped"]] == ["orig-matches", "dest-matches"]
    jv = json.loads(run("verify", identity, "--cert", d / "sp-chain.pem", "--trust-anchor", d / "root.pem", "--json",
                        "--orig", "12155551212", "--dest", "12155551214").stdout)
    assert jv["skipped"] == [] and jv["verstat"] == "TN-Validation-Passed"
    assert "not checked: orig-matches" in run("verify", identity, "--cert", d / "sp-chain.pem", "--trust-anchor", d / "root.pem").stdout
    assert dj["problems"] == []
    # an http x5u is only signed when explicitly allowed, and decode names the problem
    lab = run("sign", "--key", d / "sp.key", "--x5u", HTTP_X5U, "--allow-http-x5u", "--allow-private-x5u", "--attest", "A",
              "--orig", "12155551212", "--dest", "12155551213").stdout.strip()
    assert json.loads(run("decode", lab, "--json").stdout)["problems"] == [
        "'x5u' is not an https URL (ATIS-1000074 §5.3.1: verifiers refuse it)"]
    token_only = run("sign", "--key", d / "sp.key", "--x5u", X5U, "--attest", "C", "--orig", "1", "--dest", "2", "--token").stdout.strip()
    assert ";" not in token_only and decode(token_only).attest == "C"


def test_sign_fixed_inputs_and_deterministic_flag(cli_chain):
    d = cli_chain
    args = ("sign", "--key", d / "sp.key", "--x5u", X5U, "--attest", "B", "--orig", "12155551212", "--dest", "12155551213",
            "--origid", "123e4567-e89b-12d3-a456-426655440000", "--iat", "1700000000")
    # default nonce (hedged): same header and claims, a new signature each time
    a, b = (run(*args).stdout.split(";", 1)[0] for _ in range(2))
    assert a.rsplit(".", 1)[0] == b.rsplit(".", 1)[0] and a != b
    # --deterministic (RFC 6979): byte for byte the same
    assert run(*args, "--deterministic").stdout == run(*args, "--deterministic").stdout


def test_verify_failures(cli_chain, tmp_path):
    d = cli_chain
    identity = run("sign", "--key", d / "sp.key", "--x5u", X5U, "--attest", "A", "--orig", "12155551212",
                   "--dest", "12155551213").stdout.strip()
    token, params = identity.split(";", 1)
    h, pl, s = token.split(".")
    claims = json.loads(b64url_decode(pl))
    claims["orig"]["tn"] = "12155550000"
    tampered = f"{h}.{b64url_encode(json.dumps(claims, separators=(',', ':'), sort_keys=True).encode())}.{s};{params}"
    base = ("--cert", d / "sp-chain.pem", "--trust-anchor", d / "root.pem")
    p = run("verify", tampered, *base, ok=False)
    assert p.returncode == 1 and "438" in p.stdout and "TN-Validation-Failed" in p.stdout
    p = run("verify", identity, *base, "--orig", "12155550000", ok=False)
    assert "438" in p.stdout
    stale = run("sign", "--key", d / "sp.key", "--x5u", X5U, "--attest", "A", "--orig", "1", "--dest", "2",
                "--iat", str(int(time.time()) - 600)).stdout.strip()
    assert "403" in run("verify", stale, *base, ok=False).stdout
    # untrusted anchor
    run("keygen", "-o", tmp_path / "other.key")
    run("cert", "root", "--key", tmp_path / "other.key", "-o", tmp_path / "other.pem")
    p = run("verify", identity, "--cert", d / "sp-chain.pem", "--trust-anchor", tmp_path / "other.pem", ok=False)
    assert "437" in p.stdout
    # revoked by CRL
    run("crl", "--issuer-cert", d / "inter.pem", "--issuer-key", d / "inter.key", "--passphrase", "pw",
        "--revoke", d / "sp-chain.pem", "-o", tmp_path / "inter.crl")
    p = run("verify", identity, *base, "--crl", tmp_path / "inter.crl", ok=False)
    assert "437" in p.stdout and "revoked" in p.stdout
    # garbage never gives a traceback
    for junk in ("garbage", "a.b.c;info=<x>", ""):
        p = run("verify", junk, *base, ok=False)
        assert "Traceback" not in p.stderr + p.stdout



def test_decode_vectors():
    from tests import _core_support as V
    bad = run("decode", V.SIGNALWIRE_BAD_PASSPORT, "--json", ok=False)
    assert bad.returncode == 1  # the claims fail the check verify makes: decode says so by its exit status
    j = json.loads(bad.stdout)
    assert j["claims"]["orig"] == '{"tn":"9005551212"}'
    assert any("'orig'" in pr for pr in j["problems"]) and j["failed"]["code"] == 438
    p = run("decode", "not-a-token", ok=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr


def test_bad_inputs_exit_cleanly(cli_chain, tmp_path):
    d = cli_chain
    for args in (
        ("sign", "--key", d / "sp.key", "--x5u", X5U, "--attest", "Z", "--orig", "1", "--dest", "2"),
        ("sign", "--key", d / "sp.key", "--x5u", X5U, "--attest", "A", "--orig", "abc", "--dest", "2"),
        ("sign", "--key", tmp_path / "nope.key", "--x5u", X5U, "--attest", "A", "--orig", "1", "--dest", "2"),
        ("csr", "--key", d / "sp.key", "-o", tmp_path / "x.csr"),
        ("cert", "sp", "--issuer-cert", d / "inter.pem", "--issuer-key", d / "root.key", "--key", d / "sp.key", "--spc", "1", "-o", tmp_path / "x"),
    ):
        p = run(*args, ok=False)
        assert "Traceback" not in p.stderr, args


def test_verify_trust_options(cli_chain, tmp_path):
    """--crl-signer: a CRL from that signer (not the chain's issuer) revokes; --ca-list needs --ca-list-trust;
    a bad trust file is one line naming the option."""
    d = cli_chain
    identity = run("sign", "--key", d / "sp.key", "--x5u", X5U, "--attest", "A", "--orig", "12155551212",
                   "--dest", "12155551213").stdout.strip()
    base = ("--cert", d / "sp-chain.pem", "--trust-anchor", d / "root.pem")
    run("keygen", "-o", tmp_path / "pa-crl.key")
    run("cert", "root", "--key", tmp_path / "pa-crl.key", "-o", tmp_path / "pa-crl.pem")
    run("crl", "--issuer-cert", tmp_path / "pa-crl.pem", "--issuer-key", tmp_path / "pa-crl.key",
        "--revoke", d / "sp-chain.pem", "-o", tmp_path / "pa.crl")
    # without the signer the CRL does not count for the chain; with it, the SP certificate is revoked
    assert "TN-Validation-Passed" in run("verify", identity, *base, "--crl", tmp_path / "pa.crl").stdout
    p = run("verify", identity, *base, "--crl", tmp_path / "pa.crl", "--crl-signer", tmp_path / "pa-crl.pem", ok=False)
    assert p.returncode == 1 and "437" in p.stdout and "revoked" in p.stdout
    p = run("verify", identity, *base, "--ca-list", tmp_path / "ca-list.jws", ok=False)
    assert p.returncode == 2 and "--ca-list-trust: required with ca_list" in p.stderr and "Traceback" not in p.stderr
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    p = run("verify", identity, *base, "--ca-list", tmp_path / "ca-list.jws", "--ca-list-trust", tmp_path / "bad.pem", ok=False)
    assert p.returncode == 2 and "--ca-list-trust:" in p.stderr and p.stderr.strip().count("\n") == 0, p.stderr
    p = run("verify", identity, *base, "--crl-signer", tmp_path / "absent.pem", ok=False)
    assert p.returncode == 2 and "--crl-signer:" in p.stderr and "Traceback" not in p.stderr
    p = run("verify", identity, "--cert", d / "sp-chain.pem", ok=False)
    assert p.returncode == 2 and "--trust-anchor or --ca-list" in p.stderr


def test_help_shows_table_names():
    """Help texts naming a configuration table keep it: ``[verification]`` is not rich markup."""
    assert "(default: as [verification].max_age)" in " ".join(run("verify", "--help").stdout.split())
    assert "(default: as [verification])" in " ".join(run("verify", "--help").stdout.split())
    assert "as [signing].deterministic" in " ".join(run("sign", "--help").stdout.split())
    assert "[inventory].database" in " ".join(run("tn", "lookup", "--help").stdout.split())


def test_inventory_config_error_is_one_plain_line(tmp_path):
    """``stirshaken tn --config`` with a bad [inventory] table: the option named as in ``serve``,
    no pydantic text or URL, and the table name not eaten as markup."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[inventory]\ndatabase = 5\n")
    p = run("tn", "lookup", "12155551212", "--config", cfg, ok=False)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [f"error: {cfg}: [inventory].database: must be a string, got 5"]
    p = run("tn", "lookup", "12155551212", "--config", tmp_path / "missing.toml", ok=False)
    assert p.stderr.strip() == f"error: cannot read {tmp_path / 'missing.toml'}: No such file or directory"


def test_verify_says_when_revocation_is_not_established(cli_chain):
    """Both certificates name a CRL distribution point; with --cert nothing is fetched, so their
    revocation status is unknown: a warning check (soft, exit 0) or 437 with --crl-policy hard."""
    d = cli_chain
    identity = run("sign", "--key", d / "sp.key", "--x5u", X5U, "--attest", "A", "--orig", "12155551212",
                   "--dest", "12155551213").stdout.strip()
    base = ("--cert", d / "sp-chain.pem", "--trust-anchor", d / "root.pem", "--orig", "12155551212", "--dest", "12155551213")
    why = f"its CRL {CRL_URL} is not configured and distribution points are not fetched"
    doc = json.loads(run("verify", identity, *base, "--json").stdout)
    assert doc["verstat"] == "TN-Validation-Passed"
    warnings = [c["detail"] for c in doc["passports"][0]["checks"] if c["check"] == "warning"]
    assert warnings == [f"revocation status of CN=SHAKEN 1234 unknown: {why}", f"revocation status of CN=SHAKEN Intermediate CA unknown: {why}"], warnings
    text = run("verify", identity, *base).stdout
    assert f"warning: revocation status of CN=SHAKEN 1234 unknown: {why}" in " ".join(text.split())
    p = run("verify", identity, *base, "--crl-policy", "hard", ok=False)
    assert p.returncode == 1 and "437" in p.stdout and "revocation status cannot be established (crl_policy hard)" in p.stdout
    p = run("verify", identity, *base, "--crl-policy", "bogus", ok=False)
    assert p.returncode == 2 and "--crl-policy: must be 'soft' or 'hard', got 'bogus'" in p.stderr and "Traceback" not in p.stderr


# --- issue 12: sign refuses what verify would refuse; div PASSporTs ---------------------------


@pytest.mark.parametrize("change,line", [
    (("--x5u", "http://cr.example.net/sp.pem"),
     "error: --x5u: x5u http://cr.example.net/sp.pem refused: not https (ATIS-1000074 §5.3.1; allow with --allow-http-x5u / [signing].allow_http_x5u)"),
    (("--x5u", "https://10.1.2.3/sp.pem"),
     "error: --x5u: x5u https://10.1.2.3/sp.pem refused: host 10.1.2.3 is a private, loopback or reserved address (allow with --allow-private-x5u / [signing].allow_private_x5u, lab only)"),
    (("--x5u", "https://cr.example.net/sp.pem?v=2"), "error: --x5u: x5u https://cr.example.net/sp.pem?v=2 refused: the URL must not contain a query component"),
    (("--attest", "D"), "error: --attest: 'attest' must be A, B or C, not 'D'"),
    (("--origid", "42"), "error: --origid: 'origid' must be a UUID (RFC 8588 §5), not '42'"),
    (("--orig", "1215555121212121212"), "error: --orig: '1215555121212121212'... has 19 digits; a telephone number has at most 15"),
    (("--dest", "bob"), "error: --dest: 'bob' is not a telephone number"),
    (("--country-code", "+1"), "error: --country-code: '+1' is not digits"),
    (("--div", "12155551213"), "error: --div: only with --ppt div"),
    (("--ppt", "rcdx"), "error: --ppt: 'rcdx' is not shaken, div or rcd"),
])
def test_sign_refuses_what_verify_refuses(cli_chain, change, line):
    d = cli_chain
    args = {"--key": d / "sp.key", "--x5u": X5U, "--attest": "A", "--orig": "12155551212", "--dest": "12155551213"}
    args[change[0]] = change[1]
    p = run("sign", *[x for kv in args.items() for x in kv], ok=False)
    assert p.returncode == 2 and p.stderr.strip() == line and p.stdout == "", p.stderr


def test_sign_national_number_and_country_code(cli_chain):
    d = cli_chain
    base = ("sign", "--key", d / "sp.key", "--x5u", X5U, "--attest", "A", "--dest", "12155551213", "--token")
    p = run(*base, "--orig", "(215) 555-1212")
    assert decode(p.stdout.strip()).orig_tn == "2155551212"
    assert p.stderr.strip() == ("warning: --orig: 2155551212 looks like a national number (10 digits, no country code): signed as"
                                " given, not in E.164 form (RFC 8224 §8.3); --country-code completes it")
    p = run(*base, "--orig", "(215) 555-1212", "--country-code", "1")
    assert decode(p.stdout.strip()).orig_tn == "12155551212" and p.stderr == ""
    p = run(*base, "--orig", "sip:%2B1-215-555-1212@example.net")  # the one uri_user: %2B and separators
    assert decode(p.stdout.strip()).orig_tn == "12155551212" and p.stderr == ""


def test_sign_div_and_verify_the_diverted_call(cli_chain):
    """sign --ppt div (RFC 8946): claims orig, dest (new target), div, iat; verify accepts the
    SHAKEN + div pair for the new target, and not the SHAKEN one alone."""
    d = cli_chain
    key = ("--key", d / "sp.key", "--x5u", X5U)
    shaken = run("sign", *key, "--attest", "A", "--orig", "12155551212", "--dest", "12155551213").stdout.strip()
    div = run("sign", "--ppt", "div", *key, "--orig", "12155551212", "--div", "+1 215 555 1213", "--dest", "12155559999").stdout.strip()
    token, params = div.split(";", 1)
    assert params == f"info=<{X5U}>;alg=ES256;ppt=div"
    p = decode(token, ppt="div")
    assert set(p.claims) == {"dest", "div", "iat", "orig"}
    assert (p.orig_tn, p.dest_tns, p.div_tn) == ("12155551212", ("12155559999",), "12155551213")
    base = ("--cert", d / "sp-chain.pem", "--trust-anchor", d / "root.pem", "--orig", "12155551212", "--dest", "12155559999")
    out = run("verify", f"{shaken}, {div}", *base).stdout
    assert "TN-Validation-Passed" in out and "attest=A" in out
    assert "438" in run("verify", shaken, *base, ok=False).stdout
    for extra, line in ((("--attest", "A"), "error: --attest: not a claim of a div PASSporT (RFC 8946 §3; only SHAKEN PASSporTs carry it)"),
                        (("--origid", "123e4567-e89b-12d3-a456-426655440000"),
                         "error: --origid: not a claim of a div PASSporT (RFC 8946 §3; only SHAKEN PASSporTs carry it)"),
                        ((), "error: --div is required with --ppt div: the number the call was diverted from")):
        p = run("sign", "--ppt", "div", *key, "--orig", "12155551212", "--dest", "12155559999", *extra, ok=False)
        assert p.returncode == 2 and p.stderr.strip() == line, p.stderr
    p = run("sign", "--ppt", "div", *key, "--orig", "12155551212", "--div", "12155559999", "--dest", "12155559999", ok=False)
    assert p.stderr.strip().startswith("error: --dest: the new destination 12155559999 equals the 'div'")


def test_sign_rcd_and_verify_rich_call_data(cli_chain, tmp_path):
    """sign --ppt rcd (RFC 9795) with --nam, --jcd @FILE and --icn/--icn-content: rcd and rcdi
    claims; verify fetches the icon from a loopback server and shows the rich call data passed;
    a tampered icon fails the rcd PASSporT with one line while the call stays TN-Validation-Passed."""
    from stirshaken.core.rcd import integrity, jcs
    from tests.test_vs_support import Repo, ThreadedRepo

    d = cli_chain
    logo = b"\x89PNG\r\n\x1a\n" + b"icon" * 300
    (tmp_path / "logo.png").write_bytes(logo)
    jcard = ["vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", "Example Bank"]]]
    (tmp_path / "card.json").write_text(json.dumps(jcard, indent=2))
    repo = Repo()
    repo.files["logo.png"] = (logo, "image/png")
    served = ThreadedRepo(repo)
    try:
        icn = repo.url("/files/logo.png")
        key = ("--key", d / "sp.key", "--x5u", X5U)
        shaken = run("sign", *key, "--attest", "A", "--orig", "12155551212", "--dest", "12155551213").stdout.strip()
        rcd = run("sign", "--ppt", "rcd", *key, "--orig", "12155551212", "--dest", "12155551213", "--nam", "Example Bank",
                  "--jcd", f"@{tmp_path / 'card.json'}", "--icn", icn, "--icn-content", tmp_path / "logo.png",
                  "--crn", "Statement ready", "--allow-http-x5u", "--allow-private-x5u").stdout.strip()
        token, params = rcd.split(";", 1)
        assert params == f"info=<{X5U}>;alg=ES256;ppt=rcd"
        p = decode(token, ppt="rcd")
        assert set(p.claims) == {"crn", "dest", "iat", "orig", "rcd", "rcdi"}
        assert p.claims["rcd"] == {"nam": "Example Bank", "jcd": jcard, "icn": icn}
        assert p.claims["rcdi"] == {"/jcd": integrity(jcs(jcard)), "/icn": integrity(logo)}
        base = ("--cert", d / "sp-chain.pem", "--trust-anchor", d / "root.pem", "--orig", "12155551212", "--dest", "12155551213",
                "--allow-http-x5u", "--allow-private-x5u")
        out = run("verify", f"{shaken}, {rcd}", *base).stdout
        assert "TN-Validation-Passed attest=A" in out
        assert f'rcd (rcd PASSporT) passed: nam="Example Bank" icn="{icn}" jcd=(jCard); rcdi /icn, /jcd match' in out, out
        repo.files["logo.png"] = (logo[:-1], "image/png")
        v = run("verify", f"{shaken}, {rcd}", *base)
        assert v.returncode == 0 and "TN-Validation-Passed attest=A" in v.stdout
        assert f"rcd (rcd PASSporT) failed: nam=\"Example Bank\" icn=\"{icn}\" jcd=(jCard); rcdi /icn digest does not match the content at {icn} (RFC 9795)" in v.stdout, v.stdout
        doc = json.loads(run("verify", f"{shaken}, {rcd}", *base, "--json").stdout)
        assert doc["verstat"] == "TN-Validation-Passed" and doc["rcd"][0]["ok"] is False
    finally:
        served.stop()
    # inputs the verifier would refuse, each one line
    args = ("sign", "--ppt", "rcd", *key, "--orig", "12155551212", "--dest", "12155551213")
    for extra, line in (
        (("--icn", "https://rcd.example.net/logo.png"),
         "error: --icn needs exactly one of --icn-content FILE (the content it serves) or --icn-digest sha256-BASE64"),
        (("--icn", "http://rcd.example.net/logo.png", "--icn-digest", integrity(b"x")),
         "error: --icn http://rcd.example.net/logo.png refused: not https (ATIS-1000074 §5.3.1; allow with --allow-http-x5u / [signing].allow_http_x5u)"),
        (("--icn", "https://rcd.example.net/logo.png", "--icn-digest", "md5-abc"),
         "error: --ppt rcd: digest for /icn 'md5-abc' is not an integrity string (sha256-BASE64)"),
        (("--jcd", "[1.5]",), "error: --ppt rcd: jcd/0: a fractional number is not canonicalized here (RFC 8785)"),
        (("--jcd", "{oops",), "error: --jcd: not JSON at line 1 column 2 (a jCard array, or @FILE)"),
        ((), "error: --ppt rcd: rich call data needs at least one of nam, jcd, jcl, icn (RFC 9795)"),
        (("--nam", "A", "--attest", "A"), "error: --attest: not a claim of an rcd PASSporT (RFC 9795; the call's SHAKEN PASSporT carries it)"),
    ):
        p = run(*args, *extra, ok=False)
        assert p.returncode == 2 and p.stderr.strip() == line, p.stderr
    p = run("sign", *key, "--attest", "A", "--orig", "12155551212", "--dest", "12155551213", "--nam", "A", ok=False)
    assert p.stderr.strip() == "error: --nam: only with --ppt rcd (rich call data is signed as its own PASSporT, RFC 9795)"


def test_sign_lab_x5u_is_signed_with_a_warning(cli_chain):
    """A loopback x5u (a lab: no other host can fetch it) is signed, with one warning line naming
    the option that silences it; the same URL on another host is refused (test above)."""
    d = cli_chain
    p = run("sign", "--key", d / "sp.key", "--x5u", "http://127.0.0.1:8080/sp.pem", "--attest", "A", "--orig", "12155551212",
            "--dest", "12155551213")
    assert p.stdout.strip().endswith(";info=<http://127.0.0.1:8080/sp.pem>;alg=ES256;ppt=shaken")
    assert p.stderr.strip() == ("warning: --x5u: x5u http://127.0.0.1:8080/sp.pem refused: not https (ATIS-1000074 §5.3.1; allow with "
                                "--allow-http-x5u / [signing].allow_http_x5u); signed anyway, as a loopback x5u is a lab set-up no "
                                "other host can fetch")
