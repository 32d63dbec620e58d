"""The web inspector of ``stirshaken serve`` (``[server] inspect = true``): served by a real serve
process, read with urllib and rendered by headless Chromium (a page that submits the form, as a
user would); its verdicts equal those of ``stirshaken verify`` on the same input."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from stirshaken.cli.main import app
from stirshaken.serve.inspect import CSP, MAX_INPUT, RateLimiter
from stirshaken.serve.metrics import Metrics
from stirshaken.serve.rest import RestAPI

from tests.test_serve_support import DEST, ORIG, FileServer, ServeProcess, make_pki, serve_port, serve_toml

runner = CliRunner()
SPOOF = "12155550000"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("inspect-web")
    pki = make_pki(d / "pki")
    repo = FileServer(pki.dir)
    port = serve_port()
    toml = serve_toml(pki, repo, http=port).replace("[server]\n", "[server]\ninspect = true\n", 1)
    srv = ServeProcess(d, toml, port)
    r = runner.invoke(app, ["sign", "--key", str(pki.sp_key), "--x5u", repo.url("sp-chain.pem"), "--allow-http-x5u", "--allow-private-x5u", "--attest", "A",
                            "--orig", ORIG, "--dest", DEST])
    assert r.exit_code == 0, r.output
    yield {"url": f"http://127.0.0.1:{port}/inspect", "pki": pki, "dir": d, "identity": r.stdout.strip()}
    srv.stop()
    repo.close()


def post(url: str, fields: dict[str, str]) -> tuple[int, dict[str, str], str]:
    data = urllib.parse.urlencode(fields).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def verdict(page: str) -> str:
    m = re.search(r'id="verdict"><b>([A-Za-z-]+)</b>', page)
    assert m, page[:2000]
    return m.group(1)


def verify_verstat(web: dict[str, Any], identity: str, orig: str) -> str:
    r = runner.invoke(app, ["verify", identity, "--trust-anchor", str(web["pki"].root), "--orig", orig, "--dest", DEST,
                            "--allow-http-x5u", "--allow-private-x5u", "--json"])
    return str(orjson.loads(r.stdout)["verstat"])


def test_form_page_is_self_contained(web: dict[str, Any]) -> None:
    with urllib.request.urlopen(web["url"], timeout=10) as resp:
        page = resp.read().decode()
        assert resp.headers["Content-Security-Policy"] == CSP and "default-src 'none'" in CSP
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert '<form method="post" action="/inspect">' in page
    assert "<script" not in page and "src=" not in page and "<link" not in page and "http" not in page.split("<body>", 1)[1]


def test_verdicts_equal_verify(web: dict[str, Any]) -> None:
    for orig in (ORIG, SPOOF):
        status, _, page = post(web["url"], {"input": web["identity"], "orig": orig, "dest": DEST})
        assert status == 200
        assert verdict(page) == verify_verstat(web, web["identity"], orig)
    status, _, page = post(web["url"], {"input": web["identity"], "orig": ORIG, "dest": DEST})
    assert verdict(page) == "TN-Validation-Passed"
    assert "SHAKEN 1234" in page and "HTTP 200" in page and "allowed" in page


def test_sip_request_and_bad_input(web: dict[str, Any]) -> None:
    invite = (f"INVITE sip:+{DEST}@b SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bKw\nFrom: <sip:+{SPOOF}@a>;tag=1\n"
              f"To: <sip:+{DEST}@b>\nCall-ID: web-1\nCSeq: 1 INVITE\nIdentity: {web['identity']}\nContent-Length: 0\n\n")
    status, _, page = post(web["url"], {"input": invite})
    assert status == 200 and verdict(page) == "No-TN-Validation" and "web-1" in page and "Fix:" in page
    status, _, page = post(web["url"], {"input": "<script>alert(1)</script>"})
    assert status == 200 and "<script>alert" not in page  # escaped wherever it shows
    status, _, page = post(web["url"], {"input": ""})
    assert status == 400 and "Unusable input" in page
    status, _, page = post(web["url"], {"input": "x" * (MAX_INPUT + 10)})
    assert status == 413


def test_rate_limit_per_source() -> None:
    rl = RateLimiter(burst=3, per_minute=6)
    assert [rl.take("a", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.take("a", now=0.0) == pytest.approx(10.0)
    assert rl.take("b", now=0.0) == 0.0  # another source has its own bucket
    assert rl.take("a", now=10.0) == 0.0  # one token back after 10 s


def test_too_many_form_fields_is_400_not_500() -> None:
    from stirshaken.serve.http import _status_line
    from stirshaken.serve.inspect import WebInspector
    body = "&".join(f"f{i}=1" for i in range(20)).encode() + b"&input=x"
    status, page, _ = WebInspector(None).handle("POST", {"content-type": "application/x-www-form-urlencoded"}, body, "192.0.2.1")
    assert status == 400 and b"too many form fields" in page
    assert _status_line(429) == b"HTTP/1.1 429 Too Many Requests\r\n"


def test_off_by_default() -> None:
    api = RestAPI(signing=None, verifier=None, metrics=Metrics())
    status, body, _ = api.handle("GET", "/inspect", {}, b"", False)
    assert status == 404 and b"SVC4003" in body


def chromium_submit(web: dict[str, Any], tmp: Path, name: str, fields: dict[str, str], screenshot: Path | None = None) -> str:
    """Headless Chromium opens a page whose form posts ``fields`` to the inspector; returns the
    DOM of the report page it lands on."""
    exe = shutil.which("chromium")
    assert exe, "chromium is not installed: run scripts/install-deps.sh"
    inputs = "".join(f'<textarea name="{k}">{html.escape(v)}</textarea>' for k, v in fields.items())
    page = tmp / f"{name}.html"
    page.write_text(f'<html><body><form method="post" action="{web["url"]}">{inputs}</form>'
                    "<script>document.forms[0].submit()</script></body></html>")
    args = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp / 'chromium'}",
            "--virtual-time-budget=15000", "--window-size=1100,1500"]
    if screenshot is not None:
        subprocess.run(args + [f"--screenshot={screenshot}", page.as_uri()], capture_output=True, timeout=90)
    r = subprocess.run(args + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=90)
    return r.stdout


@pytest.mark.interop
def test_chromium_renders_the_verdicts(web: dict[str, Any], tmp_path: Path) -> None:
    shot = tmp_path / "inspector.png"
    good = chromium_submit(web, tmp_path, "good", {"input": web["identity"], "orig": ORIG, "dest": DEST}, screenshot=shot)
    assert verdict(good) == "TN-Validation-Passed" == verify_verstat(web, web["identity"], ORIG)
    assert "Certificate 0 (leaf)" in good and "Decoded token" in good
    bad = chromium_submit(web, tmp_path, "bad", {"input": web["identity"], "orig": SPOOF, "dest": DEST})
    assert verdict(bad) == "No-TN-Validation" == verify_verstat(web, web["identity"], SPOOF)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # docs/img/inspector.png was taken this way
