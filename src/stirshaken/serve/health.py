"""What ``GET /healthz`` reports: ``ok``, or ``degraded`` with the reasons.

A worker runs :meth:`Health.run` in the background: every ``interval`` seconds it pings the
verification Redis (``[verification] redis``, when configured), reads the expiry of the known
signing certificates (:meth:`SigningService.certificate_expiry`: certificate files, ACME
certificates, certificates served at a checked x5u) and asks the verifier about its trust sources
(CRLs, CA list: ``trust_problems``, docs/requirements.md VS-10) and asks the per-call records
whether their database is down (:attr:`stirshaken.serve.records.Records.problem`), and whether
stderr is read (:attr:`stirshaken.serve.logoutput.LogOutput.problem`).  The result is kept, so
``/healthz`` answers from memory; each change of state is logged once (``WARNING`` on becoming
degraded or on new reasons, ``INFO`` on recovery).  A certificate expiring within ``[signing]
expiry_warning_days`` makes the service degraded, and (``log_expiry``: worker 0) is logged once a
day as well.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from stirshaken.serve.config import SigningConfig

__all__ = ["EXPIRY_WARNING", "Health"]

log = logging.getLogger("stirshaken.serve")

#: seconds; a signing certificate expiring sooner than this makes the service ``degraded``
#: (``[signing] expiry_warning_days``, whose default this is)
EXPIRY_WARNING = SigningConfig.model_fields["expiry_warning_days"].default * 86400.0
#: seconds between two log lines about the same expiring certificates
EXPIRY_LOG_INTERVAL = 86400.0


class Health:
    """The degradation reasons of one worker.

    ``redis_url``: the Redis to ping (``None``: none configured); ``certificate_expiry``: returns
    ``{tenant: notAfter (Unix seconds)}``; ``expiry_warning``: seconds before notAfter from which
    a certificate is reported; ``log_expiry``: also log those once every
    :data:`EXPIRY_LOG_INTERVAL`; ``interval``: seconds between checks; ``timeout``: seconds a
    Redis ping may take before Redis counts as unreachable; ``trust_problems``: returns the
    verifier's trust problems, one line each (:meth:`CredentialSource.trust_problems`); ``records``: an
    object whose ``problem`` is a reason or None (:class:`stirshaken.serve.records.Records`);
    ``log_output``: the same for stderr (:class:`stirshaken.serve.logoutput.LogOutput`).
    """

    def __init__(self, *, redis_url: str | None = None, certificate_expiry: Callable[[], dict[str, float]] | None = None,
                 expiry_warning: float = EXPIRY_WARNING, log_expiry: bool = False, interval: float = 2.0, timeout: float = 1.0,
                 trust_problems: Callable[[], list[str]] | None = None, records: Any = None, log_output: Any = None):
        self.redis_url = redis_url
        self.records = records
        self.log_output = log_output
        self.certificate_expiry = certificate_expiry
        self.trust_problems = trust_problems
        self.expiry_warning = expiry_warning
        self.log_expiry = log_expiry
        self.interval = interval
        self.timeout = timeout
        self.reasons: list[str] = []
        self._client: Any = None
        self._expiry_logged = -EXPIRY_LOG_INTERVAL  # monotonic time of the last expiry log line

    @property
    def status(self) -> str:
        """``"ok"`` or ``"degraded"``."""
        return "degraded" if self.reasons else "ok"

    async def _redis_reason(self) -> str | None:
        if not self.redis_url:
            return None
        if self._client is None:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(self.redis_url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout)
        try:
            await asyncio.wait_for(self._client.ping(), self.timeout * 2)
        except Exception as exc:  # noqa: BLE001 - any failure means unreachable
            return f"redis unreachable: {type(exc).__name__}: {str(exc)[:120]}"
        return None

    def _certificate_reasons(self, now: float) -> list[str]:
        if self.certificate_expiry is None:
            return []
        try:
            expiry = self.certificate_expiry() or {}
        except Exception:  # noqa: BLE001
            return []
        out = []
        for tenant, not_after in sorted(expiry.items()):
            left = not_after - now
            if left <= 0:
                out.append(f"signing certificate of {tenant!r} expired")
            elif left < self.expiry_warning:
                out.append(f"signing certificate of {tenant!r} expires in {left / 86400:.1f} days")
        if out and self.log_expiry:
            mono = time.monotonic()
            if mono - self._expiry_logged >= EXPIRY_LOG_INTERVAL:
                self._expiry_logged = mono
                for line in out:
                    log.warning(line, extra={"expiry_warning_days": self.expiry_warning / 86400})
        return out

    async def check(self) -> list[str]:
        """Run every check once, keep and return the reasons; logs a change of state."""
        reasons = self._certificate_reasons(time.time())
        if self.trust_problems is not None:
            try:
                reasons.extend(self.trust_problems())
            except Exception as exc:  # noqa: BLE001 - health must answer whatever happens
                reasons.append(f"trust state unknown: {type(exc).__name__}")
        r = await self._redis_reason()
        if r:
            reasons.insert(0, r)
        for source in (self.records, self.log_output):
            problem = source.problem if source is not None else None
            if problem:
                reasons.append(problem)
        if reasons != self.reasons:
            if reasons:
                log.warning("health degraded", extra={"reasons": reasons})
            else:
                log.info("health ok again", extra={"was": self.reasons})
        self.reasons = reasons
        return reasons

    async def run(self) -> None:
        """Check every ``interval`` seconds until cancelled."""
        try:
            while True:
                await self.check()
                await asyncio.sleep(self.interval)
        finally:
            if self._client is not None:
                try:
                    await self._client.aclose()
                except Exception:  # noqa: BLE001
                    pass
