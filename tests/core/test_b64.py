"""core/b64.py: strict base64url (RFC 7515 §2, RFC 4648 §5)."""

from __future__ import annotations

import base64
import string
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from stirshaken.core import certificates as C
from stirshaken.core import passport as pp
from stirshaken.core.b64 import b64url_decode, b64url_decode_valid, b64url_encode
from stirshaken.core.errors import StirShakenError
from stirshaken.core.identity import TOKEN, IdentityHeader, parse_identity, parse_identity_headers
from stirshaken.core.tn import TNError, canonicalize_tn
from stirshaken.core.tnauthlist import SPC, TN, TNAuthList, TNRange
from tests import _core_support as V


FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


digits = st.text(alphabet="0123456789", min_size=1, max_size=15)


b64url_text = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=60)


@FUZZ
@given(st.one_of(st.text(max_size=80), st.binary(max_size=80), b64url_text))
def test_fuzz_b64url_decode(value):
    fast = b64url_decode_valid(value)  # the hot path: bytes, or None to let b64url_decode name the defect
    try:
        raw = b64url_decode(value)
    except StirShakenError:
        assert fast is None
        return
    assert fast == raw
    # whatever is accepted is canonical: re-encoding gives the same text back
    text = value.decode() if isinstance(value, bytes) else value
    assert b64url_encode(raw) == text
