"""core/x5u.py: the x5u URL rule shared by the verifier (dereferencing) and the signer (ATIS-1000074 §5.3.1)."""

from __future__ import annotations

import pytest

from stirshaken.core.errors import FetchError
from stirshaken.core.x5u import check_x5u_url


@pytest.mark.parametrize("url,problem", [
    ("http://cr.example.net/sp.pem", "x5u http://cr.example.net/sp.pem refused: not https (ATIS-1000074 §5.3.1; allow with --allow-http-x5u / [verification].allow_http_x5u)"),
    ("ftp://cr.example.net/sp.pem", "x5u ftp://cr.example.net/sp.pem refused: URL scheme 'ftp' is not https"),
    ("https://user@cr.example.net/sp.pem", "x5u https://user@cr.example.net/sp.pem refused: the URL must not contain userinfo"),
    ("https://cr.example.net/sp.pem?v=1", "x5u https://cr.example.net/sp.pem?v=1 refused: the URL must not contain a query component"),
    ("https://cr.example.net/sp.pem#x", "x5u https://cr.example.net/sp.pem#x refused: the URL must not contain a fragment"),
    ("https://cr.example.net/sp.pem;p=1", "x5u https://cr.example.net/sp.pem;p=1 refused: the URL must not contain path parameters"),
    ("https://cr.example.net:9443/sp.pem", "x5u https://cr.example.net:9443/sp.pem refused: port 9443 is not 443 or 8443 (allow with --allow-private-x5u / [verification].allow_private_x5u, lab only)"),
    ("https://127.0.0.1/sp.pem", "x5u https://127.0.0.1/sp.pem refused: host 127.0.0.1 is a private, loopback or reserved address (allow with --allow-private-x5u / [verification].allow_private_x5u, lab only)"),
    ("https://[::ffff:10.0.0.1]/sp.pem", "x5u https://[::ffff:10.0.0.1]/sp.pem refused: host ::ffff:10.0.0.1 is a private, loopback or reserved address (allow with --allow-private-x5u / [verification].allow_private_x5u, lab only)"),
    ("https://localhost/sp.pem", "x5u https://localhost/sp.pem refused: host localhost is localhost (allow with --allow-private-x5u / [verification].allow_private_x5u, lab only)"),
    ("https://cr.example.net/s p.pem", "Invalid 'info' URI: contains whitespace, control or non-ASCII characters"),
    ("", "Invalid 'info' URI: empty or longer than 2048 characters"),
])
def test_refused_with_the_rule_it_breaks(url: str, problem: str) -> None:
    with pytest.raises(FetchError) as e:
        check_x5u_url(url)
    assert e.value.description == problem and e.value.sip_code == 436


def test_accepted_and_the_named_relaxations() -> None:
    assert check_x5u_url("https://cr.example.net/sp.pem").hostname == "cr.example.net"
    check_x5u_url("https://cr.example.net:8443/sp.pem")
    check_x5u_url("http://cr.example.net/sp.pem", allow_http=True)
    check_x5u_url("https://127.0.0.1:9443/sp.pem", allow_private=True)
    check_x5u_url("http://127.0.0.1:8000/sp.pem", allow_http=True, allow_private=True)
    with pytest.raises(FetchError):  # each relaxation lifts only its own rule
        check_x5u_url("http://127.0.0.1:8000/sp.pem", allow_http=True)
    with pytest.raises(FetchError):
        check_x5u_url("http://cr.example.net/sp.pem", allow_private=True)


@pytest.mark.parametrize("url,lab", [
    ("http://127.0.0.1:18500/sp-chain.pem", True),
    ("https://localhost:8000/sp.pem", True),
    ("http://[::1]/sp.pem", True),
    ("http://127.0.0.1/sp.pem?x=1", False),  # a rule other than http/private/port: never relaxed
    ("http://10.0.0.1/sp.pem", False),  # private, not loopback: other hosts of that network could fetch it
    ("http://cr.example.net/sp.pem", False),
    ("https://cr.example.net/sp.pem", False),  # passes the rule anyway: nothing to relax
])
def test_lab_x5u_is_loopback_only(url: str, lab: bool) -> None:
    """The signing side signs a loopback x5u with a warning (no other host can fetch it: a lab set-up)."""
    from stirshaken.core.x5u import is_lab_x5u

    assert is_lab_x5u(url) is lab
