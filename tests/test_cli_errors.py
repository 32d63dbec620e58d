"""Every user-facing error of the command line is one specific line (issue 13 item 7).

Each case runs the command line (typer's runner in this process, in a narrow terminal so that
any wrapping would show; a sample of the cases also through the installed ``stirshaken`` program
as a subprocess) with one bad input: a missing file, a directory for a file, an empty or
garbage file, a PEM of the wrong kind, a bad URL, a closed port, a web server that is no ACME
directory, a bad TOML file, a bad database URL, a bad option value.  The error must be exactly
one line on stderr starting with ``error:``, with a non-zero exit status, no traceback, the file
named when a file is at fault, no SIP code (the input is not a call), nothing cut inside a word,
and the specific phrase of the case.

A second test walks every command of the typer application and checks that each option and
argument has a help text and that each command's help carries an example.
"""

from __future__ import annotations

import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Iterator

import pytest
import typer.main
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from stirshaken.cli import app
from stirshaken.core import certificates as C
from stirshaken.core.keys import generate_private_key, private_key_pem, public_key_pem
from stirshaken.core.passport import Signer
from stirshaken.core.tnauthlist import TNAuthList

BIN = Path(sys.executable).with_name("stirshaken")
SIP_CODE = re.compile(r"\b(403|428|436|437|438)\b")
CUT = re.compile(r"\w(\.\.\.|…)|(\.\.\.|…)\w")


def run(*args: Any, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real program as a subprocess."""
    return subprocess.run([str(BIN), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=90,
                          env={**os.environ, "COLUMNS": "40", **(env or {})})


def invoke(*args: Any, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The same command line in this process (typer's runner): an exception that escapes the
    command is reported as the traceback the program would print."""
    res = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "40", **(env or {})})
    stderr = res.stderr
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(res.exception))
    return subprocess.CompletedProcess(args, res.exit_code, res.stdout, stderr)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small PKI and a set of bad files, written with the library (the CLI is what is tested)."""
    d = tmp_path_factory.mktemp("clierr")
    rk, ik, sk = generate_private_key(), generate_private_key(), generate_private_key()
    root = C.create_root(rk)
    inter = C.create_intermediate(ik, root, rk, crl_url="https://pa.example.net/crl")
    sp = C.create_sp_certificate(sk, inter, ik, spc="1234", crl_url="https://pa.example.net/crl")
    out = {
        "root.key": private_key_pem(rk), "inter.key": private_key_pem(ik), "sp.key": private_key_pem(sk), "sp.pub": public_key_pem(sk),
        "root.pem": C.pem([root]), "inter.pem": C.pem([inter]), "sp-chain.pem": C.pem([sp, inter]),
        "sp.csr": C.build_csr(sk, tnauthlist=TNAuthList.for_spc("1234")).public_bytes(serialization.Encoding.PEM),
        "inter.crl": C.create_crl(inter, ik, []).public_bytes(serialization.Encoding.PEM),
        "empty.pem": b"", "garbage.bin": bytes(range(256)) * 3, "text.txt": b"hello, world\n",
        "bad.toml": b"[pa\nport = 1\n", "bad-section.toml": b"pa = 5\n",
    }
    paths = {}
    for name, data in out.items():
        (d / name).write_bytes(data)
        paths[name] = d / name
    (d / "adir").mkdir()
    paths["adir"] = d / "adir"
    paths["missing.pem"] = d / "missing.pem"
    paths["dir"] = d
    return paths


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    """A real loopback web server that is no ACME directory (an HTML page, 501 for POST)."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b"<html><body>It works</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


def check_line(p: subprocess.CompletedProcess[str], phrase: str, at_fault: Path | str | None = None, *, code: int | None = None) -> str:
    """The one error line of ``p``, checked as the module docstring says."""
    line = p.stderr.strip()
    assert p.returncode != 0, (p.stdout, p.stderr)
    if code is not None:
        assert p.returncode == code, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    assert line.count("\n") == 0 and line.startswith("error: "), p.stderr
    assert phrase in line, (phrase, line)
    rest = line
    if at_fault is not None:
        assert str(at_fault) in line, (at_fault, line)
        rest = line.replace(str(at_fault), "FILE")
    assert not SIP_CODE.search(rest), line
    assert not CUT.search(rest), line
    return line


def ACME(directory: str, pa: str, state: Path, *extra: Any) -> tuple[Any, ...]:  # noqa: N802
    return ("acme", "--directory", directory, "--pa-url", pa, "--ocn", "1234", "--user", "sp-1234", "--password", "pw",
            "--state-dir", state, *extra)


# (case id, arguments given the files, the phrase, the file at fault or None, the exit status)
CASES: list[tuple[str, Any, str, Any, int]] = [
    # keys, CSRs and certificates: every wrong kind of file named for what it is
    ("keygen-out-dir", lambda f: ("keygen", "--out", f["adir"]), "Is a directory", "adir", 2),
    ("csr-key-missing", lambda f: ("csr", "--key", f["missing.pem"], "--spc", "1234", "-o", f["dir"] / "x.csr"), "No such file", "missing.pem", 2),
    ("csr-key-dir", lambda f: ("csr", "--key", f["adir"], "--spc", "1234", "-o", f["dir"] / "x.csr"), "Is a directory", "adir", 2),
    ("csr-key-empty", lambda f: ("csr", "--key", f["empty.pem"], "--spc", "1234", "-o", f["dir"] / "x.csr"), "empty, not a private key", "empty.pem", 2),
    ("csr-key-garbage", lambda f: ("csr", "--key", f["garbage.bin"], "--spc", "1234", "-o", f["dir"] / "x.csr"), "not a PEM private key", "garbage.bin", 2),
    ("csr-key-is-cert", lambda f: ("csr", "--key", f["root.pem"], "--spc", "1234", "-o", f["dir"] / "x.csr"), "a certificate, not a private key", "root.pem", 2),
    ("csr-key-is-crl", lambda f: ("csr", "--key", f["inter.crl"], "--spc", "1234", "-o", f["dir"] / "x.csr"), "a CRL, not a private key", "inter.crl", 2),
    ("csr-key-is-csr", lambda f: ("csr", "--key", f["sp.csr"], "--spc", "1234", "-o", f["dir"] / "x.csr"), "a CSR, not a private key", "sp.csr", 2),
    ("csr-key-is-public", lambda f: ("csr", "--key", f["sp.pub"], "--spc", "1234", "-o", f["dir"] / "x.csr"), "a public key, not a private key", "sp.pub", 2),
    ("csr-bad-range", lambda f: ("csr", "--key", f["sp.key"], "--range", "1215+x", "-o", f["dir"] / "x.csr"), "--range '1215+x': give START+COUNT", None, 2),
    ("csr-bad-tn", lambda f: ("csr", "--key", f["sp.key"], "--tn", "abc", "-o", f["dir"] / "x.csr"), "--tn: 'abc' is not a telephone number", None, 2),
    ("csr-out-dir", lambda f: ("csr", "--key", f["sp.key"], "--spc", "1234", "-o", f["adir"]), "cannot write", "adir", 2),
    ("cert-root-days", lambda f: ("cert", "root", "--key", f["root.key"], "-o", f["dir"] / "x.pem", "--days", "-5"), "--days: must be at least 1, got -5", None, 2),
    ("cert-root-country", lambda f: ("cert", "root", "--key", f["root.key"], "-o", f["dir"] / "x.pem", "--country", "USA"), "--country: must be a two-letter country code", None, 2),
    ("cert-issuer-empty", lambda f: ("cert", "intermediate", "--key", f["inter.key"], "--issuer-cert", f["empty.pem"], "--issuer-key", f["root.key"],
                                     "-o", f["dir"] / "x.pem"), "empty, not a certificate", "empty.pem", 2),
    ("cert-issuer-garbage", lambda f: ("cert", "intermediate", "--key", f["inter.key"], "--issuer-cert", f["garbage.bin"], "--issuer-key", f["root.key"],
                                       "-o", f["dir"] / "x.pem"), "not a valid certificate", "garbage.bin", 2),
    ("cert-issuer-is-key", lambda f: ("cert", "intermediate", "--key", f["inter.key"], "--issuer-cert", f["root.key"], "--issuer-key", f["root.key"],
                                      "-o", f["dir"] / "x.pem"), "a private key, not a certificate", "root.key", 2),
    ("cert-issuer-is-csr", lambda f: ("cert", "intermediate", "--key", f["inter.key"], "--issuer-cert", f["sp.csr"], "--issuer-key", f["root.key"],
                                      "-o", f["dir"] / "x.pem"), "a CSR, not a certificate", "sp.csr", 2),
    ("cert-issuer-key-mismatch", lambda f: ("cert", "intermediate", "--key", f["inter.key"], "--issuer-cert", f["root.pem"], "--issuer-key", f["sp.key"],
                                            "-o", f["dir"] / "x.pem"), "the issuer key does not match the issuer certificate", None, 2),
    ("cert-path-length", lambda f: ("cert", "intermediate", "--key", f["inter.key"], "--issuer-cert", f["root.pem"], "--issuer-key", f["root.key"],
                                    "-o", f["dir"] / "x.pem", "--path-length", "-1"), "--path-length: must be at least 0", None, 2),
    ("cert-crl-url", lambda f: ("cert", "intermediate", "--key", f["inter.key"], "--issuer-cert", f["root.pem"], "--issuer-key", f["root.key"],
                                "-o", f["dir"] / "x.pem", "--crl-url", "pa.example.net/crl"), "--crl-url: not an http(s) URL", None, 2),
    ("cert-sp-csr-and-key", lambda f: ("cert", "sp", "--csr", f["sp.csr"], "--key", f["sp.key"], "--issuer-cert", f["inter.pem"],
                                       "--issuer-key", f["inter.key"], "-o", f["dir"] / "x.pem"), "give --csr or --key, not both", None, 2),
    ("cert-sp-csr-is-cert", lambda f: ("cert", "sp", "--csr", f["root.pem"], "--issuer-cert", f["inter.pem"], "--issuer-key", f["inter.key"],
                                       "-o", f["dir"] / "x.pem"), "a certificate, not a CSR", "root.pem", 2),
    ("cert-sp-csr-garbage", lambda f: ("cert", "sp", "--csr", f["garbage.bin"], "--issuer-cert", f["inter.pem"], "--issuer-key", f["inter.key"],
                                       "-o", f["dir"] / "x.pem"), "not a valid CSR: malformed DER", "garbage.bin", 2),
    ("crl-revoke-is-key", lambda f: ("crl", "--issuer-cert", f["inter.pem"], "--issuer-key", f["inter.key"], "-o", f["dir"] / "x.crl",
                                     "--revoke", f["sp.key"]), "a private key, not a certificate", "sp.key", 2),
    ("profile-missing", lambda f: ("profile", f["missing.pem"]), "No such file", "missing.pem", 2),
    ("profile-dir", lambda f: ("profile", f["adir"]), "Is a directory", "adir", 2),
    ("profile-text", lambda f: ("profile", f["text.txt"]), "text without a PEM block, not a certificate", "text.txt", 2),
    ("profile-crl", lambda f: ("profile", f["inter.crl"]), "a CRL, not a certificate", "inter.crl", 2),
    ("profile-role", lambda f: ("profile", f["root.pem"], "--role", "bogus"), "--role: must be root, intermediate or sp, got bogus", None, 2),
    # signing: bad option values, no SIP code (signing is not a call's verification)
    ("sign-key-is-cert", lambda f: ("sign", "--key", f["root.pem"], "--x5u", "https://cr.example.net/sp.pem", "--attest", "A",
                                    "--orig", "12155551212", "--dest", "12155551213"), "a certificate, not a private key", "root.pem", 2),
    ("sign-x5u-not-url", lambda f: ("sign", "--key", f["sp.key"], "--x5u", "cr.example.net/sp.pem", "--attest", "A",
                                    "--orig", "12155551212", "--dest", "12155551213"), "--x5u: not an http(s) URL", None, 2),
    ("sign-attest", lambda f: ("sign", "--key", f["sp.key"], "--x5u", "https://cr.example.net/sp.pem", "--attest", "Q",
                               "--orig", "12155551212", "--dest", "12155551213"), "must be A, B or C", None, 2),
    ("sign-orig", lambda f: ("sign", "--key", f["sp.key"], "--x5u", "https://cr.example.net/sp.pem", "--attest", "A",
                             "--orig", "abc", "--dest", "12155551213"), "--orig: 'abc' is not a telephone number", None, 2),
    # usage errors of the option parser: one line naming the option
    ("usage-missing-option", lambda f: ("sign", "--key", f["sp.key"]), "missing option --x5u", None, 2),
    ("usage-not-integer", lambda f: ("verify", "x", "--trust-anchor", f["root.pem"], "--max-age", "abc"), "--max-age: must be an integer, got abc", None, 2),
    ("usage-unknown-option", lambda f: ("keygen", "--bogus"), "no such option: --bogus", None, 2),
    ("usage-unknown-command", lambda f: ("nosuch",), "no such command 'nosuch'", None, 2),
    ("usage-missing-argument", lambda f: ("profile",), "missing argument", None, 2),
    ("usage-range", lambda f: ("audit", f["text.txt"], "--trust-anchor", f["root.pem"], "--jobs", "0"), "--jobs: must be at least 1, got 0", None, 2),
    # verification inputs: the option and the file named
    ("verify-identity-missing", lambda f: ("verify", f"@{f['missing.pem']}", "--trust-anchor", f["root.pem"]), "cannot read identity file", "missing.pem", 2),
    ("verify-anchor-missing", lambda f: ("verify", "x", "--trust-anchor", f["missing.pem"]), "--trust-anchor:", "missing.pem", 2),
    ("verify-anchor-empty-dir", lambda f: ("verify", "x", "--trust-anchor", f["adir"]), "holds no certificate", "adir", 2),
    ("verify-anchor-is-key", lambda f: ("verify", "x", "--trust-anchor", f["sp.key"]), "--trust-anchor: ", "sp.key", 2),
    ("verify-crl-is-cert", lambda f: ("verify", "x", "--trust-anchor", f["root.pem"], "--crl", f["root.pem"]), "--crl: ", "root.pem", 2),
    ("verify-crl-empty", lambda f: ("verify", "x", "--trust-anchor", f["root.pem"], "--crl", f["empty.pem"]), "empty, not a CRL", "empty.pem", 2),
    ("verify-crl-garbage", lambda f: ("verify", "x", "--trust-anchor", f["root.pem"], "--crl", f["garbage.bin"]), "not a valid CRL", "garbage.bin", 2),
    ("verify-crl-scheme", lambda f: ("verify", "x", "--trust-anchor", f["root.pem"], "--crl", "ftp://pa.example.net/crl"),
     "--crl: 'ftp://pa.example.net/crl' is neither a file nor an http(s) URL", None, 2),
    ("verify-cert-is-csr", lambda f: ("verify", "x", "--trust-anchor", f["root.pem"], "--cert", f["sp.csr"]), "a CSR, not a certificate", "sp.csr", 2),
    ("verify-x5u-bundle", lambda f: ("verify", "x", "--trust-anchor", f["root.pem"], "--x5u-ca-bundle", f["text.txt"]),
     "--x5u-ca-bundle: ", "text.txt", 2),
    ("verify-max-age", lambda f: ("verify", "x", "--trust-anchor", f["root.pem"], "--max-age", "0"), "--max-age: must be at least 1, got 0", None, 2),
    ("inspect-garbage-json", lambda f: ("inspect", '{"verificationRequest": ', "--trust-anchor", f["root.pem"]), "JSON input does not parse", None, 2),
    ("audit-missing", lambda f: ("audit", f["missing.pem"], "--trust-anchor", f["root.pem"]), "cannot read", "missing.pem", 2),
    # services: configuration files, state directories, ports, TLS files, databases
    ("serve-config-missing", lambda f: ("serve", "--config", f["missing.pem"]), "cannot read configuration", "missing.pem", 2),
    ("serve-config-bad-toml", lambda f: ("serve", "--config", f["bad.toml"]), "invalid TOML", "bad.toml", 2),
    ("serve-config-garbage", lambda f: ("serve", "--config", f["garbage.bin"]), "not UTF-8 text", "garbage.bin", 2),
    ("pa-config-bad-toml", lambda f: ("pa", "serve", "--config", f["bad.toml"]), "invalid TOML", "bad.toml", 2),
    ("pa-config-section", lambda f: ("pa", "serve", "--config", f["bad-section.toml"]), "[pa] must be a table", "bad-section.toml", 2),
    ("pa-state-dir-file", lambda f: ("pa", "serve", "--state-dir", f["text.txt"]), "--state-dir", "text.txt", 2),
    ("pa-port", lambda f: ("pa", "serve", "--state-dir", f["dir"] / "pa", "--port", "99999"), "--port: must be at most 65535", None, 2),
    ("pa-tls-key-is-cert", lambda f: ("pa", "serve", "--state-dir", f["dir"] / "pa", "--tls-cert", f["root.pem"], "--tls-key", f["root.pem"]),
     "a certificate, not a private key", "root.pem", 2),
    ("pa-tls-key-mismatch", lambda f: ("pa", "serve", "--state-dir", f["dir"] / "pa", "--tls-cert", f["root.pem"], "--tls-key", f["sp.key"]),
     "does not match", "sp.key", 2),
    ("pa-trusted-ca-is-key", lambda f: ("pa", "serve", "--state-dir", f["dir"] / "pa", "--trusted-ca", f["sp.key"]), "a private key, not a certificate", "sp.key", 2),
    ("pa-db-url", lambda f: ("pa", "add-account", "bob", "--password", "pw", "--state-dir", f["dir"] / "pa", "--db-url", "bogus://x"),
     "unknown database kind 'bogus'", None, 2),
    ("pa-ocn", lambda f: ("pa", "add-account", "bob", "--password", "pw", "--state-dir", f["dir"] / "pa", "--ocn", "12-34"), "--ocn '12-34'", None, 2),
    ("ca-pa-url", lambda f: ("ca", "serve", "--state-dir", f["dir"] / "ca", "--pa-url", "pa.example.net", "--pa-root", f["root.pem"]),
     "--pa-url 'pa.example.net': not an http(s) URL", None, 2),
    ("ca-pa-root-is-crl", lambda f: ("ca", "serve", "--state-dir", f["dir"] / "ca", "--pa-url", "https://127.0.0.1:1", "--pa-root", f["inter.crl"]),
     "a CRL, not a certificate", "inter.crl", 2),
    ("cr-upload-token", lambda f: ("cr", "serve", "--state-dir", f["dir"] / "cr", "--upload-token", "abc="), "--upload-token 'abc=': give TOKEN=OWNER", None, 2),
    ("pki-tls-out-file", lambda f: ("pki", "tls", "--out", f["text.txt"]), "not a directory", "text.txt", 2),
    ("testbed-port", lambda f: ("testbed", "--pa-port", "70000"), "--pa-port: must be at most 65535", None, 2),
    ("tn-db-url", lambda f: ("tn", "lookup", "12155551212", "--db", "bogus://x"), "unknown database kind 'bogus'", None, 2),
    ("tn-db-dir", lambda f: ("tn", "lookup", "12155551212", "--db", f["adir"] / "sub" / "x.db"), "unable to open database file", None, 2),
    ("tn-config-bad-toml", lambda f: ("tn", "lookup", "12155551212", "--config", f["bad.toml"]), "invalid TOML", "bad.toml", 2),
    ("tn-import-garbage", lambda f: ("tn", "import", f["garbage.bin"], "--db", f["dir"] / "inv.db"), "a binary file, not CSV text", "garbage.bin", 2),
    ("dno-import-missing", lambda f: ("dno", "import", f["missing.pem"], "--source", "s", "--db", f["dir"] / "inv.db"), "cannot read", "missing.pem", 2),
    ("dno-limit", lambda f: ("dno", "list", "--limit", "0", "--db", f["dir"] / "inv.db"), "--limit: must be at least 1", None, 2),
    # acme: URLs, directories, the service at the other end
    ("acme-directory-not-url", lambda f: ACME("ca.example.net", "https://pa.example.net", f["dir"] / "sp"), "--directory 'ca.example.net': not an http(s) URL", None, 2),
    ("acme-ocn", lambda f: ("acme", "--directory", "https://ca.example.net/dir", "--pa-url", "https://pa.example.net", "--ocn", "bad ocn",
                            "--user", "u", "--password", "pw", "--state-dir", f["dir"] / "sp"), "--ocn 'bad ocn'", None, 2),
    ("acme-state-dir-file", lambda f: ACME("https://ca.example.net/dir", "https://pa.example.net", f["text.txt"]), "--state-dir", "text.txt", 2),
    ("acme-ca-bundle-garbage", lambda f: ACME("https://ca.example.net/dir", "https://pa.example.net", f["dir"] / "sp", "--ca-bundle", f["garbage.bin"]),
     "not a valid certificate", "garbage.bin", 2),
    ("acme-list-missing", lambda f: ("acme", "list", f["missing.pem"]), "no such directory", "missing.pem", 2),
]


@pytest.mark.parametrize("case, args, phrase, at_fault, code", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_specific_line(files: dict[str, Path], case: str, args: Any, phrase: str, at_fault: Any, code: int) -> None:
    p = invoke(*args(files))
    check_line(p, phrase, files[at_fault] if at_fault else None, code=code)


#: one case of each kind, run as the installed program does (entry point, exit status, stderr)
REAL = ("csr-key-is-cert", "cert-sp-csr-and-key", "usage-missing-option", "usage-unknown-command", "verify-crl-is-cert",
        "pa-config-bad-toml", "tn-db-url", "acme-directory-not-url")


@pytest.mark.parametrize("case", REAL)
def test_the_installed_program_prints_the_same_line(files: dict[str, Path], case: str) -> None:
    _, args, phrase, at_fault, code = next(c for c in CASES if c[0] == case)
    p = run(*args(files), cwd=files["dir"])
    check_line(p, phrase, files[at_fault] if at_fault else None, code=code)


def test_acme_says_a_url_is_no_acme_directory(files: dict[str, Path], web: str) -> None:
    """A web server that answers HTML is named as no ACME directory, before the STI-PA is asked;
    a closed port is a refused connection (in plain words, no library class name)."""
    p = invoke(*ACME(web + "/", web, files["dir"] / "sp-web"))
    line = check_line(p, f"{web}/ is not an ACME directory", code=1)
    assert "not JSON" in line and "malformed" not in line, line
    port = closed_port()  # (a refused connection is retried for 10 s: a lab STI-CA may be starting)
    p = invoke(*ACME(f"http://127.0.0.1:{port}/dir", f"http://127.0.0.1:{port}", files["dir"] / "sp-closed"))
    check_line(p, f"cannot connect to 127.0.0.1:{port}: Connection refused", code=1)
    p = invoke(*ACME(web.replace("http://", "https://") + "/dir", web.replace("http://", "https://"), files["dir"] / "sp-tls"))
    check_line(p, "TLS handshake with 127.0.0.1", code=1)


def test_x5u_refusals_name_the_option_that_lifts_them(files: dict[str, Path]) -> None:
    """verify without --cert fetches the x5u: an http or loopback x5u is refused (436, a call's
    answer, on stdout) and the refusal names the flag and the [verification] option."""
    key = serialization.load_pem_private_key(files["sp.key"].read_bytes(), None)
    for x5u, flag, option in (("http://cr.example.net/sp.pem", "--allow-http-x5u", "[verification].allow_http_x5u"),
                              ("https://127.0.0.1/sp.pem", "--allow-private-x5u", "[verification].allow_private_x5u"),
                              ("https://cr.example.net:9999/sp.pem", "--allow-private-x5u", "[verification].allow_private_x5u")):
        identity = Signer(key, x5u).identity(orig="12155551212", dest=["12155551213"], attest="A")  # type: ignore[arg-type]
        p = invoke("verify", identity, "--trust-anchor", files["root.pem"])
        assert p.returncode == 1 and "Traceback" not in p.stderr, (p.stdout, p.stderr)
        first = p.stdout.splitlines()[0]
        assert first.startswith("436 Bad Identity Info: x5u ") and x5u in first and "refused" in first, first
        assert f"allow with {flag} / {option}" in first, first


def test_usage_errors_stay_one_line_in_any_terminal(files: dict[str, Path]) -> None:
    """The option parser's errors are not boxed panels, however narrow or wide the terminal."""
    for columns in ("20", "300"):
        p = run("cert", "root", "--key", files["root.key"], "--out", files["dir"] / "r.pem", "--days", "zero", env={"COLUMNS": columns})
        line = check_line(p, "--days: must be an integer, got zero", code=2)
        assert line.endswith("(see 'stirshaken cert root --help')"), line


def _commands() -> Iterator[tuple[str, Any]]:
    def walk(cmd: Any, path: str) -> Iterator[tuple[str, Any]]:
        yield path, cmd
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            yield from walk(sub, f"{path} {name}")

    yield from walk(typer.main.get_command(app), "stirshaken")


def test_every_command_documents_each_option_and_an_example() -> None:
    """Each command and group: every option and argument has a help text; the help has an
    'Example:' paragraph; the summary (the command list's line) is one sentence on one line."""
    problems = []
    seen = 0
    for path, cmd in _commands():
        seen += 1
        for param in cmd.params:
            if not (getattr(param, "help", None) or "").strip():
                problems.append(f"{path}: {param.opts[0] if param.opts else param.name} has no help")
        text = cmd.help or ""
        if "\nExample: stirshaken" not in "\n" + text.replace("\n\n", "\n"):
            problems.append(f"{path}: no 'Example: stirshaken ...' in its help")
        if "\n" in text.split("\n\n")[0].strip():
            problems.append(f"{path}: the first paragraph of its help is more than one line")
    assert seen > 30 and not problems, "\n".join(problems)


def test_help_shows_the_example() -> None:
    p = run("cert", "sp", "--help", env={"COLUMNS": "200"})
    assert p.returncode == 0 and "Example: stirshaken cert sp --csr sp.csr" in p.stdout, p.stdout
    assert "Certificate of the issuing CA (PEM)." in p.stdout
