"""Interop with Kamailio 5.6 + secsipid (peers/kamailio/kamailio.cfg, rewritten to our ports).

One Kamailio listens on three UDP ports:

* PX: a proxy that routes every INVITE through OUR SIP signing service (302 redirect model),
  copies the Identity header of the 302 into the INVITE (failure_route) and relays it to
* VS: Kamailio's own verification (secsipid_check_identity with chain check to our test root,
  plus orig/dest against From/R-URI): 200 "OK Identity Verified" means secsipid accepted our header;
* AS: Kamailio signs with secsipid_add_identity and relays to OUR SIP verification service, whose
  302 (P-Asserted-Identity with verstat) comes back to the caller.

These are ``interop`` tests: they fail when kamailio, its secsipid module or sipp is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.test_serve_support import DEST, ORIG, FileServer, ServeProcess, make_pki, serve_port, serve_toml
from tests.test_sip_service import UAC_VERIFY

PEERS = Path(__file__).resolve().parent / "peers"  # test PKI script, sipp scenarios, Kamailio configs
pytestmark = pytest.mark.interop

KAMAILIO_CFG = r"""#!KAMAILIO
debug=2
children=2
auto_aliases=no
disable_tcp=yes
listen=udp:127.0.0.1:@PX@
listen=udp:127.0.0.1:@VS@
listen=udp:127.0.0.1:@AS@
listen=udp:127.0.0.1:@PXD@
listen=udp:127.0.0.1:@PXK@

mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "secsipid.so"

modparam("secsipid", "expire", 60)
modparam("secsipid", "timeout", 3)
modparam("secsipid", "cache_dir", "@CACHE@")
modparam("secsipid", "cache_expire", 600)
modparam("secsipid", "libopt", "CertVerify=5")
modparam("secsipid", "libopt", "CertCAFile=@CA@")

request_route {
	if (!mf_process_maxfwd_header("10")) { sl_send_reply("483", "Too Many Hops"); exit; }
	if (is_method("ACK")) {
		if ($Rp == @PX@ || $Rp == @AS@) t_check_trans();
		exit;
	}
	if (!is_method("INVITE")) { sl_send_reply("405", "Method Not Allowed"); exit; }
	if ($Rp == @PX@) route(PX);
	if ($Rp == @AS@) route(AS);
	if ($Rp == @PXD@) { $avp(next) = "sip:127.0.0.1:@OURVS@"; route(PXD); }
	if ($Rp == @PXK@) { $avp(next) = "sip:127.0.0.1:@VS@"; route(PXD); }
	route(VS);
}

# --- diverted calls (docs/sip-integration.md, "Diverted calls"): the INVITE keeps its Identity,
# the STI-AS answers with a div PASSporT first, which is added; next hop $avp(next) ---
route[PXD] {
	$du = "sip:127.0.0.1:@SIGN@";
	t_on_failure("FOLLOW_302_DIV");
	if (!t_relay()) sl_reply_error();
	exit;
}
failure_route[FOLLOW_302_DIV] {
	if (t_is_canceled()) exit;
	if (t_check_status("302") && $T_rpl($hdr(Identity)) != $null) {
		if (!($T_rpl($hdr(Identity)) =~ ";ppt=div")) remove_hf("Identity");
		append_hf("Identity: $T_rpl($hdr(Identity))\r\n");
		if ($T_rpl($hdr(Date)) != $null && !is_present_hf("Date")) append_hf("Date: $T_rpl($hdr(Date))\r\n");
		$du = $avp(next);
		t_relay();
	}
}

# --- ask the stirshaken STI-AS (302 model), then continue with its Identity header ---
route[PX] {
	remove_hf("Identity");
	$du = "sip:127.0.0.1:@SIGN@";
	t_on_failure("FOLLOW_302");
	if (!t_relay()) sl_reply_error();
	exit;
}
failure_route[FOLLOW_302] {
	if (t_is_canceled()) exit;
	if (t_check_status("302") && $T_rpl($hdr(Identity)) != $null) {
		append_hf("Identity: $T_rpl($hdr(Identity))\r\n");
		$du = "sip:127.0.0.1:@VS@";
		t_relay();
	}
}

# --- Kamailio signs, stirshaken STI-VS verifies ---
route[AS] {
	$var(otn) = $(fU{s.rm,+});
	$var(dtn) = $(rU{s.rm,+});
	if (!secsipid_add_identity("$var(otn)", "$var(dtn)", "A", "", "@X5U@", "@KEY@")) {
		sl_send_reply("500", "Identity Signing Failed");
		exit;
	}
	$du = "sip:127.0.0.1:@OURVS@";
	if (!t_relay()) sl_reply_error();
	exit;
}

# --- Kamailio verifies (as peers/kamailio/kamailio.cfg) ---
route[VS] {
	if (!is_present_hf("Identity")) {
		append_to_reply("X-Identity-Result: missing\r\n");
		sl_send_reply("428", "Use Identity Header");
		exit;
	}
	secsipid_check_identity("");
	$var(rc) = $rc;
	if ($var(rc) < 0) {
		append_to_reply("X-Identity-Result: secsipid rc=$var(rc)\r\n");
		sl_send_reply("438", "Invalid Identity Header");
		exit;
	}
	$var(jws) = $(hdr(Identity){s.select,0,;});
	$var(payload) = $(var(jws){s.select,1,.}{s.decode.base64urlt});
	$var(otn) = $(var(payload){re.subst,/.*"orig":."tn":"([^"]*)".*/\1/});
	$var(dtn) = $(var(payload){re.subst,/.*"dest":."tn":."([^"]*)".*/\1/});
	if ($var(otn) != $(fU{s.rm,+}) || $var(dtn) != $(rU{s.rm,+})) {
		append_to_reply("X-Identity-Result: tn-mismatch orig=$var(otn) dest=$var(dtn)\r\n");
		sl_send_reply("438", "Invalid Identity Header");
		exit;
	}
	append_to_reply("X-Identity-Result: ok\r\n");
	append_to_reply("X-Identity-Echo: $hdr(Identity)\r\n");
	sl_send_reply("200", "OK Identity Verified");
	exit;
}
"""


def need(tool: str) -> str:
    exe = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None)
    assert exe, f"{tool} is not installed: run scripts/install-deps.sh"
    return exe


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    kam = need("kamailio")
    need("sipp")
    assert os.path.exists("/usr/lib/x86_64-linux-gnu/kamailio/modules/secsipid.so"), "kamailio-secsipid-modules missing"
    d = tmp_path_factory.mktemp("kamailio")
    pki = make_pki(d / "pki")
    x5u = FileServer(d / "pki")
    http, sign, verify = serve_port(), serve_port(), serve_port()
    serve = ServeProcess(d, serve_toml(pki, x5u, http=http, sip_signing=sign, sip_verification=verify, workers=1), http)
    ports = {"PX": serve_port(), "VS": serve_port(), "AS": serve_port(), "PXD": serve_port(), "PXK": serve_port()}
    (d / "cache").mkdir()
    cfg = KAMAILIO_CFG
    for k, v in {**{k: str(p) for k, p in ports.items()}, "SIGN": str(sign), "OURVS": str(verify), "CACHE": str(d / "cache"),
                 "CA": str(pki.root), "X5U": x5u.url("sp-chain.pem"), "KEY": str(pki.sp_key)}.items():
        cfg = cfg.replace(f"@{k}@", v)
    (d / "kamailio.cfg").write_text(cfg)
    log = open(d / "kamailio.log", "wb")
    proc = subprocess.Popen([kam, "-f", str(d / "kamailio.cfg"), "-DD", "-E", "-n", "2", "-m", "64", "-M", "8", "-P", str(d / "k.pid")],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("kamailio exited: " + (d / "kamailio.log").read_text()[-2000:])
            if f"127.0.0.1:{ports['PXK']}" in subprocess.run(["ss", "-lun"], capture_output=True, text=True).stdout:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        yield {"dir": d, "ports": ports, "http": http}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        assert serve.stop() == 0
        x5u.close()


def run_sipp(d: Path, port: int, scenario: Path, name: str, hdr: str, orig: str = ORIG) -> str:
    log = d / f"{name}.log"
    r = subprocess.run([need("sipp"), f"127.0.0.1:{port}", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(serve_port()), "-m", "1",
                        "-nostdin", "-timeout", "20", "-timeout_error", "-recv_timeout", "10000", "-trace_logs", "-log_file", str(log),
                        "-key", "orig_tn", orig, "-key", "dest_tn", DEST, "-key", "identity_hdr", hdr],
                       cwd=d, capture_output=True, text=True, timeout=40)
    lines = [l for l in log.read_text().splitlines() if "RESULT" in l] if log.exists() else []
    assert lines, r.stdout[-1500:]
    return lines[-1]


def test_kamailio_routes_through_our_signing_and_secsipid_accepts(setup: dict[str, Any]) -> None:
    line = run_sipp(setup["dir"], setup["ports"]["PX"], PEERS / "sipp/uac_identity.xml", "px", "X-Test: no-identity")
    assert "code=200" in line and re.search(r"result= *ok", line), line + (setup["dir"] / "kamailio.log").read_text()[-1500:]


def test_our_verification_accepts_kamailio_signed(setup: dict[str, Any]) -> None:
    scen = setup["dir"] / "uac_verify.xml"
    scen.write_text(UAC_VERIFY)
    line = run_sipp(setup["dir"], setup["ports"]["AS"], scen, "as", "X-Test: none")
    assert "code=302 verstat=TN-Validation-Passed" in line, line
    line = run_sipp(setup["dir"], setup["ports"]["AS"], scen, "as-plus", "X-Test: none", orig="+12155551212")
    assert "code=302 verstat=TN-Validation-Passed" in line, line


# --- issue 12 item 2: a diverted call (RFC 8946) through Kamailio -----------------------------

NEW = "12155559999"  # the target the call was diverted to

UAC_DIVERTED = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="diverted call">
  <send retrans="500"><![CDATA[

      INVITE sip:[dest_tn]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-dv-[pid]-[call_number]
      From: <sip:[orig_tn]@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[to_tn]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:[orig_tn]@[local_ip]:[local_port]>
      Max-Forwards: 70
      [identity_hdr]
      Diversion: <sip:[div_tn]@[remote_ip]>;reason=unconditional;counter=1
      Content-Length: 0

    ]]></send>
  <recv response="100" optional="true"/>
  <recv response="302" optional="true" next="ack"><action>
    <ereg regexp="^SIP/2.0 ([0-9]+)" search_in="msg" assign_to="d1,code"/>
    <ereg regexp="verstat=([A-Za-z-]+)" search_in="msg" check_it="false" assign_to="d2,verstat"/>
    <ereg regexp="X-Identity-Result: ([^\\r\\n]*)" search_in="msg" check_it="false" assign_to="d3,res"/>
  </action></recv>
  <recv response="438" next="ack"><action>
    <ereg regexp="^SIP/2.0 ([0-9]+)" search_in="msg" assign_to="d1,code"/>
    <ereg regexp="verstat=([A-Za-z-]+)" search_in="msg" check_it="false" assign_to="d2,verstat"/>
    <ereg regexp="X-Identity-Result: ([^\\r\\n]*)" search_in="msg" check_it="false" assign_to="d3,res"/>
  </action></recv>
  <label id="ack"/>
  <send><![CDATA[

      ACK sip:[dest_tn]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-dv-[pid]-[call_number]
      From: <sip:[orig_tn]@[local_ip]:[local_port]>;tag=[pid]T[call_number]
      To: <sip:[to_tn]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]></send>
  <nop><action><log message="RESULT code=[$code] verstat=[$verstat] res=[$res] [$d1] [$d2] [$d3]"/></action></nop>
</scenario>
"""


def test_diverted_call_through_kamailio(setup: dict[str, Any]) -> None:
    """A call signed for DEST, diverted to NEW (Diversion header; R-URI and To name NEW, so the
    SHAKEN dest binds to the call only through a div PASSporT), routed by Kamailio through our
    STI-AS with the "Diverted calls" recipe: the INVITE keeps its SHAKEN Identity and gains our
    div PASSporT.  Our STI-VS then verifies the chain (passed).  Kamailio's own VS (secsipid
    1.2.0) has no div support: it verifies the first Identity, the SHAKEN one, which passes
    secsipid, and its recipe then compares that PASSporT's dest with the R-URI, the new target:
    438 tn-mismatch, the answer of a verifier that cannot follow a div PASSporT."""
    import orjson
    import urllib.request

    body = {"signingRequest": {"attest": "A", "dest": {"tn": [DEST]}, "iat": int(time.time()), "orig": {"tn": ORIG}}}
    req = urllib.request.Request(f"http://127.0.0.1:{setup['http']}/stir/v1/signing", data=orjson.dumps(body),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        shaken = orjson.loads(r.read())["signingResponse"]["identity"]
    d = setup["dir"]
    scen = d / "uac_diverted.xml"
    scen.write_text(UAC_DIVERTED)

    def call(port: int, name: str) -> str:
        log = d / f"{name}.log"
        r = subprocess.run([need("sipp"), f"127.0.0.1:{port}", "-sf", str(scen), "-i", "127.0.0.1", "-p", str(serve_port()), "-m", "1",
                            "-nostdin", "-timeout", "20", "-timeout_error", "-recv_timeout", "10000", "-trace_logs", "-log_file", str(log),
                            "-key", "orig_tn", ORIG, "-key", "dest_tn", NEW, "-key", "to_tn", NEW, "-key", "div_tn", DEST,
                            "-key", "identity_hdr", f"Identity: {shaken}"],
                           cwd=d, capture_output=True, text=True, timeout=40)
        lines = [l for l in log.read_text().splitlines() if "RESULT" in l] if log.exists() else []
        assert lines, r.stdout[-1500:] + (d / "kamailio.log").read_text()[-1500:]
        return lines[-1]

    line = call(setup["ports"]["PXD"], "pxd")
    assert "code=302 verstat=TN-Validation-Passed" in line, line + (d / "kamailio.log").read_text()[-1500:]
    line = call(setup["ports"]["PXK"], "pxk")
    assert "code=438" in line and f"res=tn-mismatch orig={ORIG} dest={DEST}" in line, line
