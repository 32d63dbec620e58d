"""What ``GET /healthz`` reports: ``ok``, or ``degraded`` with the reasons.

A worker runs :meth:`Health.run` in the background: every ``interval`` seconds it pings the
verification Redis (``[verification] redis``, when configured), reads the expiry of the known
signing certificates (ACME-managed signers, :meth:`SigningService.certificate_expiry`) and asks
the per-call records whether their database is down (:attr:`stirshaken.serve.records.Records.problem`).  The
result is kept, so ``/healthz`` answers from memory; each change of state is logged once
(``WARNING`` on becoming degraded or on new reasons, ``INFO`` on recovery).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

__all__ = ["EXPIRY_WARNING", "Health"]

log = logging.getLogger("stirshaken.serve")

#: seconds; a signing certificate expiring sooner than this makes the service ``degraded``
EXPIRY_WARNING = 7 * 86400


class Health:
    """The degradation reasons of one worker.

    ``redis_url``: the Redis to ping (``None``: none configured); ``certificate_expiry``: returns
    ``{tenant: notAfter (Unix seconds)}``; ``interval``: seconds between checks; ``timeout``:
    seconds a Redis ping may take before Redis counts as unreachable; ``records``: an object whose
    ``problem`` is a reason or None (:class:`stirshaken.serve.records.Records`).
    """

    def __init__(self, *, redis_url: str | None = None, certificate_expiry: Callable[[], dict[str, float]] | None = None,
                 interval: float = 2.0, timeout: float = 1.0, records: Any = None):
        self.redis_url = redis_url
        self.records = records
        self.certificate_expiry = certificate_expiry
        self.interval = interval
        self.timeout = timeout
        self.reasons: list[str] = []
        self._client: Any = None

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
            elif left < EXPIRY_WARNING:
                out.append(f"signing certificate of {tenant!r} expires in {left / 86400:.1f} days")
        return out

    async def check(self) -> list[str]:
        """Run every check once, keep and return the reasons; logs a change of state."""
        reasons = self._certificate_reasons(time.time())
        r = await self._redis_reason()
        if r:
            reasons.insert(0, r)
        problem = self.records.problem if self.records is not None else None
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
