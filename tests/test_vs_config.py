"""One configuration schema: ``VerifierConfig`` is both the library's configuration and the
``[verification]`` table of ``stirshaken serve`` (same names, types and defaults); one-line
errors naming the option; ``serve --check`` loads every trust / CRL file."""

from __future__ import annotations

import datetime as dt
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from stirshaken.core.certificates import create_crl, create_root, pem
from stirshaken.serve.config import ConfigError, VerificationConfig, check_config, parse_config
from stirshaken.vs.config import VerifierConfig
from stirshaken.vs.verifier import Verifier
from stirshaken.vs.x5u import X5UPolicy

from tests.test_serve_support import make_pki, serve_command

HTTP = '[server]\nhttp = "127.0.0.1:8080"\n'


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    d = tmp_path_factory.mktemp("vscfg")
    p = make_pki(d)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = create_root(other_key, cn="STI-PA CRL signer")
    (d / "crl-signer.pem").write_bytes(pem([other]))
    (d / "signer.crl").write_bytes(create_crl(other, other_key, [(1, dt.datetime.now(dt.timezone.utc))]).public_bytes(Encoding.PEM))
    (d / "garbage.crl").write_bytes(b"not a CRL\n")
    (d / "garbage.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    return p


def verification(pki: Any, body: str) -> VerificationConfig:
    return parse_config(tomllib.loads(HTTP + "[verification]\n" + body), pki.dir).verification


def test_empty_table_equals_library_defaults(pki: Any) -> None:
    """One source of defaults: an empty [verification] is VerifierConfig() field by field."""
    from_toml = verification(pki, "").verifier_config()
    library = VerifierConfig()
    assert set(VerifierConfig.model_fields) == set(type(from_toml).model_fields)
    for name in VerifierConfig.model_fields:
        assert getattr(from_toml, name) == getattr(library, name), name
    assert from_toml == library
    # the x5u timeout in particular (was 3.0 s from TOML, 4.0 s from the library)
    assert from_toml.fetch_timeout == library.fetch_timeout == X5UPolicy().fetch_timeout
    assert from_toml.x5u_policy() == X5UPolicy() and library.policy() == from_toml.policy()


def test_every_library_option_is_a_toml_option() -> None:
    assert set(VerifierConfig.model_fields) <= set(VerificationConfig.model_fields)


def test_trust_options_reach_the_verifier(pki: Any) -> None:
    v = verification(pki, 'trust_anchors = ["root.pem"]\ncrl_signers = ["crl-signer.pem"]\ncrls = ["signer.crl"]\n'
                          'ca_list = "https://pa.example/ca-list"\nca_list_trust = ["ca-root.pem"]\nx5u_timeout = 2.5\n')
    assert v.crl_signers == (str(pki.dir / "crl-signer.pem"),)  # resolved against the file's directory
    assert v.ca_list_trust == (str(pki.dir / "ca-root.pem"),) and v.ca_list == "https://pa.example/ca-list"
    assert v.fetch_timeout == 2.5  # the older name still works
    check_config(parse_config(tomllib.loads(HTTP + "[verification]\ntrust_anchors = [\"root.pem\"]\n"), pki.dir))
    verifier = Verifier(v.verifier_config())
    try:
        assert len(verifier.trust.crl_signers) == 1
        assert "STI-PA CRL signer" in verifier.trust.crl_signers[0].subject.rfc4514_string()
        assert len(verifier.trust.ca_list_roots) == 1 and verifier.config.ca_list == "https://pa.example/ca-list"
        assert verifier.x5u_policy.fetch_timeout == 2.5 and len(verifier.crls.crls) == 1
    finally:
        verifier.close()


@pytest.mark.parametrize("body,line", [
    ("bogus = 1\n", "[verification].bogus: unknown option (known: "),
    ('max_age = "60"\n', "[verification].max_age: must be an integer, got '60'"),
    ("max_age = 0\n", "[verification].max_age: must be at least 1, got 0"),
    ("require_date = 1\n", "[verification].require_date: must be true or false, got 1"),
    ('reason_protocol = "X"\n', "[verification].reason_protocol: must be 'STIR' or 'SIP', got 'X'"),
    ('crl_signers = ["absent.pem"]\n', "[verification].crl_signers: "),
    ('ca_list = "https://pa.example/ca-list"\n', "[verification].ca_list_trust: required with ca_list"),
    ("crls = [1]\n", "[verification].crls[0]: must be a string, got 1"),
    ('authority_blocks = { "1234" = ["12a"] }\n', "[verification].authority_blocks: 1234: '12a' is not a telephone number"),
    ('redis = "http://x"\n', "[verification].redis: 'http://x' is not a redis:// URL"),
    ("reject_codes = [404]\n", "[verification].reject_codes[0]: must be 403, 428, 436, 437 or 438, got 404"),
    ("fetch_timeout = 5\nx5u_timeout = 3\n", "[verification].x5u_timeout: give only one of fetch_timeout and x5u_timeout"),
    ('crls = ["ftp://x/crl.pem"]\n', "[verification].crls: 'ftp://x/crl.pem' is neither a file nor an http(s) URL"),
    ('trust_anchors = ["https://x/root.pem"]\n', "[verification].trust_anchors: 'https://x/root.pem' is a URL; a local file is expected"),
    # fuzz findings (make fuzz, config): OSError of a path too long, long values cut
    ('crl_signers = ["' + "c" * 5000 + '"]\n', "[verification].crl_signers: '"),
    ('redis = "' + "r" * 5000 + '"\n', "[verification].redis: 'rrrrrrrrrrrrrrrrrr"),
])
def test_one_line_errors(pki: Any, body: str, line: str) -> None:
    with pytest.raises(ConfigError) as ei:
        verification(pki, body)
    msg = str(ei.value)
    assert msg.startswith(line) and "\n" not in msg and "pydantic" not in msg and len(msg) < 600, msg


def test_library_refuses_unknown_options_and_is_frozen() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        VerifierConfig(trust_anchor=["x"])  # type: ignore[call-arg]
    c = VerifierConfig(trust_anchors=["a.pem"])
    assert c.trust_anchors == ("a.pem",)
    with pytest.raises(ValidationError):
        c.max_age = 5  # type: ignore[misc]


@pytest.mark.parametrize("body,line", [
    ('trust_anchors = ["garbage.pem"]\n', "error: [verification].trust_anchors: "),
    ('trust_anchors = ["root.pem"]\ncrls = ["garbage.crl"]\n', "error: [verification].crls: "),
    ('trust_anchors = ["root.pem"]\ncrl_signers = ["garbage.pem"]\n', "error: [verification].crl_signers: "),
    ('trust_anchors = ["emptydir"]\n', "error: [verification].trust_anchors: "),
])
def test_check_loads_trust_files(pki: Any, tmp_path: Path, body: str, line: str) -> None:
    conf = tmp_path / "c.toml"
    (tmp_path / "emptydir").mkdir(exist_ok=True)
    conf.write_text(HTTP.replace("8080", "1") + f"[verification]\n{body}")
    for name in ("root.pem", "garbage.pem", "garbage.crl"):
        (tmp_path / name).write_bytes((pki.dir / name).read_bytes())
    r = subprocess.run(serve_command() + ["--config", str(conf), "--check"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith(line) and r.stderr.strip().count("\n") == 0, r.stderr
    assert "Traceback" not in r.stderr
    good = HTTP.replace("8080", "1") + '[verification]\ntrust_anchors = ["root.pem"]\n'
    conf.write_text(good)
    r = subprocess.run(serve_command() + ["--config", str(conf), "--check"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr


def _doc_default(value: Any) -> str:
    """How docs/configuration.md writes a model default."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == () or value == {}:
        return "`[]`" if value == () else "`{}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`"


def _doc_rows(heading: str) -> dict[str, str]:
    """``option -> "type, default"`` of the table under ``heading`` in docs/configuration.md (each
    option once)."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    assert text.count("\n" + heading) == 1, heading
    section = text.split("\n" + heading, 1)[1].split("\n#", 1)[0]
    found = re.findall(r"^\| `([a-z_0-9]+)` \| ([^|]+?) \|", section, re.MULTILINE)
    rows = dict(found)
    assert len(rows) == len(found), f"an option is listed twice under {heading}"
    return rows


def _check_rows(heading: str, model: Any, options: set[str]) -> None:
    """The table under ``heading`` lists exactly ``options`` (as written in the file), each with
    ``model``'s default: a literal default must be the model's; "required" only where the model
    has none (no default, a validated empty one, or ""/None)."""
    rows = _doc_rows(heading)
    assert set(rows) == options, (heading, sorted(set(rows) ^ options))
    by_key = {f.validation_alias if isinstance(f.validation_alias, str) else name: f for name, f in model.model_fields.items()}
    for key, cell in rows.items():
        info = by_key.get(key)
        if info is None:  # a synonym (ocn) or an option the loader turns into another field
            continue
        if info.is_required():
            continue
        default = info.get_default(call_default_factory=True)
        if cell.endswith("required") or "required (default:" in cell:
            assert info.validate_default or default in ("", None), (heading, key, cell, default)
            continue
        assert cell.endswith(", " + _doc_default(default)), (heading, key, cell, default)


def test_docs_table_shows_the_model() -> None:
    """Every [verification] option is documented once, with the model's own default."""
    rows = _doc_rows("## `[verification]`")
    fields = VerificationConfig.model_fields
    assert set(rows) == set(fields)
    for name, info in fields.items():
        default = info.get_default(call_default_factory=True)
        assert rows[name].endswith(", " + _doc_default(default)), (name, rows[name], default)


def test_docs_tables_show_every_serve_model() -> None:
    """[server], the signer options, [[...customer]], the [signing]-only options and
    [signing.acme]: each table lists every option of its model once, with the model's default."""
    from stirshaken.serve.config import _SIGNER_KEYS, AcmeSettings, CustomerConfig, ServerConfig, SigningConfig, TenantConfig, _toml_keys

    _check_rows("## `[server]`", ServerConfig, _toml_keys(ServerConfig))
    _check_rows("## `[signing]` and `[[signing.tenant]]`", TenantConfig, _toml_keys(TenantConfig))
    _check_rows("### `[[...customer]]`", CustomerConfig, _toml_keys(CustomerConfig))
    _check_rows("### Only in `[signing]`", SigningConfig, _toml_keys(SigningConfig) - _SIGNER_KEYS - {"tenant"})
    _check_rows("## `[signing.acme]`", AcmeSettings, _toml_keys(AcmeSettings))


def test_bad_trust_file_named_in_plain_words(tmp_path: Path) -> None:
    """A bad file in a trust-anchor directory is named; the problem is said without cryptography's
    FAQ URL or the ASN.1 parser's debug text."""
    from stirshaken.vs.config import OptionError, check_files

    key = ec.generate_private_key(ec.SECP256R1())
    anchors = tmp_path / "anchors"
    anchors.mkdir()
    (anchors / "a-root.pem").write_bytes(pem([create_root(key)]))
    (anchors / "junk.pem").write_bytes(b"garbage\n")
    (tmp_path / "key.pem").write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    (tmp_path / "cert.crl").write_bytes(pem([create_root(key)]))
    cases = [
        (VerifierConfig(trust_anchors=[str(anchors)]), f"trust_anchors: {anchors / 'junk.pem'}: text without a PEM block, not a certificate"),
        (VerifierConfig(trust_anchors=[str(tmp_path / "key.pem")]), f"trust_anchors: {tmp_path / 'key.pem'}: a private key, not a certificate"),
        (VerifierConfig(crls=[str(tmp_path / "cert.crl")]), f"crls: {tmp_path / 'cert.crl'}: a certificate, not a CRL"),
    ]
    for cfg, expected in cases:
        with pytest.raises(OptionError) as ei:
            check_files(cfg)
        msg = str(ei.value)
        assert expected in msg and "http" not in msg and "ParseError" not in msg, msg
