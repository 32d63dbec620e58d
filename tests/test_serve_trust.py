"""Trust and revocation through a real ``stirshaken serve`` (docs/requirements.md VS-06, VS-10):
against the project's own STI-PA (``stirshaken pa serve`` over HTTPS: signed CA list, SHAKEN CRL
signed by its CRL signer, revocation through its API), a revoked certificate gets 437 over SIP and
REST and a good one passes, also when the CRL distribution point is plain http; trust problems show
in the results, in ``/healthz`` and once in the log; SIGHUP (or ``crl_refresh``) picks up a CRL
file changed on disk in every worker."""

from __future__ import annotations

import asyncio
import functools
import http.server
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core import certificates as certs
from stirshaken.core.keys import write_private_key
from stirshaken.core.passport import Signer
from stirshaken.net.http import client_session
from stirshaken.pki.pa_client import PAClient

from tests.test_serve_support import DEST, ORIG, FileServer, ServeProcess, serve_port
from tests.test_vs_support import crl_der, make_pki, revoke_crl

STIR = [sys.executable, "-m", "stirshaken.cli"]
ADMIN_PASSWORD = "pa-admin-pw"


# --- helpers ---------------------------------------------------------------------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a: Any) -> None:  # noqa: D401
        pass


class HTTPSFileServer(FileServer):
    """:class:`FileServer` over HTTPS with the given server certificate (the x5u repository)."""

    def __init__(self, directory: Path, cert: Path, key: Path):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(directory)))
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.port}/{name}"


def sip_call(port: int, identity: str, branch: str) -> tuple[int, str]:
    """One INVITE with ``identity`` to the SIP verification service over UDP: (status, message)."""
    msg = (f"INVITE sip:{DEST}@127.0.0.1:{port} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-{branch}\r\n"
           f"From: <sip:{ORIG}@127.0.0.1:5090>;tag=t{branch}\r\nTo: <sip:{DEST}@127.0.0.1:{port}>\r\n"
           f"Call-ID: call-{branch}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nIdentity: {identity}\r\n"
           "Content-Length: 0\r\n\r\n").encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        s.sendto(msg, ("127.0.0.1", port))
        data = s.recv(65535).decode()
    return int(data.split(" ", 2)[1]), data


def rest_verify(port: int, identity: str) -> dict[str, Any]:
    body = {"verificationRequest": {"from": {"tn": ORIG}, "to": {"tn": [DEST]}, "time": int(time.time()), "identity": identity}}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/stir/v1/verification", data=orjson.dumps(body),
                                 headers={"Content-Type": "application/json", "Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=15) as r:
        return orjson.loads(r.read())["verificationResponse"]  # type: ignore[no-any-return]


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def wait_for(check: Any, what: str, timeout: float = 30.0) -> Any:
    """Poll ``check()`` until it returns something true (no timing is asserted: the deadline
    only ends a test that would otherwise hang)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout} s")
        time.sleep(0.2)


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the STI-PA and a CA it trusts -----------------------------------------------------------------


@pytest.fixture(scope="module")
def pa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``stirshaken pa serve`` over HTTPS trusting our STI-CA root; SP certificates of that CA
    whose CRL distribution point is the PA's SHAKEN CRL (https) or its copy on plain http, one
    good and one revoked through the PA's API; their chains on an HTTPS x5u repository."""
    d = tmp_path_factory.mktemp("trust-pa")
    pa_dir, ca_dir = d / "pa", d / "ca"
    ca_dir.mkdir()
    rk, ik = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = certs.create_root(rk, cn="Trust Test STI-CA Root")
    (ca_dir / "ca-root.pem").write_bytes(certs.pem([root]))
    port = free_tcp_port()
    proc = subprocess.Popen(STIR + ["pa", "serve", "--state-dir", str(pa_dir), "--port", str(port), "--trusted-ca", str(ca_dir / "ca-root.pem"),
                                    "--admin-password", ADMIN_PASSWORD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    base = f"https://127.0.0.1:{port}"
    tls_root = pa_dir / "tls" / "tls-root.pem"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"pa serve exited with {proc.returncode}")
        if not tls_root.exists():
            return False
        try:
            urllib.request.urlopen(base + "/api/v1/ca-list", context=ssl.create_default_context(cafile=str(tls_root)), timeout=2)
            return True
        except (OSError, ssl.SSLError):
            return False

    plain = None
    try:
        wait_for(up, "pa serve answering")
        crl_signer = certs.load_certificates((pa_dir / "pa-crl.pem").read_bytes())[0]
        plain = FileServer(pa_dir)  # the PA's own copy of the SHAKEN CRL (shaken.crl) on plain http
        https_dp, http_dp = base + "/download/v1/crl", plain.url("shaken.crl")
        inter = certs.create_intermediate(ik, root, rk, crl_url=https_dp, crl_issuer=crl_signer.subject)
        x5u_dir = d / "x5u"
        x5u_dir.mkdir()
        out: dict[str, Any] = {"base": base, "dir": pa_dir, "tls_root": tls_root, "plain": plain, "d": d}
        for name, dp in (("good", https_dp), ("revoked", https_dp), ("good-http", http_dp), ("revoked-http", http_dp)):
            k = ec.generate_private_key(ec.SECP256R1())
            cert = certs.create_sp_certificate(k, inter, ik, spc="1234", crl_url=dp, crl_issuer=crl_signer.subject)
            (x5u_dir / f"{name}.pem").write_bytes(certs.pem([cert, inter]))
            out[name] = (k, cert)

        async def revoke() -> None:
            async with client_session(ca_bundle=str(tls_root)) as s:
                client = PAClient(base, s)
                await client.login("admin", ADMIN_PASSWORD)
                for name in ("revoked", "revoked-http"):
                    await client.revoke(serial=out[name][1].serial_number, reason="1")
                crl = await client.crl()
                assert all(crl.get_revoked_certificate_by_serial_number(out[n][1].serial_number) for n in ("revoked", "revoked-http"))

        asyncio.run(revoke())
        x5u = HTTPSFileServer(x5u_dir, pa_dir / "tls" / "tls-server.pem", pa_dir / "tls" / "tls-server.key")
        out["x5u"] = x5u
        yield out
        x5u.close()
    finally:
        if plain is not None:
            plain.close()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def pa_toml(pa: dict[str, Any], http_port: int, sip_port: int, *, crls: bool = True) -> str:
    d = pa["dir"]
    return "\n".join([
        "[server]", f'http = "127.0.0.1:{http_port}"', f'sip_verification = "127.0.0.1:{sip_port}"', "workers = 1", "access_log = true", "",
        "[verification]",
        f'ca_list = "{pa["base"]}/api/v1/ca-list"', f'ca_list_trust = ["{d / "pa-root.pem"}"]',
        f'crls = ["{pa["base"]}/download/v1/crl"]' if crls else "",
        f'crl_signers = ["{d / "pa-crl.pem"}"]', f'x5u_ca_bundle = "{pa["tls_root"]}"', "allow_private_x5u = true", "reject_codes = [437]", "",
    ])


def identity(pa: dict[str, Any], name: str) -> str:
    key, _cert = pa[name]
    return Signer(key, pa["x5u"].url(f"{name}.pem")).identity(orig=ORIG, dest=[DEST], attest="A")


def test_revoked_certificate_is_437_through_serve_with_the_sti_pa(pa: dict[str, Any]) -> None:
    """The STI-PA's CA list (the only trust anchors) and its indirect SHAKEN CRL: revoked → 437
    over SIP and REST (ATIS-1000082: reasoncode 437, "Unsupported Credential"), good → passed."""
    http_port, sip_port = serve_port(), serve_port()
    srv = ServeProcess(pa["d"], pa_toml(pa, http_port, sip_port), http_port, name="serve-pa")
    try:
        code, msg = sip_call(sip_port, identity(pa, "good"), "good1")
        assert code == 302 and "verstat=TN-Validation-Passed" in msg and "X-Verification-Warning" not in msg, msg
        code, msg = sip_call(sip_port, identity(pa, "revoked"), "rev1")
        assert code == 437 and "Unsupported Credential" in msg, msg
        assert "X-Verification-Reason: Failed" not in msg and "is revoked by the CRL of CN=STI-PA CRL" in msg, msg
        res = rest_verify(http_port, identity(pa, "revoked"))
        assert res["verstat"] == "TN-Validation-Failed" and res["reasoncode"] == 437 and res["reasontext"] == "Unsupported Credential", res
        assert "is revoked by the CRL of CN=STI-PA CRL" in res["reasondesc"]
        assert rest_verify(http_port, identity(pa, "good")) == {"verstat": "TN-Validation-Passed"}
        assert healthz(http_port) == (200, {"status": "ok", "reasons": []})
    finally:
        srv.stop()


def test_plain_http_distribution_point_is_checked(pa: dict[str, Any]) -> None:
    """No CRL configured: the certificates' http distribution point (the PA's CRL on plain http)
    is fetched although x5u must be https, and a revoked certificate gets 437."""
    http_port, sip_port = serve_port(), serve_port()
    srv = ServeProcess(pa["d"], pa_toml(pa, http_port, sip_port, crls=False), http_port, name="serve-pa-http")
    try:
        code, msg = sip_call(sip_port, identity(pa, "revoked-http"), "rh1")
        assert code == 437 and "is revoked by the CRL of CN=STI-PA CRL" in msg, msg
        code, msg = sip_call(sip_port, identity(pa, "good-http"), "gh1")
        assert code == 302 and "verstat=TN-Validation-Passed" in msg and "X-Verification-Warning" not in msg, msg
    finally:
        srv.stop()


# --- trust problems: results, /healthz, the log ----------------------------------------------------


@pytest.fixture
def local_pki(tmp_path: Path) -> dict[str, Any]:
    """Root → intermediate → SP on disk (with the intermediate's key, to write CRLs), the chain on
    an http x5u server."""
    pki = make_pki(tmp_path / "pki")
    write_private_key(tmp_path / "pki" / "sp.key", pki.sp_key, public=False)
    (tmp_path / "pki" / "sp-chain.pem").write_bytes(pki.chain_pem)
    (tmp_path / "pki" / "inter.crl").write_bytes(crl_der(revoke_crl(pki)))
    return {"pki": pki, "x5u": FileServer(tmp_path / "pki"), "dir": tmp_path}


def local_toml(lp: dict[str, Any], http_port: int, sip_port: int, workers: int, verification: str) -> str:
    pki = lp["pki"]
    return "\n".join([
        "[server]", f'http = "127.0.0.1:{http_port}"', f'sip_verification = "127.0.0.1:{sip_port}"', f"workers = {workers}",
        "access_log = true", "", "[verification]", f'trust_anchors = ["{pki.dir / "root.pem"}"]', "allow_http_x5u = true",
        "allow_private_x5u = true", "reject_codes = [437]", verification, "",
    ])


def local_identity(lp: dict[str, Any]) -> str:
    return Signer(lp["pki"].sp_key, lp["x5u"].url("sp-chain.pem")).identity(orig=ORIG, dest=[DEST], attest="A")


def test_unavailable_crl_marks_results_degrades_healthz_and_is_logged_once(local_pki: dict[str, Any]) -> None:
    dead = f"http://127.0.0.1:{free_tcp_port()}/shaken.crl"  # nothing listens there
    http_port, sip_port = serve_port(), serve_port()
    srv = ServeProcess(local_pki["dir"], local_toml(local_pki, http_port, sip_port, 1, f'crls = ["{dead}"]'), http_port, name="serve-soft")
    try:
        for i in range(3):
            code, msg = sip_call(sip_port, local_identity(local_pki), f"soft{i}")
            assert code == 302 and "verstat=TN-Validation-Passed" in msg, msg
            assert f"X-Verification-Warning: revocation status unknown: the configured CRL {dead} is unavailable (Failed to dereference CRL URI: cannot connect" in msg, msg
        res = rest_verify(http_port, local_identity(local_pki))
        assert res == {"verstat": "TN-Validation-Passed"}
        status, body = wait_for(lambda: (lambda h: h if h[1]["status"] == "degraded" else None)(healthz(http_port)), "/healthz degraded")
        assert status == 200 and len(body["reasons"]) == 1
        assert body["reasons"][0].startswith(f"CRL {dead} unavailable: Failed to dereference CRL URI: cannot connect"), body
        for i in range(3):
            sip_call(sip_port, local_identity(local_pki), f"soft-again{i}")
        time.sleep(2.5)  # at least one more health check interval: the state did not change
        lines = [orjson.loads(x) for x in srv.log.read_text().splitlines() if x.startswith("{")]
        degraded = [x for x in lines if x["msg"] == "health degraded"]
        assert len(degraded) == 1 and degraded[0]["reasons"] == body["reasons"], degraded
        rest_lines = [x for x in lines if x["msg"] == "verification"]
        assert rest_lines and "the configured CRL" in rest_lines[-1]["warnings"][0]
    finally:
        srv.stop()
    # crl_policy = "hard": the same call is 437
    http_port, sip_port = serve_port(), serve_port()
    srv = ServeProcess(local_pki["dir"], local_toml(local_pki, http_port, sip_port, 1, f'crls = ["{dead}"]\ncrl_policy = "hard"'),
                       http_port, name="serve-hard")
    try:
        code, msg = sip_call(sip_port, local_identity(local_pki), "hard1")
        assert code == 437 and "revocation status cannot be established (crl_policy hard)" in msg, msg
    finally:
        srv.stop()


# --- reload -----------------------------------------------------------------------------------------


def _worker_lines(srv: ServeProcess, msg: str) -> list[dict[str, Any]]:
    return [x for x in (orjson.loads(x) for x in srv.log.read_text().splitlines() if x.startswith("{")) if x["msg"] == msg]


def test_sighup_rereads_the_crl_file_in_every_worker(local_pki: dict[str, Any]) -> None:
    pki, crl = local_pki["pki"], local_pki["dir"] / "pki" / "inter.crl"
    http_port, sip_port = serve_port(), serve_port()
    srv = ServeProcess(local_pki["dir"], local_toml(local_pki, http_port, sip_port, 2, f'crls = ["{crl}"]'), http_port, name="serve-hup")
    try:
        code, msg = sip_call(sip_port, local_identity(local_pki), "hup0")
        assert code == 302 and "verstat=TN-Validation-Passed" in msg, msg
        # a CRL file that does not parse: the reload fails in each worker, the previous CRL stays
        crl.write_bytes(b"garbage")
        srv.proc.send_signal(signal.SIGHUP)
        failed = wait_for(lambda: (lambda x: x if len(x) == 2 else None)(_worker_lines(srv, "trust reload failed; keeping the current trust anchors, CRL signers, CRLs and CA list")),
                          "two failed reloads")
        assert {x["worker"] for x in failed} == {0, 1} and all(str(crl) in x["error"] for x in failed), failed
        code, msg = sip_call(sip_port, local_identity(local_pki), "hup1")
        assert code == 302, msg
        # the CRL now revokes the SP certificate: after SIGHUP every worker answers 437
        crl.write_bytes(crl_der(revoke_crl(pki, pki.sp.serial_number)))
        srv.proc.send_signal(signal.SIGHUP)
        done = wait_for(lambda: (lambda x: x if len(x) == 2 else None)(_worker_lines(srv, "trust reloaded")), "two reloads")
        assert {x["worker"] for x in done} == {0, 1} and all(x["crls"] == 1 and x["problems"] == [] for x in done), done
        for i in range(8):
            code, msg = sip_call(sip_port, local_identity(local_pki), f"hup-revoked{i}")
            assert code == 437 and "revoked" in msg, msg
    finally:
        srv.stop()


def test_changed_crl_file_is_picked_up_at_its_next_refresh(local_pki: dict[str, Any]) -> None:
    pki, crl = local_pki["pki"], local_pki["dir"] / "pki" / "inter.crl"
    http_port, sip_port = serve_port(), serve_port()
    srv = ServeProcess(local_pki["dir"], local_toml(local_pki, http_port, sip_port, 1, f'crls = ["{crl}"]\ncrl_refresh = 1'),
                       http_port, name="serve-refresh")
    try:
        code, msg = sip_call(sip_port, local_identity(local_pki), "ref0")
        assert code == 302, msg
        crl.write_bytes(crl_der(revoke_crl(pki, pki.sp.serial_number)))
        n = iter(range(10_000))
        wait_for(lambda: sip_call(sip_port, local_identity(local_pki), f"ref{next(n)}")[0] == 437, "437 after the refresh")
    finally:
        srv.stop()
