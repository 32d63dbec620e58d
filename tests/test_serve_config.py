"""Configuration validation of ``stirshaken serve``, signing policy, and process behaviour
(one-line errors with exit 2, SIGTERM shutdown of a multi-worker server)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from stirshaken.serve.config import ConfigError, load_config, parse_address, parse_config
from stirshaken.serve.metrics import Metrics
from stirshaken.serve.signing import SigningError, SigningService

from tests.test_serve_support import FileServer, ServeProcess, make_pki, serve_command, serve_port, serve_toml


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_pki(tmp_path_factory.mktemp("cfgpki"))


def cfg(pki: Any, text: str) -> Any:
    return parse_config(__import__("tomllib").loads(text), pki.dir)


BASE = '[server]\nhttp = "127.0.0.1:8080"\n[signing]\nkey = "sp.key"\nx5u = "https://cr.example.net/sp.pem"\n'


@pytest.mark.parametrize("text,message", [
    ('[server]\nhttp = "127.0.0.1:8080"\nbogus = 1\n', "[server].bogus: unknown option"),
    ('[servr]\n', "unknown section [servr]"),
    ('[server]\nhttp = "localhost"\n', "[server].http"),
    ('[server]\nhttp = "10.0.0.300:80"\n', "is not an IP address"),
    ('[server]\nhttp = "127.0.0.1:70000"\n', "out of range"),
    ('[server]\nhttp = "127.0.0.1:80"\nworkers = 0\n', "[server].workers"),
    ('[server]\nhttp = "127.0.0.1:80"\nworkers = "2"\n', "[server].workers: must be an integer, got '2'"),
    ('[server]\nhttp = "127.0.0.1:80"\nshutdown_timeout = -5\n', "[server].shutdown_timeout: -5.0 is not between 0 and 3600 seconds"),
    ('[server]\nhttp = "127.0.0.1:80"\nsip_transaction_ttl = -1\n', "[server].sip_transaction_ttl: -1.0 is not between 0.5 and 3600 seconds"),
    ('[server]\n', "nothing to serve"),
    ('[server]\nhttp = "127.0.0.1:80"\n[signing]\nkey = "missing.key"\nx5u = "https://a/b"\n', "does not exist"),
    ('[server]\nhttp = "127.0.0.1:80"\n[signing]\nkey = "root.pem"\nx5u = "https://a/b"\n', "[signing].key"),
    ('[server]\nhttp = "127.0.0.1:80"\n[signing]\nkey = "sp.key"\nx5u = "ftp://a/b"\n', "[signing].x5u"),
    ('[server]\nsip_signing = "127.0.0.1:5060"\n', "[server].sip_signing is set but [signing] has no key"),
    ('[server]\nsip_verification = "127.0.0.1:5062"\n', "trust_anchors is empty"),
    (BASE + '[verification]\ntrust_anchors = ["nope.pem"]\n', "[verification].trust_anchors"),
    (BASE + '[verification]\nreject_codes = [404]\n', "reject_codes"),
    (BASE + '[[signing.tenant]]\nname = "x"\nkey = "sp.key"\nx5u = "https://a/b"\ntns = ["12a"]\n', "[signing.tenant.1].tns"),
    (BASE + '[[signing.tenant]]\nkey = "sp.key"\nx5u = "https://a/b"\n', "every tenant needs a name"),
    (BASE + '[[signing.tenant]]\nname = "x"\nkey = "sp.key"\nx5u = "https://a/b"\n[[signing.tenant.customer]]\nsources = ["nonsense"]\n', "sources"),
])
def test_config_errors(pki: Any, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as ei:
        cfg(pki, text)
    assert message in str(ei.value) and "\n" not in str(ei.value)


@pytest.mark.parametrize("text,start,end", [
    # fuzz findings (make fuzz, config): a path too long for the file system raised OSError out of
    # the validator (a traceback), and long values were dumped whole into the line
    ('[server]\nhttp = "127.0.0.1:80"\n[signing]\nkey = "' + "k" * 5000 + '"\nx5u = "https://a/b"\n',
     "[signing].key: key file '", "is not a usable path (File name too long)"),
    (BASE + '[verification]\ntrust_anchors = ["' + "t" * 5000 + '"]\n', "[verification].trust_anchors", "(File name too long)"),
    ('[server]\nhttp = "127.0.0.1:80"\nworkers = [' + "1, " * 3000 + "]\n", "[server].workers: must be an integer, got [1, 1", "..."),
    ('[server]\nhttp = "127.0.0.1:80"\n' + "o" * 3000 + " = 1\n", "[server].ooo", "...: unknown option (known: "),
    ("[" + "s" * 3000 + "]\n", "unknown section [sss", "...] (known: [server], [signing], [verification], [inventory], [records])"),
])
def test_long_values_give_a_short_line(pki: Any, text: str, start: str, end: str) -> None:
    with pytest.raises(ConfigError) as ei:
        cfg(pki, text)
    line = str(ei.value)
    assert line.startswith(start) and end in line and "\n" not in line and len(line) < 600, line


def test_config_full_example(pki: Any) -> None:
    c = cfg(pki, BASE.replace("8080", "8080\"\nsip_signing = \"127.0.0.1:5060\"\nsip_verification = \"[::1]:5062") + f"""
[[signing.tenant]]
name = "acme"
ocn = "1234"
key = "sp2.key"
x5u = "https://cr.example.net/acme.pem"
tns = ["+1 215", "1267*"]
[[signing.tenant.customer]]
name = "pbx1"
sources = ["10.0.0.0/24"]
tns = ["1215555"]
[verification]
trust_anchors = ["root.pem", "."]
crls = ["https://crl.example.net/x.crl"]
reject_codes = [428, 438]
authority_blocks = {{ "1234" = ["1215"] }}
""")
    assert c.server.sip_verification is not None and c.server.sip_verification.host == "::1"
    t = c.signing.tenants[0]
    assert t.spc == "1234" and t.tns == ("1215", "1267") and t.customers[0].tns == ("1215555",)
    assert c.verification.rejects(438) and not c.verification.rejects(436)
    assert "key=" not in repr(t)  # the private key never appears in reprs/logs


def test_parse_address() -> None:
    assert str(parse_address("[::1]:5060", "x")) == "[::1]:5060"
    assert parse_address("localhost:1", "x").host == "127.0.0.1"


def test_signing_policy(pki: Any) -> None:
    c = cfg(pki, BASE + """
[[signing.customer]]
name = "trunk"
sources = ["192.0.2.0/24"]
tns = ["1215555"]
[[signing.tenant]]
name = "acme"
spc = "5678"
key = "sp2.key"
x5u = "https://cr.example.net/acme.pem"
tns = ["1999"]
[[signing.tenant.customer]]
name = "edge"
tns = ["19995"]
""")
    svc = SigningService(c.signing)
    d = svc.default
    assert d is not None
    assert svc.attest_for(d, "12155551212", source_ip="192.0.2.7") == "A"  # known customer, own number
    assert svc.attest_for(d, "13105550000", source_ip="192.0.2.7") == "B"  # known customer, foreign number
    assert svc.attest_for(d, "12155551212", source_ip="198.51.100.1") == "C"  # unknown source
    assert svc.attest_for(d, "12155551212", customer="trunk") == "A"
    acme = svc.tenant_for("19995550000")
    assert acme.name == "acme" and svc.attest_for(acme, "19995550000") == "A" and svc.attest_for(acme, "19990000000") == "B"
    assert svc.tenant_for("12155551212").name == "default"
    assert svc.tenant_for("12155551212", "5678").name == "acme" and svc.tenant_for("1", "ACME").name == "acme"
    with pytest.raises(SigningError):
        svc.tenant_for("1", "unknown")
    ident = svc.sign(acme, orig="19995550000", dest=["2", "1"], attest="A")
    assert ident.endswith(";info=<https://cr.example.net/acme.pem>;alg=ES256;ppt=shaken")


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(serve_command() + args, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_cli_bad_config_exits_2_with_one_line(tmp_path: Path, pki: Any) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nhttp = "127.0.0.1:8080"\n[signing]\nkey = "/nonexistent/sp.key"\nx5u = "https://a/b"\n')
    r = run_cli(["--config", str(bad)], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("error: [signing].key")
    r = run_cli(["--config", str(tmp_path / "absent.toml")], tmp_path)
    assert r.returncode == 2 and "cannot read configuration" in r.stderr and "Traceback" not in r.stderr
    bad.write_text("[server\n")
    r = run_cli(["--config", str(bad)], tmp_path)
    assert r.returncode == 2 and "invalid TOML" in r.stderr


def test_port_in_use_exits_2(tmp_path: Path, pki: Any) -> None:
    import socket

    port = serve_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        conf = tmp_path / "c.toml"
        conf.write_text(f'[server]\nhttp = "127.0.0.1:{port}"\nworkers = 2\n[signing]\nkey = "{pki.sp_key}"\nx5u = "https://a/b"\n')
        r = run_cli(["--config", str(conf)], tmp_path)
    assert r.returncode == 2 and "address already in use" in r.stderr and "Traceback" not in r.stderr


def test_check_flag(tmp_path: Path, pki: Any) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(f'[server]\nhttp = "127.0.0.1:1"\n[signing]\nkey = "{pki.sp_key}"\nx5u = "https://a/b"\n')
    r = run_cli(["--config", str(conf), "--check"], tmp_path)
    assert r.returncode == 0 and "OK" in r.stdout


def test_workers_supervised_and_stopped_by_sigterm(tmp_path: Path, pki: Any) -> None:
    import os
    import signal
    import time

    x5u = FileServer(pki.dir)
    port = serve_port()
    p = ServeProcess(tmp_path, serve_toml(pki, x5u, http=port, workers=3), port)
    try:
        children = _children(p.proc.pid)
        assert len(children) == 3
        os.kill(children[0], signal.SIGKILL)  # a dying worker is replaced
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = _children(p.proc.pid)
            if len(now) == 3 and children[0] not in now:
                break
            time.sleep(0.1)
        else:
            pytest.fail("worker not restarted")
    finally:
        code = p.stop()
        x5u.close()
    assert code == 0
    assert not _children(p.proc.pid)
    log = p.log.read_text()
    assert '"worker stopped"' in log
    # the default HTTP engine is the lean protocol, on uvloop in every worker
    listening = [orjson.loads(l) for l in log.splitlines() if '"http listening"' in l]
    assert len(listening) >= 3 and all(r["engine"] == "fast" and r["loop"] == "uvloop" for r in listening), listening


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(d.name))
    return out


def test_metrics_render_merges_snapshots(tmp_path: Path) -> None:
    a, b = Metrics(str(tmp_path), 0), Metrics(str(tmp_path), 1)
    a.inc("stirshaken_signed_total", (("attest", "A"),))
    b.inc("stirshaken_signed_total", (("attest", "A"),), 2)
    b.observe("rest_sign", 0.0002)
    b.write_snapshot()
    text = a.render().decode()
    assert 'stirshaken_signed_total{attest="A"} 3' in text
    assert 'stirshaken_latency_seconds_count{op="rest_sign"} 1' in text
    assert "# TYPE stirshaken_latency_seconds histogram" in text


def test_load_config_relative_paths(tmp_path: Path, pki: Any) -> None:
    import shutil

    shutil.copy(pki.sp_key, tmp_path / "sp.key")
    (tmp_path / "s.toml").write_text(BASE)
    c = load_config(tmp_path / "s.toml")
    assert c.signing.default is not None and c.signing.default.key_path == str(tmp_path / "sp.key")


# --- one schema: every table a pydantic model ----------------------------------------------------

ACME = ('[signing.acme]\ndirectory_url = "https://ca.example/dir"\npa_url = "https://pa.example"\nusername = "u"\n'
        'password = "p"\nstate_dir = "st"\n')


@pytest.mark.parametrize("text,line", [
    ("[server]\nhttp = \"127.0.0.1:80\"\ncolour = 1\n", "[server].colour: unknown option (known: access_log, body_timeout, header_timeout, http, "),
    (BASE + "colour = 1\n", "[signing].colour: unknown option (known: acme, allow_http_x5u, allow_private_x5u, attest_header, "),
    (BASE + "name = \"x\"\n", "[signing].name: unknown option (known: "),  # the default signer is "default"
    (BASE + "key_path = \"sp.key\"\n", "[signing].key_path: unknown option (known: "),  # set by the loader only
    (BASE + "[[signing.tenant]]\nname = \"t\"\nkey = \"sp.key\"\nx5u = \"https://a/b\"\ncolour = 1\n",
     "[signing.tenant.1].colour: unknown option (known: acme, certificate, customer, default_attest, key, name, ocn, spc, tns, x5u)"),
    (BASE + "[[signing.customer]]\ncolour = 1\n", "[signing.customer.1].colour: unknown option (known: name, sources, tns)"),
    (BASE + "[[signing.tenant]]\nname = \"t\"\nkey = \"sp.key\"\nx5u = \"https://a/b\"\n[[signing.tenant.customer]]\n"
     "[[signing.tenant.customer]]\ncolour = 1\n", "[signing.tenant.1.customer.2].colour: unknown option (known: name, sources, tns)"),
    ('[server]\nhttp = "127.0.0.1:80"\n[signing]\nspc = "1234"\n' + ACME + "colour = 1\n", "[signing.acme].colour: unknown option (known: ca_bundle, "),
    ('[server]\nhttp = "127.0.0.1:80"\n[signing]\nspc = "1234"\n' + ACME + "where = \"x\"\n", "[signing.acme].where: unknown option"),
    (BASE + "[verification]\ncolour = 1\n", "[verification].colour: unknown option (known: allow_http_x5u, "),
    (BASE + "[colour]\n", "unknown section [colour] (known: [server], [signing], [verification], [inventory], [records])"),
    (BASE + "path = \"x\"\n", "[signing].path: unknown option"),
])
def test_every_table_refuses_unknown_keys(pki: Any, text: str, line: str) -> None:
    with pytest.raises(ConfigError) as ei:
        cfg(pki, text)
    msg = str(ei.value)
    assert msg.startswith(line) and "\n" not in msg and "pydantic" not in msg, msg


@pytest.mark.parametrize("text,line", [
    (BASE.replace("8080", "8080\"\nsip_signing = \"127.0.0.1:8080"), "[server]: address 127.0.0.1:8080 is used twice"),
    ('[server]\nhttp = "127.0.0.1:0"\nworkers = 2\n', "[server].workers: port 0 (ephemeral) needs workers = 1"),
    ('[server]\nhttp = "127.0.0.1:80"\nlog_level = "X"\n', "[server].log_level: must be 'DEBUG', 'INFO', 'WARNING' or 'ERROR', got 'X'"),
    ('[server]\nhttp = 80\n', "[server].http: must be a string, got 80"),
    ('server = 1\n', "[server]: must be a table, got 1"),
    (BASE + 'attest_header = "X Attest"\n', "[signing].attest_header: 'X Attest' is not a valid header name"),
    (BASE + 'country_code = "+1"\n', "[signing].country_code: '+1' is not digits"),
    (BASE + 'deterministic = 1\n', "[signing].deterministic: must be true or false, got 1"),
    (BASE + 'max_iat_skew = 0\n', "[signing].max_iat_skew: 0 is not between 1 and 86400"),
    (BASE + '[[signing.tenant]]\nname = "t"\nkey = "sp.key"\n', "[signing.tenant.1].x5u: the certificate URL (x5u) is required"),
    (BASE + '[[signing.tenant]]\nname = "t"\nkey = "sp.key"\nx5u = "https://a/b"\n[[signing.tenant]]\nname = "t"\nkey = "sp2.key"\n'
     'x5u = "https://a/c"\n', "[signing.tenant.2].name: tenant 't' defined twice"),
    (BASE + '[[signing.tenant]]\nname = "t"\nkey = "sp.key"\nx5u = "https://a/b"\n[[signing.tenant]]\nname = "u"\nkey = "acme.key"\n'
     'x5u = "https://a/c"\n', "[signing.tenant.2].key: key file '"),
    (BASE + '[[signing.customer]]\nsources = ["10.0.0.0/33"]\n', "[signing.customer.1].sources: '10.0.0.0/33' is not an IP address or network"),
    (BASE + '[records]\nlog = "yes"\n', "[records].log: must be true or false, got 'yes'"),
    (BASE + '[records]\nqueue_size = 0\n', "[records].queue_size: 0 is not between 1 and 1000000"),
    (BASE + '[records]\nnode = "edge 1"\n', "[records].node: must be at most 64 printable characters without spaces"),
    (BASE + '[records]\ndatabase = "mysql://u@h/db"\n', "[records].database: 'mysql' is not a supported database (use a SQLite path"),
    (BASE + '[records]\ndatabase = "postgresql+asyncpg://u@h/db"\n', "[records].database: 'postgresql+asyncpg' is not a supported database"),
    (BASE + '[records]\ndatabase = "sqlite://"\n', "[records].database: an in-memory SQLite database keeps no record (use a file"),
    (BASE + '[records]\ndatabase = "sqlite:///:memory:"\n', "[records].database: an in-memory SQLite database keeps no record (use a file"),
    (BASE + '[records]\ndatabase = ":memory:"\n', "[records].database: an in-memory SQLite database keeps no record (use a file"),
    (BASE + '[records]\ndatabase = "sqlite:///file:x?mode=memory&uri=true"\n', "[records].database: an in-memory SQLite database keeps no"),
    (BASE + '[records]\ndatabase = "sqlite:///file::memory:?cache=shared"\n', "[records].database: an in-memory SQLite database keeps no"),
    (BASE + '[records]\ncolour = 1\n', "[records].colour: unknown option (known: database, log, node, queue_size)"),
])
def test_one_line_errors_name_the_option(pki: Any, text: str, line: str) -> None:
    with pytest.raises(ConfigError) as ei:
        cfg(pki, text)
    msg = str(ei.value)
    assert msg.startswith(line) and "\n" not in msg, msg


def test_minimal_config_is_the_models_defaults(pki: Any) -> None:
    """Each default is written once, in the models: a minimal file gives the models' defaults, and
    the [signing] defaults are the library's (Signer, SigningService fallbacks)."""
    import inspect

    from stirshaken.core.passport import Signer
    from stirshaken.serve.config import Address, Config, CustomerConfig, ServerConfig, SigningConfig, VerificationConfig

    c = cfg(pki, '[server]\nhttp = "127.0.0.1:8080"\n')
    assert c.server == ServerConfig(http=Address("127.0.0.1", 8080))
    assert c.signing == SigningConfig() and not c.signing.enabled
    assert c.verification == VerificationConfig()
    assert c == Config(server=ServerConfig(http=Address("127.0.0.1", 8080)))
    assert SigningConfig().deterministic is inspect.signature(Signer).parameters["deterministic"].default
    # a minimal signer: everything but key and x5u from the model
    t = cfg(pki, BASE).signing.default
    assert t is not None and t.name == "default" and t.key_path == str(pki.dir / "sp.key")
    fields = type(t).model_fields
    for name in ("spc", "tns", "customers", "default_attest", "acme"):
        assert getattr(t, name) == fields[name].get_default(call_default_factory=True), name
    cust = cfg(pki, BASE + "[[signing.customer]]\n[[signing.customer]]\nname = \"x\"\n").signing.default.customers  # type: ignore[union-attr]
    assert [c.name for c in cust] == ["customer-1", "x"] and cust[0] == CustomerConfig(name="customer-1")


def test_models_are_frozen_and_library_constructible(pki: Any) -> None:
    from pydantic import ValidationError

    from stirshaken.core.keys import load_private_key
    from stirshaken.serve.config import ServerConfig, SigningConfig, TenantConfig

    with pytest.raises(ValidationError):
        ServerConfig(workers=0)
    with pytest.raises(ValidationError):
        ServerConfig(bogus=1)  # type: ignore[call-arg]
    s = ServerConfig(http="127.0.0.1:1")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        s.workers = 2  # type: ignore[misc]
    key = load_private_key(pki.dir / "sp.key")
    t = TenantConfig(name="t", key=key, x5u="https://a/b")
    svc = SigningService(SigningConfig(default=t, deterministic=True))
    d = svc.default
    assert d is not None and d.signer.deterministic
    one = svc.sign(d, orig="12155551212", dest=["1"], attest="A", iat=1, origid="00000000-0000-4000-8000-000000000000")
    assert one == svc.sign(d, orig="12155551212", dest=["1"], attest="A", iat=1, origid="00000000-0000-4000-8000-000000000000")
    assert "key=" not in repr(t) and "password=" not in repr(cfg(pki, '[server]\nhttp = "127.0.0.1:80"\n[signing]\nspc = "1234"\n' + ACME).signing.acme[0])


def test_reload_keeps_the_models(pki: Any) -> None:
    """SIGHUP: load_signers returns the same models with the keys read again."""
    from stirshaken.serve.signing import load_signers

    c = cfg(pki, BASE + '[[signing.tenant]]\nname = "t"\nkey = "sp2.key"\nx5u = "https://a/b"\n')
    again = load_signers(c.signing)
    assert type(again) is type(c.signing) and again.tenants[0].key_path == c.signing.tenants[0].key_path
    assert again.tenants[0].key is not c.signing.tenants[0].key
    assert again.default.key.private_numbers() == c.signing.default.key.private_numbers()  # type: ignore[union-attr]


def test_connection_limits_are_server_options(pki: Any) -> None:
    """The limits of issue 17 are [server] options with ConnectionLimits' defaults, and reach the engines."""
    from stirshaken.serve.limits import ConnectionLimits

    c = cfg(pki, BASE.replace('http = "127.0.0.1:8080"\n', 'http = "127.0.0.1:8080"\nheader_timeout = 2\nmax_connections_per_source = 0\n'))
    limits = ConnectionLimits.from_config(c)
    assert limits.header_timeout == 2.0 and limits.max_connections_per_source == 0
    assert limits.keepalive_timeout == ConnectionLimits().keepalive_timeout == c.server.keepalive_timeout
    with pytest.raises(ConfigError) as e:
        cfg(pki, BASE.replace('http = "127.0.0.1:8080"\n', 'http = "127.0.0.1:8080"\nmax_connection_buffer = 10\n'))
    assert str(e.value).startswith("[server].max_connection_buffer:") and "\n" not in str(e.value)


def test_records_options(pki: Any) -> None:
    """[records]: on by default (log only); a bare database path is a SQLite file beside the
    configuration; postgresql:// URLs name the psycopg 3 driver."""
    from stirshaken.serve.config import RecordsConfig

    c = cfg(pki, BASE)
    assert c.records == RecordsConfig() and c.records.log and c.records.enabled and c.records.url == ""
    assert not cfg(pki, BASE + "[records]\nlog = false\n").records.enabled
    r = cfg(pki, BASE + '[records]\ndatabase = "calls.db"\nqueue_size = 50\n').records
    assert r.database == str(pki.dir / "calls.db") and r.url == f"sqlite:///{pki.dir / 'calls.db'}" and r.queue_size == 50
    assert cfg(pki, BASE + '[records]\ndatabase = "postgresql://u@127.0.0.1:5432/test"\n').records.url == "postgresql+psycopg://u@127.0.0.1:5432/test"
    assert cfg(pki, BASE + '[records]\ndatabase = "sqlite:////tmp/x.db"\n').records.url == "sqlite:////tmp/x.db"
