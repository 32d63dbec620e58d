"""Interop with the real peer, secsipidx / libsecsipid 1.2.0, in both directions.

These tests FAIL (never skip) when the peer is missing: CI installs it (scripts/install-deps.sh).
Ports: loopback only, in the core-tests range 23000-23999.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stirshaken.core.b64 import b64url_decode, b64url_encode

pytestmark = pytest.mark.interop

BIN = Path(sys.executable).with_name("stirshaken")
MKPKI = Path(__file__).resolve().parent / "peers" / "mkpki.sh"

# libsecsipid through ctypes, run in a child interpreter so that the library's process-global
# options (CertVerify, CertCAFile) and the Go runtime never leak into the test process.
CTYPES_CHECK = r"""
import ctypes, json, sys
lib = ctypes.CDLL("libsecsipid.so.1")
for name in ("SecSIPIDCheckFullPubKey", "SecSIPIDCheckFull"):
    getattr(lib, name).argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    getattr(lib, name).restype = ctypes.c_int
lib.SecSIPIDOptSetN.argtypes = [ctypes.c_char_p, ctypes.c_int]
lib.SecSIPIDOptSetS.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
req = json.loads(sys.stdin.read())
if req.get("ca_file"):
    lib.SecSIPIDOptSetN(b"CertVerify", req["cert_verify"])
    lib.SecSIPIDOptSetS(b"CertCAFile", req["ca_file"].encode())
out = []
for identity in req["identities"]:
    if req["mode"] == "pubkey":
        out.append(lib.SecSIPIDCheckFullPubKey(identity.encode(), 0, 60, req["pem"].encode(), 0))
    else:  # '' = fetch the key from the info URL
        out.append(lib.SecSIPIDCheckFull(identity.encode(), 0, 60, req.get("path", "").encode(), 3))
print(json.dumps(out))
"""


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed (run scripts/install-deps.sh); interop tests must not be skipped")
    return path


def libsecsipid(identities, **req) -> list[int]:
    p = subprocess.run([sys.executable, "-c", CTYPES_CHECK], input=json.dumps({"identities": identities, **req}),
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        pytest.fail(f"libsecsipid via ctypes failed to run (libsecsipid1 installed?): {p.stderr[-500:]}")
    return json.loads(p.stdout)


def secsipidx(*args, ok=None):  # ok=True: exit 0 and "ok" printed
    exe = _require("secsipidx")
    p = subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=60)
    if ok is True:
        assert p.returncode == 0 and "ok" in p.stdout.split(), (args, p.stdout, p.stderr)
    return p


def stirshaken(*args, ok=True, **kw):
    p = subprocess.run([str(BIN), *map(str, args)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "COLUMNS": "200"}, **kw)
    if ok is True:
        assert p.returncode == 0, (args, p.stdout, p.stderr)
    elif ok is False:
        assert p.returncode != 0, (args, p.stdout, p.stderr)
    return p


def free_port() -> int:
    ports = list(range(23000, 24000))
    random.shuffle(ports)
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 23000-23999")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D401 - keep test output clean
        pass


@pytest.fixture(scope="module")
def x5u_host(tmp_path_factory):
    """A loopback static file host (the STI-CR stand-in) on a port of 23000-23999."""
    root = tmp_path_factory.mktemp("cr")
    for _ in range(20):
        port = free_port()
        try:
            httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(_Quiet, directory=str(root)))
            break
        except OSError:
            continue
    else:  # pragma: no cover
        raise RuntimeError("cannot bind an x5u port")
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def peer_chain(tmp_path_factory, x5u_host):
    """The peers' openssl-made test PKI (mkpki.sh), its CRL DP pointing at our port range."""
    _require("openssl")
    out = tmp_path_factory.mktemp("peerchain") / "p"
    port = x5u_host[1].rsplit(":", 1)[1]
    p = subprocess.run(["bash", str(MKPKI), str(out)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HTTP_PORT": port})
    assert p.returncode == 0, p.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def own_chain(tmp_path_factory, x5u_host):
    """A PKI made only by our own `stirshaken cert ...` commands; the chain published on the x5u host."""
    d = tmp_path_factory.mktemp("ownchain")
    cr_dir, base = x5u_host
    crl_url = f"{base}/inter.crl"
    stirshaken("keygen", "-o", d / "root.key")
    stirshaken("keygen", "-o", d / "inter.key")
    stirshaken("keygen", "-o", d / "sp.key")
    stirshaken("cert", "root", "--key", d / "root.key", "-o", d / "root.pem")
    stirshaken("cert", "intermediate", "--key", d / "inter.key", "--issuer-cert", d / "root.pem", "--issuer-key",
               d / "root.key", "-o", d / "inter.pem", "--crl-url", crl_url)
    stirshaken("csr", "--key", d / "sp.key", "--spc", "1234", "-o", d / "sp.csr")
    stirshaken("cert", "sp", "--csr", d / "sp.csr", "--issuer-cert", d / "inter.pem", "--issuer-key", d / "inter.key",
               "--chain", "--crl-url", crl_url, "-o", d / "sp-chain.pem")
    shutil.copy(d / "sp-chain.pem", cr_dir / "own-sp-chain.pem")
    stirshaken("crl", "--issuer-cert", d / "inter.pem", "--issuer-key", d / "inter.key", "-o", cr_dir / "inter.crl")
    return d, f"{base}/own-sp-chain.pem"


def tamper(identity: str) -> str:
    token, params = identity.split(";", 1)
    h, p, s = token.split(".")
    claims = json.loads(b64url_decode(p))
    claims["orig"]["tn"] = "12155550000"
    p2 = b64url_encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{h}.{p2}.{s};{params}"


def sign_with_cli(key: Path, x5u: str, **extra) -> str:
    args = ["sign", "--key", key, "--x5u", x5u, "--allow-http-x5u", "--allow-private-x5u", "--attest", "A", "--orig", "+1 215 555 1212",
            "--dest", "12155551213"]  # the x5u server of these tests is http on loopback
    for k, v in extra.items():
        args += [f"--{k}", v]
    return stirshaken(*args).stdout.strip()


# --- our signature, their verifier --------------------------------------------------------------


def test_cli_signed_identity_passes_secsipidx_and_libsecsipid(peer_chain, x5u_host, tmp_path):
    x5u = f"{x5u_host[1]}/sp-chain.pem"
    identity = sign_with_cli(peer_chain / "sp.key", x5u)
    (tmp_path / "id.txt").write_text(identity)
    secsipidx("-check", "-expire", "60", "-fidentity", tmp_path / "id.txt", "-fpubkey", peer_chain / "pub" / "sp.pem", ok=True)
    secsipidx("-check", "-expire", "60", "-identity", identity, "-fpubkey", peer_chain / "pub" / "sp.pem", ok=True)
    bad = tamper(identity)
    p = secsipidx("-check", "-expire", "60", "-identity", bad, "-fpubkey", peer_chain / "pub" / "sp.pem")
    assert p.returncode == (-251) % 256 and "ok" not in p.stdout.split()
    cert_pem = (peer_chain / "pub" / "sp.pem").read_text()
    assert libsecsipid([identity, bad], mode="pubkey", pem=cert_pem) == [0, -251]
    # and the tampered header fails our own verifier too
    p = stirshaken("verify", bad, "--cert", peer_chain / "pub" / "sp-chain.pem", "--trust-anchor", peer_chain / "ca-root.pem", ok=False)
    assert "438" in p.stdout


def test_random_k_signature_also_passes(peer_chain, tmp_path):
    from stirshaken.core.keys import load_private_key
    from stirshaken.core.passport import Signer

    signer = Signer(load_private_key(peer_chain / "sp.key"), "https://cr.example.net/sp.pem", deterministic=False)
    identities = [signer.identity(orig="12155551212", dest=["12155551213", "12155551214"], attest=a) for a in "ABC"]
    assert libsecsipid(identities, mode="pubkey", pem=(peer_chain / "pub" / "sp.pem").read_text()) == [0, 0, 0]


# --- their signature, our verifier ----------------------------------------------------------------


def test_secsipidx_signed_identity_passes_stirshaken_verify(peer_chain, x5u_host, tmp_path):
    x5u = f"{x5u_host[1]}/sp-chain.pem"
    p = secsipidx("-sign-full", "-orig-tn", "12155551212", "-dest-tn", "12155551213", "-attest", "A",
                  "-x5u", x5u, "-k", peer_chain / "sp.key")
    assert p.returncode == 0, p.stderr
    identity = p.stdout.strip().splitlines()[0]
    (tmp_path / "sid.txt").write_text(identity)
    base = ("--cert", peer_chain / "pub" / "sp-chain.pem", "--trust-anchor", peer_chain / "ca-root.pem")
    out = stirshaken("verify", f"@{tmp_path / 'sid.txt'}", *base, "--orig", "12155551212", "--dest", "12155551213").stdout
    assert "TN-Validation-Passed" in out and "attest=A" in out
    p = stirshaken("verify", tamper(identity), *base, ok=False)
    assert "438" in p.stdout and "TN-Validation-Failed" in p.stdout
    # the tampered copy fails the peer itself as well
    p = secsipidx("-check", "-expire", "60", "-identity", tamper(identity), "-fpubkey", peer_chain / "pub" / "sp.pem")
    assert p.returncode == (-251) % 256
    # the peer PKI's negative certificates
    p = stirshaken("verify", identity, "--cert", peer_chain / "pub" / "sp-revoked-chain.pem", "--trust-anchor",
                   peer_chain / "ca-root.pem", "--crl", peer_chain / "pub" / "inter.crl", ok=False)
    assert "437" in p.stdout  # (signed with another key too, but the credential fails first)


def test_secsipidx_signed_with_their_key_and_several_params(peer_chain, x5u_host):
    from stirshaken.core.identity import parse_identity
    from stirshaken.core.passport import decode

    x5u = f"{x5u_host[1]}/sp-chain.pem"
    p = secsipidx("-sign-full", "-orig-tn", "12155551212", "-dest-tn", "12155551213", "-attest", "C",
                  "-x5u", x5u, "-k", peer_chain / "sp.key")
    h = parse_identity(p.stdout.strip())
    pp = decode(h.token)
    assert (h.info, h.alg, h.ppt) == (x5u, "ES256", "shaken") and pp.attest == "C" and pp.canonical and pp.problems == ()


# --- a PKI made by our commands, checked by their chain verifier ----------------------------------


def test_own_chain_passes_secsipidx_cert_verify(own_chain, tmp_path):
    d, x5u = own_chain
    identity = sign_with_cli(d / "sp.key", x5u)
    (tmp_path / "id.txt").write_text(identity)
    secsipidx("-check", "-expire", "60", "-fidentity", tmp_path / "id.txt", "-fpubkey", x5u, "-timeout", "3",
              "-cert-verify", "5", "-ca-file", d / "root.pem", ok=True)
    # with the (empty) CRL of the intermediate as well: flag 16
    crl_pem = tmp_path / "inter.crl"
    stirshaken("crl", "--issuer-cert", d / "inter.pem", "--issuer-key", d / "inter.key", "-o", crl_pem)
    secsipidx("-check", "-expire", "60", "-fidentity", tmp_path / "id.txt", "-fpubkey", x5u, "-timeout", "3",
              "-cert-verify", "21", "-ca-file", d / "root.pem", "-crl-file", crl_pem, ok=True)
    p = secsipidx("-check", "-expire", "60", "-identity", tamper(identity), "-fpubkey", x5u, "-timeout", "3",
                  "-cert-verify", "5", "-ca-file", d / "root.pem")
    assert p.returncode == (-251) % 256, (p.returncode, p.stdout)  # -251: signature invalid
    # and libsecsipid fetching the chain from the info URL itself, chain-verified against our root
    rcs = libsecsipid([identity, tamper(identity)], mode="full", path="", cert_verify=5, ca_file=str(d / "root.pem"))
    assert rcs == [0, -251]
    # our own verifier agrees on the same chain
    out = stirshaken("verify", identity, "--cert", d / "sp-chain.pem", "--trust-anchor", d / "root.pem").stdout
    assert "TN-Validation-Passed" in out


def test_own_revoked_certificate_fails_secsipidx(own_chain, tmp_path):
    d, x5u = own_chain
    crl = tmp_path / "revoked.crl"
    stirshaken("crl", "--issuer-cert", d / "inter.pem", "--issuer-key", d / "inter.key", "--revoke", d / "sp-chain.pem", "-o", crl)
    identity = sign_with_cli(d / "sp.key", x5u)
    p = secsipidx("-check", "-expire", "60", "-identity", identity, "-fpubkey", x5u, "-timeout", "3",
                  "-cert-verify", "21", "-ca-file", d / "root.pem", "-crl-file", crl)
    assert p.returncode == (-112) % 256, (p.returncode, p.stdout, p.stderr)  # -112: certificate revoked
    p = stirshaken("verify", identity, "--cert", d / "sp-chain.pem", "--trust-anchor", d / "root.pem", "--crl", crl, ok=False)
    assert "437" in p.stdout and "revoked" in p.stdout


# --- issue 12 item 2: div PASSporTs (RFC 8946) --------------------------------------------------


def test_div_passport_and_secsipidx(peer_chain, x5u_host, tmp_path):
    """secsipidx 1.2.0 has no div support: it refuses a div PASSporT by its ppt (the SIP parameter:
    -303 "invalid value for ppt header parameter"; without it, the JOSE header: -203), so of a
    diverted call it can check the SHAKEN PASSporT (ok), while our verifier checks the pair for
    the new target (and the SHAKEN one alone fails there)."""
    x5u = f"{x5u_host[1]}/sp-chain.pem"
    lab = ("--allow-http-x5u", "--allow-private-x5u")
    shaken = sign_with_cli(peer_chain / "sp.key", x5u)
    div = stirshaken("sign", "--ppt", "div", "--key", peer_chain / "sp.key", "--x5u", x5u, *lab, "--orig", "12155551212",
                     "--div", "12155551213", "--dest", "12155559999").stdout.strip()
    pub = peer_chain / "pub" / "sp.pem"
    secsipidx("-check", "-expire", "60", "-identity", shaken, "-fpubkey", pub, ok=True)
    p = secsipidx("-check", "-expire", "60", "-identity", div, "-fpubkey", pub)
    assert p.returncode == (-303) % 256 and "invalid value for ppt header parameter" in p.stdout + p.stderr, (p.stdout, p.stderr)
    token = div.split(";", 1)[0]
    p = secsipidx("-check", "-expire", "60", "-identity", f"{token};info=<{x5u}>;alg=ES256", "-fpubkey", pub)
    assert p.returncode == (-203) % 256 and "invalid value for ppt in json header" in p.stdout + p.stderr, (p.stdout, p.stderr)
    base = ("--cert", peer_chain / "pub" / "sp-chain.pem", "--trust-anchor", peer_chain / "ca-root.pem", "--orig", "12155551212",
            "--dest", "12155559999")
    assert "TN-Validation-Passed" in stirshaken("verify", f"{shaken}, {div}", *base).stdout
    assert "438" in stirshaken("verify", shaken, *base, ok=False).stdout


# --- issue 12 item 3: rich call data (RFC 9795) ---------------------------------------------------


def test_rcd_passport_and_secsipidx(peer_chain, x5u_host, tmp_path):
    """secsipidx 1.2.0 has no rcd support: like div, it refuses an rcd PASSporT by its ppt (-303;
    -203 without the SIP parameter).  Rich call data inside a SHAKEN PASSporT (extra claims rcd,
    rcdi, crn) it accepts: -check verifies signature and the SHAKEN claims and ignores the rest.
    Our verifier checks the rcdi digests of both forms against the icon on the loopback host."""
    from stirshaken.core.passport import Signer
    from stirshaken.core.keys import load_private_key
    from stirshaken.core.rcd import integrity, rcd_claims

    x5u = f"{x5u_host[1]}/sp-chain.pem"
    icn = f"{x5u_host[1]}/logo.png"
    logo = b"\x89PNG" + b"peer" * 64
    (Path(x5u_host[0]) / "logo.png").write_bytes(logo)
    lab = ("--allow-http-x5u", "--allow-private-x5u")
    shaken = sign_with_cli(peer_chain / "sp.key", x5u)
    (tmp_path / "logo.png").write_bytes(logo)
    rcd = stirshaken("sign", "--ppt", "rcd", "--key", peer_chain / "sp.key", "--x5u", x5u, *lab, "--orig", "12155551212",
                     "--dest", "12155551213", "--nam", "Example Bank", "--icn", icn, "--icn-content", tmp_path / "logo.png").stdout.strip()
    pub = peer_chain / "pub" / "sp.pem"
    p = secsipidx("-check", "-expire", "60", "-identity", rcd, "-fpubkey", pub)
    assert p.returncode == (-303) % 256 and "invalid value for ppt header parameter" in p.stdout + p.stderr, (p.stdout, p.stderr)
    token = rcd.split(";", 1)[0]
    p = secsipidx("-check", "-expire", "60", "-identity", f"{token};info=<{x5u}>;alg=ES256", "-fpubkey", pub)
    assert p.returncode == (-203) % 256 and "invalid value for ppt in json header" in p.stdout + p.stderr, (p.stdout, p.stderr)
    claims = rcd_claims(orig="12155551212", dest="12155551213", nam="Example Bank", icn=icn, digests={"/icn": integrity(logo)},
                        crn="Statement ready")
    claims.update(attest="A", origid="123e4567-e89b-12d3-a456-426614174000")
    inside = Signer(load_private_key((peer_chain / "sp.key").read_bytes()), x5u).identity_claims(claims)
    secsipidx("-check", "-expire", "60", "-identity", inside, "-fpubkey", pub, ok=True)
    base = ("--cert", peer_chain / "pub" / "sp-chain.pem", "--trust-anchor", peer_chain / "ca-root.pem", "--orig", "12155551212",
            "--dest", "12155551213", *lab)
    out = stirshaken("verify", f"{shaken}, {rcd}", *base).stdout
    assert "TN-Validation-Passed" in out and "rcd (rcd PASSporT) passed" in out, out
    out = stirshaken("verify", inside, *base).stdout
    assert "TN-Validation-Passed" in out and "rcd (shaken PASSporT) passed" in out, out
