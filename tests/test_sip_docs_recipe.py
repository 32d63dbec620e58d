"""The Kamailio recipe of docs/sip-integration.md, run exactly as written (issue 12 item 1).

The two code blocks under "## Kamailio" are taken from the document byte for byte; only their
example addresses (``127.0.0.1:5060``/``5062`` for our services, ``carrier.example.net`` and
``pbx.example.net`` for the next hops) are replaced by this test's ports, and a minimal
``request_route`` calls ``route(STIR_SIGN)`` or ``route(STIR_VERIFY)`` by the port an INVITE
arrives on.  A caller (a UDP socket of this test) sends an INVITE *without* a Date header; the
next hop (another socket) records what Kamailio relays and answers 200.  The relayed INVITE must
carry our Identity and the Date its iat names (RFC 8224 §6.1), verify with this project's
verifier, and, through the verification recipe, a P-Asserted-Identity with
``verstat=TN-Validation-Passed``.

An ``interop`` test: it fails when kamailio is missing.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import uuid
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.test_serve_support import DEST, ORIG, FileServer, ServeProcess, make_pki, serve_port, serve_toml
from tests.test_sip_kamailio import need

DOC = Path(__file__).resolve().parents[1] / "docs" / "sip-integration.md"
pytestmark = pytest.mark.interop


def recipe_blocks() -> list[str]:
    """The fenced code blocks of the "## Kamailio" section, as written."""
    text = DOC.read_text()
    start = text.index("\n## Kamailio")
    end = text.index("\n## ", start + 1)
    blocks = re.findall(r"```\n(.*?)```", text[start:end], re.S)
    assert len(blocks) == 2, "the Kamailio section should hold a signing and a verification block"
    return blocks


def test_recipe_names_the_modules_it_uses() -> None:
    """Every function the recipe calls comes from a module it loads (it failed to start without sl and pv)."""
    sign, verify = recipe_blocks()
    loaded = set(re.findall(r'loadmodule "(\w+)\.so"', sign))
    assert {"sl", "pv", "tm", "tmx", "textops"} <= loaded, loaded
    assert "Date" in sign and "append_hf" in sign


class NextHop:
    """A UDP socket that records each INVITE relayed to it and answers 200 OK (RFC 3261 §8.2.6)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]

    def take_invite(self) -> str:
        while True:
            data, peer = self.sock.recvfrom(65535)
            msg = data.decode()
            if msg.startswith("INVITE "):
                head = msg.split("\r\n\r\n", 1)[0].split("\r\n")
                keep = [h for h in head[1:] if h.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")]
                reply = "SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n"
                self.sock.sendto(reply.encode(), peer)
                return msg

    def close(self) -> None:
        self.sock.close()


def call(port: int, orig: str = ORIG) -> str:
    """Send one INVITE without Date to Kamailio's ``port``; return the final response's status line."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    me = s.getsockname()[1]
    branch, tag, cid = "z9hG4bK" + uuid.uuid4().hex[:12], uuid.uuid4().hex[:8], uuid.uuid4().hex
    inv = (f"INVITE sip:{DEST}@127.0.0.1:{port} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch={branch}\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:{orig}@127.0.0.1>;tag={tag}\r\nTo: <sip:{DEST}@127.0.0.1>\r\n"
           f"Call-ID: {cid}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{me}>\r\nContent-Length: 0\r\n\r\n")
    try:
        s.sendto(inv.encode(), ("127.0.0.1", port))
        while True:
            data = s.recv(65535).decode()
            status = data.split("\r\n", 1)[0]
            if not status.startswith("SIP/2.0 1"):
                return status
    finally:
        s.close()


def header(msg: str, name: str) -> str | None:
    for line in msg.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        n, _, v = line.partition(":")
        if n.strip().lower() == name.lower():
            return v.strip()
    return None


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    kam = need("kamailio")
    d = tmp_path_factory.mktemp("kamailio-doc")
    pki = make_pki(d / "pki")
    x5u = FileServer(d / "pki")
    http, sign_port, verify_port = serve_port(), serve_port(), serve_port()
    serve = ServeProcess(d, serve_toml(pki, x5u, http=http, sip_signing=sign_port, sip_verification=verify_port, workers=1), http)
    carrier, pbx = NextHop(), NextHop()
    k_sign, k_verify = serve_port(), serve_port()
    sign_block, verify_block = recipe_blocks()
    body = (sign_block.replace("sip:127.0.0.1:5060", f"sip:127.0.0.1:{sign_port}")
            .replace("sip:carrier.example.net:5060", f"sip:127.0.0.1:{carrier.port}")
            + verify_block.replace("sip:127.0.0.1:5062", f"sip:127.0.0.1:{verify_port}")
            .replace("sip:pbx.example.net:5060", f"sip:127.0.0.1:{pbx.port}"))
    cfg = (f"#!KAMAILIO\ndebug=2\nchildren=1\nauto_aliases=no\ndisable_tcp=yes\n"
           f"listen=udp:127.0.0.1:{k_sign}\nlisten=udp:127.0.0.1:{k_verify}\n"
           f'mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"\n'
           + body
           + "\nrequest_route {\n"
           "\tif (is_method(\"ACK\")) { t_check_trans(); exit; }\n"
           f"\tif ($Rp == {k_sign}) route(STIR_SIGN);\n"
           "\troute(STIR_VERIFY);\n}\n")
    (d / "kamailio.cfg").write_text(cfg)
    log = open(d / "kamailio.log", "wb")
    proc = subprocess.Popen([kam, "-f", str(d / "kamailio.cfg"), "-DD", "-E", "-m", "64", "-M", "8", "-P", str(d / "k.pid")],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError("kamailio refused the recipe as written: " + (d / "kamailio.log").read_text()[-2000:])
            if f"127.0.0.1:{k_verify}" in subprocess.run(["ss", "-lun"], capture_output=True, text=True).stdout:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        yield {"dir": d, "sign": k_sign, "verify": k_verify, "carrier": carrier, "pbx": pbx, "pki": pki}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        carrier.close()
        pbx.close()
        assert serve.stop() == 0
        x5u.close()


def test_signing_recipe_relays_identity_and_date(recipe: dict[str, Any]) -> None:
    from stirshaken import CallInfo, Verifier, VerifierConfig

    t0 = time.time()
    results: list[str] = []
    import threading

    th = threading.Thread(target=lambda: results.append(call(recipe["sign"])))
    th.start()
    relayed = recipe["carrier"].take_invite()
    th.join(15)
    assert results == ["SIP/2.0 200 OK"], results
    identity, date = header(relayed, "Identity"), header(relayed, "Date")
    assert identity and ";info=" in identity, relayed
    assert date, "the recipe must copy the 302's Date into the relayed INVITE: " + relayed
    when = parsedate_to_datetime(date).timestamp()
    assert abs(when - t0) < 30
    verifier = Verifier(VerifierConfig(trust_anchors=(str(recipe["pki"].root),), allow_http_x5u=True, allow_private_x5u=True,
                                       require_date=True))
    try:
        res = verifier.verify(CallInfo([identity], from_=ORIG, to=DEST, date=when))
    finally:
        verifier.close()
    assert res.verstat == "TN-Validation-Passed", res


def test_verification_recipe_relays_verstat(recipe: dict[str, Any]) -> None:
    import threading

    # sign through the recipe first, then send the signed INVITE's Identity through the verification recipe
    out: list[str] = []
    th = threading.Thread(target=lambda: out.append(call(recipe["sign"])))
    th.start()
    signed = recipe["carrier"].take_invite()
    th.join(15)
    identity, date = header(signed, "Identity"), header(signed, "Date")
    assert identity and date
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    me = s.getsockname()[1]
    inv = (f"INVITE sip:{DEST}@127.0.0.1:{recipe['verify']} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{uuid.uuid4().hex[:12]}\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:{ORIG}@127.0.0.1>;tag=a1\r\nTo: <sip:{DEST}@127.0.0.1>\r\n"
           f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 INVITE\r\nDate: {date}\r\nIdentity: {identity}\r\n"
           f"Contact: <sip:caller@127.0.0.1:{me}>\r\nContent-Length: 0\r\n\r\n")
    got: list[str] = []

    def uac() -> None:
        s.sendto(inv.encode(), ("127.0.0.1", recipe["verify"]))
        while True:
            status = s.recv(65535).decode().split("\r\n", 1)[0]
            if not status.startswith("SIP/2.0 1"):
                got.append(status)
                return

    th = threading.Thread(target=uac)
    th.start()
    relayed = recipe["pbx"].take_invite()
    th.join(15)
    s.close()
    assert got == ["SIP/2.0 200 OK"], got
    pai = header(relayed, "P-Asserted-Identity")
    assert pai and "verstat=TN-Validation-Passed" in pai, relayed
