"""The curated public API of ``stirshaken`` (its ``__all__``) is pinned: adding or removing a name
is a decision, made here on purpose."""

from __future__ import annotations

import subprocess
import sys

import stirshaken

PINNED = {
    "__version__",
    "Signer", "PASSporT", "decode_unverified", "load_private_key", "generate_private_key",
    "Verifier", "VerifierConfig", "CallInfo", "VerificationResult", "PassportResult",
    "StirShakenError", "MissingIdentityError", "StaleDateError", "BadIdentityInfoError",
    "UnsupportedCredentialError", "InvalidIdentityError", "IdentityHeaderSyntaxError",
    "PassportFormatError", "PassportEncodingError", "PassportJSONError", "CompactFormError",
    "MissingClaimError", "InvalidClaimError", "UnsupportedAlgorithmError", "UnsupportedTypeError",
    "UnsupportedPPTError", "MissingHeaderParameterError", "X5UMismatchError", "SignatureError",
    "IdentityMismatchError", "CertificateError", "UntrustedCertificateError", "TNAuthListError",
    "FetchError", "ReplayError", "VERSTAT_PASSED", "VERSTAT_FAILED", "VERSTAT_NONE",
}


def test_exported_names_are_pinned():
    assert set(stirshaken.__all__) == PINNED
    for name in stirshaken.__all__:
        assert getattr(stirshaken, name) is not None, name


def test_exports_are_the_layer_objects():
    from stirshaken.core import errors, passport
    from stirshaken.vs import verifier

    assert stirshaken.Signer is passport.Signer and stirshaken.Verifier is verifier.Verifier
    assert stirshaken.decode_unverified is passport.decode
    assert issubclass(stirshaken.SignatureError, stirshaken.StirShakenError)
    assert stirshaken.SignatureError is errors.SignatureError


def test_unknown_name_is_an_attribute_error():
    try:
        stirshaken.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")


def test_version_is_the_package_version():
    from importlib.metadata import version

    assert stirshaken.__version__ == version("stirshaken")


def test_readme_library_example_uses_only_public_names(tmp_path):
    """Sign with the public API and decode the result without verifying (no network)."""
    code = (
        "import stirshaken as s;"
        "key = s.generate_private_key();"
        "signer = s.Signer(key, 'https://cr.example.net/sp.pem');"
        "hdr = signer.identity(orig='12155551212', dest=['12155551213'], attest='A');"
        "p = s.decode_unverified(hdr.split(';')[0]);"
        "print(p.orig_tn, p.attest)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["12155551212", "A"]


def test_cli_version_is_the_same_source():
    from pathlib import Path

    exe = Path(sys.executable).with_name("stirshaken")
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"stirshaken {stirshaken.__version__}"


def test_verifier_config_loads_no_http_client():
    """Building a configuration (e.g. to validate it) does not load aiohttp: the name comes from
    ``stirshaken.vs.config``, which imports the x5u fetcher only when a policy is derived."""
    code = (
        "import sys, stirshaken; stirshaken.VerifierConfig(max_age=30); "
        "print([m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'redis', 'sqlalchemy')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"
    import stirshaken
    from stirshaken.vs.verifier import VerifierConfig

    assert stirshaken.VerifierConfig is VerifierConfig
