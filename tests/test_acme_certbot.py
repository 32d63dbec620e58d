"""An independent RFC 8555 client, certbot's ``acme`` library, obtains a certificate from our
STI-CA.  ``acme`` knows neither TNAuthList (RFC 9448 §3) nor tkauth-01 (RFC 9448 §5); the glue
below registers both and overrides ``new_order`` (certbot's library lets a client add identifier and
challenge types this way)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import josepy as jose
import pytest
from acme import challenges, client, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from stirshaken.core import certificates as certs
from stirshaken.core.tnauthlist import TNAuthList, from_certificate

from tests.test_pki_support import running_testbed, session_for

TNAUTHLIST = messages.IdentifierType.POSSIBLE_NAMES.get("TNAuthList") or messages.IdentifierType("TNAuthList")


class TKAuth01Response(challenges.ChallengeResponse):
    """RFC 9448 §5 challenge response: exactly ``{"atc": <token>}``."""

    typ = "tkauth-01"
    atc: str = jose.field("atc")


class TKAuth01(challenges.Challenge):
    """RFC 9448 §5 challenge: tkauth-type, token-authority, token."""

    typ = "tkauth-01"
    tkauth_type: str = jose.field("tkauth-type")
    token_authority: str = jose.field("token-authority", omitempty=True)
    token: str = jose.field("token", omitempty=True)


if "tkauth-01" not in challenges.ChallengeResponse.TYPES:
    challenges.ChallengeResponse.register(TKAuth01Response)
if "tkauth-01" not in challenges.Challenge.TYPES:
    challenges.Challenge.register(TKAuth01)


class TNClient(client.ClientV2):
    """``ClientV2`` whose order carries a TNAuthList identifier instead of CSR names."""

    def new_order_tnauthlist(self, csr_pem: bytes, value: str) -> messages.OrderResource:
        order = messages.NewOrder(identifiers=[messages.Identifier(typ=TNAUTHLIST, value=value)])
        response = self._post(self.directory["newOrder"], order)
        body = messages.Order.from_json(response.json())
        authzs = [self._authzr_from_response(self._post_as_get(u), uri=u) for u in body.authorizations]
        return messages.OrderResource(body=body, uri=response.headers.get("Location"), authorizations=authzs, csr_pem=csr_pem)


def certbot_flow(directory_url: str, ca_bundle: str, account_key: ec.EllipticCurvePrivateKey, token: str, value: str,
                 eab: tuple[str, str] | None = None) -> tuple[bytes, Any]:
    net = client.ClientNetwork(jose.JWKEC(key=account_key), alg=jose.ES256, verify_ssl=ca_bundle, user_agent="certbot-acme-test")  # type: ignore[arg-type]
    directory = messages.Directory.from_json(net.get(directory_url).json())
    acme = TNClient(directory, net)
    binding = None
    if eab is not None:  # RFC 8555 §7.3.4, as certbot's --eab-kid/--eab-hmac-key make it
        binding = messages.ExternalAccountBinding.from_data(
            account_public_key=jose.JWKEC(key=account_key.public_key()), kid=eab[0], hmac_key=eab[1], directory=directory
        )
    regr = acme.new_account(messages.NewRegistration.from_data(terms_of_service_agreed=True, external_account_binding=binding))
    assert regr.body.status == "valid"
    sp_key = ec.generate_private_key(ec.SECP256R1())
    csr_pem = certs.build_csr(sp_key, tnauthlist=TNAuthList.from_identifier(value)).public_bytes(serialization.Encoding.PEM)
    orderr = acme.new_order_tnauthlist(csr_pem, value)
    authz = orderr.authorizations[0]
    assert authz.body.identifier.typ == TNAUTHLIST
    challb = authz.body.challenges[0]
    assert isinstance(challb.chall, TKAuth01) and challb.chall.tkauth_type == "atc"
    acme.answer_challenge(challb, TKAuth01Response(atc=token))
    deadline = dt.datetime.now() + dt.timedelta(seconds=20)
    orderr = acme.poll_authorizations(orderr, deadline)
    orderr = acme.finalize_order(orderr, deadline)
    return orderr.fullchain_pem.encode(), sp_key


async def test_certbot_acme_obtains_certificate(tmp_path: Path) -> None:
    async with running_testbed(tmp_path) as tb:
        from stirshaken.pki.pa_client import PAClient
        from stirshaken.pki.pa import account_key_fingerprint

        for value in (TNAuthList.for_spc("1234").to_base64url(), TNAuthList.for_spc("1234").to_base64()):
            account_key = ec.generate_private_key(ec.SECP256R1())
            async with session_for(tb) as s:
                pa = PAClient(tb.urls["pa"], s)
                await pa.login(f"sp-{tb.ocn}", tb.sp_password)
                token = (await pa.spc_token(tb.ocn, value, account_key_fingerprint(account_key)))["token"]
            chain_pem, sp_key = await asyncio.to_thread(
                certbot_flow, tb.urls["ca"] + "/acme/directory", str(tb.tls.root), account_key, token, value  # type: ignore[union-attr]
            )
            chain = certs.load_certificates(chain_pem)
            assert len(chain) == 2
            assert chain[0].public_key().public_numbers() == sp_key.public_key().public_numbers()
            assert certs.check_profile(chain[0], "sp") == []
            tn = from_certificate(chain[0])
            assert tn is not None and tn[0] == TNAuthList.for_spc("1234")


async def test_certbot_acme_with_external_account_binding(tmp_path: Path) -> None:
    """certbot's ``acme`` library with EAB (RFC 8555 §7.3.4) against an STI-CA that requires it."""
    from stirshaken.pki.pa_client import PAClient
    from stirshaken.pki.ca import mint_eab_key
    from stirshaken.pki.pa import account_key_fingerprint

    async with running_testbed(tmp_path) as tb:
        tb.ca.config.eab_required = True  # type: ignore[union-attr]
        kid, hmac_key = mint_eab_key(tb.ca.db, spc=tb.ocn)  # type: ignore[union-attr]
        value = TNAuthList.for_spc(tb.ocn).to_base64url()
        account_key = ec.generate_private_key(ec.SECP256R1())
        async with session_for(tb) as s:
            pa = PAClient(tb.urls["pa"], s)
            await pa.login(f"sp-{tb.ocn}", tb.sp_password)
            token = (await pa.spc_token(tb.ocn, value, account_key_fingerprint(account_key)))["token"]
        directory = tb.urls["ca"] + "/acme/directory"
        with pytest.raises(Exception, match="externalAccountRequired"):
            await asyncio.to_thread(certbot_flow, directory, str(tb.tls.root), account_key, token, value)  # type: ignore[union-attr]
        chain_pem, sp_key = await asyncio.to_thread(
            certbot_flow, directory, str(tb.tls.root), account_key, token, value, (kid, hmac_key)  # type: ignore[union-attr]
        )
        chain = certs.load_certificates(chain_pem)
        assert chain[0].public_key().public_numbers() == sp_key.public_key().public_numbers()
        assert tb.ca.db.ca_eab_key(kid).account_id is not None  # type: ignore[union-attr]
