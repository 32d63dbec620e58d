"""The TOML configuration: :func:`stirshaken.serve.config.load_config` (TOML → the pydantic
schema of ``serve/config.py`` and ``vs/config.py``), ``check_config``, and the library's
``VerifierConfig`` for the ``[verification]`` table.

The input is written as the configuration file into the material directory, where the files it
may name exist (``sp.key``, ``root.pem``, ``inter.crl``, ``sp-chain.pem``).  Properties: only
:class:`ConfigError`, one line naming the option; a loaded configuration builds its signing
service and verification policies without error; ``VerifierConfig`` rejects a table with a
pydantic ``ValidationError`` that :func:`describe_error` turns into one line.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from pydantic import ValidationError

from fuzz.harness import Finding, Target, one_line, passes, typed
from fuzz.material import Material, material, serve_toml
from stirshaken.core.errors import StirShakenError
from stirshaken.serve.config import ConfigError, check_config, load_config
from stirshaken.serve.signing import KeyMaterialError, SigningService
from stirshaken.vs.config import VerifierConfig, describe_error

ROOT = Path(__file__).resolve().parents[2]


def check(data: bytes) -> None:
    m = material()
    path = m.dir / "fuzz.toml"
    path.write_bytes(data)
    cfg = typed(ConfigError, load_config, path)
    if cfg is not None:
        if passes(ConfigError, check_config, cfg):
            cfg.verification.policy()
            cfg.verification.x5u_policy()
            if cfg.signing.enabled:
                typed((KeyMaterialError, StirShakenError), SigningService, cfg.signing, inventory_cfg=cfg.inventory)
    try:
        table = tomllib.loads(data.decode("utf-8")).get("verification")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return
    if isinstance(table, dict):
        try:
            VerifierConfig.model_validate(table, context={"base": m.dir})
        except ValidationError as exc:
            text = describe_error(exc, "[verification]", model=VerifierConfig)
            if "\n" in text or not text.strip():
                raise Finding(f"describe_error is not one line: {text[:300]!r}") from exc
            one_line(Exception(text))


def seeds(m: Material) -> list[bytes]:
    out = [m.config_path.read_bytes(),
           serve_toml(m.dir, extra_signing='deterministic = true\ncountry_code = "1"\nnational_length = 10\n'
                                           'customer_header = "X-Customer"\ntenant_header = "X-Tenant"',
                      extra_verification='authority_blocks = { "1234" = ["1215"] }\ncache_min_ttl = 5\ncache_max_ttl = 10\n'
                                         'reject = [438, 437]\nredis_url = "redis://127.0.0.1:6379/0"').encode(),
           b'[server]\nhttp = "[::1]:8080"\n[inventory]\n']
    for doc in (ROOT / "docs" / "configuration.md", ROOT / "README.md"):
        if doc.exists():  # the documented examples
            for block in re.findall(r"```toml\n(.*?)```", doc.read_text(), re.S):
                out.append(block.encode())
    return out


TARGET = Target(
    name="config",
    check=check,
    seeds=seeds,
    tokens=(b"[server]\n", b"[signing]\n", b"[[signing.tenant]]\n", b"[verification]\n", b"[inventory]\n", b"[signing.acme]\n",
            b" = ", b'"', b"'", b"[", b"]", b"{", b"}", b"true", b"-1", b"1e9", b"0x10", b"\n", b'"sp.key"', b'"root.pem"',
            b'"inter.crl"', b'"https://cr.example.net/x.pem"', b'"127.0.0.1:0"', b"1999-01-01T00:00:00Z"),
    max_len=4096,
    examples=200,
)
