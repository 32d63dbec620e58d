"""The web inspector of ``stirshaken serve``: ``GET /inspect`` shows a form to paste an Identity
header value, a SIP request or an ATIS-1000082 verificationRequest; ``POST /inspect`` answers with
the report of :func:`stirshaken.analysis.inspect.ainspect` rendered as HTML: verdict first, then
the checks with their fixes, the x5u fetch, the chain, the decoded token.

Enabled by ``[server] inspect = true`` (off by default) on the ``http`` listener, with the
verification settings of ``[verification]`` (so the x5u fetch obeys the same SSRF policy as the
STI-VS).  Safety: the page is self-contained (no script at all, one inline style allowed by its
SHA-256 in a ``default-src 'none'`` Content-Security-Policy), every value is HTML-escaped, the
pasted input is capped (:data:`MAX_INPUT` bytes, 413 beyond) and each source address gets
:data:`RATE_BURST` inspections, refilled at :data:`RATE_PER_MINUTE` a minute (429 with
``Retry-After`` beyond).  An inspection never touches the service's verifier, cache or replay
store (a fresh verifier per inspection).
"""

from __future__ import annotations

import base64
import hashlib
import html
import time
from typing import Any, Awaitable, Mapping
from urllib.parse import parse_qs

import orjson

from stirshaken.analysis.inputs import InputError, parse_input
from stirshaken.analysis.inspect import ainspect

PATH = "/inspect"
MAX_INPUT = 32 * 1024
RATE_BURST = 10
RATE_PER_MINUTE = 10.0
_MAX_SOURCES = 10000

Reply = tuple[int, bytes, tuple[tuple[str, str], ...]]

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:1050px;padding:0 1em;color:#1d232b}
h1{font-size:1.4em}h2{font-size:1.1em;margin:1.4em 0 .4em;border-bottom:1px solid #d5dbe3}
textarea{width:100%;height:11em;font:12px ui-monospace,monospace}input[type=text]{width:14em}
button{font-size:1em;padding:.35em 1.2em;margin-top:.5em}
.verdict{padding:.8em 1em;border-radius:6px;font-size:1.15em;margin:1em 0}
.pass{background:#e3f4ea;border:1px solid #2e8b57}.fail{background:#fbe7e5;border:1px solid #c0392b}
.fix{color:#6b3a00;font-size:.92em}table{border-collapse:collapse;font-size:13px;width:100%}
th,td{border:1px solid #d5dbe3;padding:3px 7px;text-align:left;vertical-align:top}th{background:#eef2f6;width:12em}
td.ok{color:#2e8b57;font-weight:bold;width:3.5em}td.bad{color:#c0392b;font-weight:bold;width:3.5em}
pre{white-space:pre-wrap;word-break:break-all;font:12px ui-monospace,monospace;background:#f4f7fa;padding:.5em}
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
CSP = (f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; base-uri 'none'; "
       "frame-ancestors 'none'")
_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Type", "text/html; charset=utf-8"),
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _page(body: str, title: str = "STIR/SHAKEN inspector") -> bytes:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body><h1>STIR/SHAKEN inspector</h1>{body}</body></html>\n").encode()


def _form(text: str = "", orig: str = "", dest: str = "") -> str:
    return (f'<form method="post" action="{PATH}"><p>Paste an Identity header value, a whole SIP INVITE (as copied from '
            'sngrep or a log) or an ATIS-1000082 <code>verificationRequest</code>:</p>'
            f'<textarea name="input" id="input" required maxlength="{MAX_INPUT}">{_e(text)}</textarea>'
            f'<p>Calling TN <input type="text" name="orig" value="{_e(orig)}"> Called TN <input type="text" name="dest" value="{_e(dest)}">'
            ' (optional: otherwise From/PAI and To/Request-URI of the request)</p>'
            '<button type="submit">Inspect</button></form>')


def _row(name: str, value: Any) -> str:
    return f"<tr><th>{_e(name)}</th><td>{_e(value)}</td></tr>"


def render_report(rep: dict[str, Any]) -> str:
    """The report as HTML: verdict, input, per PASSporT checks, x5u, chain, decoded token."""
    v = rep["verdict"]
    if v["ok"]:
        verdict = f'<div class="verdict pass" id="verdict"><b>{_e(v["verstat"])}</b> — attestation {_e(v["attest"])}</div>'
    else:
        verdict = (f'<div class="verdict fail" id="verdict"><b>{_e(v["verstat"])}</b> — {_e(v.get("sip_code"))} {_e(v.get("reason"))}: '
                   f'{_e(v.get("description"))}' + (f'<div class="fix">Fix: {_e(v["fix"])}</div>' if v.get("fix") else "") + "</div>")
    i = rep["input"]
    parts = [verdict, "<h2>Call</h2><table>", _row("verified at", rep["verified_at"]), _row("input", i["source"]),
             _row("Call-ID", i.get("call_id") or "-"), _row("calling TNs", ", ".join(i["calling_tns"]) or "-"),
             _row("called TNs", ", ".join(i["called_tns"]) or "-"), _row("Date", i.get("date") or "-"),
             _row("Identity headers", i["identity_headers"]), "</table>"]
    for n, p in enumerate(rep["passports"], 1):
        parts.append(f'<h2>PASSporT {n} (ppt {_e(p.get("ppt"))}): {"valid" if p["ok"] else "invalid"}</h2><table class="checks">')
        for c in p["checks"]:
            cls, mark = ("ok", "PASS") if c["ok"] else ("bad", "FAIL")
            fix = f'<div class="fix">Fix: {_e(c["fix"])}</div>' if c.get("fix") else ""
            parts.append(f'<tr><td class="{cls}">{mark}</td><td>{_e(c["check"])}</td><td>{_e(c["detail"])}{fix}</td></tr>')
        parts.append("</table>")
        t = ["<table>"]
        if "iat" in p:
            t.append(_row("iat", f'{p["iat"]["value"]} = {p["iat"]["date"]} (age {p["iat"]["age_seconds"]} s)'))
        s = p.get("signature")
        if s:
            t.append(_row("signature", ("valid" if s["ok"] else "invalid" if s["ok"] is False else "not checked") + f' — {s["detail"]}'))
        a = p.get("authority")
        if a:
            t.append(_row("authority", ("covered" if a["ok"] else "not covered") + f' — {a["detail"]}'
                          + ("" if a["enforced"] else " (not enforced)")))
        x = p.get("x5u")
        if x:
            t.append(_row("x5u", x["url"]))
            r = x.get("route") or {}
            t.append(_row("SSRF decision", f'{r.get("decision", "-")}; addresses {", ".join(r.get("addresses") or []) or "-"}'))
            f = x["fetch"]
            if "status" in f:
                t.append(_row("fetch", f'HTTP {f["status"]} {f["content_type"]}, {f["bytes"]} bytes, {f["certificates"]} certificates, '
                                        f'{f["seconds"] * 1000:.1f} ms; cached {f["cache_ttl"]} s'))
                t.append(_row("cache headers", ", ".join(f"{k}: {v}" for k, v in f["cache_headers"].items()) or "-"))
            else:
                t.append(_row("fetch", f["source"] + (f'; {f["error"]}' if "error" in f else "")))
        t.append("</table>")
        parts += t
        for k, c in enumerate(p.get("chain", [])):
            parts.append(f"<h2>Certificate {k}{' (leaf)' if k == 0 else ''}</h2><table>")
            parts += [_row("subject", c["subject"]), _row("issuer", c["issuer"]), _row("serial", c["serial"]),
                      _row("validity", f'{c["not_before"]} – {c["not_after"]} ({c["validity"]})'), _row("key", c["key"])]
            if c.get("tnauthlist"):
                tn = c["tnauthlist"]
                parts.append(_row("TNAuthList", "; ".join(f"{k2}: {', '.join(map(str, v2)) if isinstance(v2, list) else v2}"
                                                          for k2, v2 in tn.items())))
            parts.append(_row("CRL", c["crl"]))
            if "issuer_on_ca_list" in c:
                parts.append(_row("on STI-PA CA list", c["issuer_on_ca_list"]))
            parts.append(_row("profile (ATIS-1000080)", "; ".join(c["profile"]) or "conforms"))
            parts.append("</table>")
        if "header" in p:
            parts.append("<h2>Decoded token</h2><pre>" + _e(orjson.dumps({"header": p["header"], "claims": p["claims"]},
                                                                         option=orjson.OPT_INDENT_2).decode()) + "</pre>")
        if p.get("problems"):
            parts.append("<ul>" + "".join(f"<li>{_e(x)}</li>" for x in p["problems"]) + "</ul>")
    return "".join(parts)


class RateLimiter:
    """A token bucket per source address: ``burst`` requests, refilled at ``per_minute``."""

    def __init__(self, burst: int = RATE_BURST, per_minute: float = RATE_PER_MINUTE):
        self.burst = float(burst)
        self.rate = per_minute / 60.0
        self.buckets: dict[str, tuple[float, float]] = {}

    def take(self, source: str, now: float | None = None) -> float:
        """0 when allowed (a token is taken), else the seconds until the next token."""
        now = time.monotonic() if now is None else now
        tokens, last = self.buckets.get(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self.buckets[source] = (tokens, now)
            return (1.0 - tokens) / self.rate
        if len(self.buckets) >= _MAX_SOURCES and source not in self.buckets:
            self.buckets.pop(next(iter(self.buckets)))
        self.buckets[source] = (tokens - 1.0, now)
        return 0.0


class WebInspector:
    """Answers ``/inspect`` for :class:`stirshaken.serve.rest.RestAPI` (``config``: the
    :class:`~stirshaken.vs.verifier.VerifierConfig` of the service)."""

    def __init__(self, config: Any, *, limiter: RateLimiter | None = None):
        self.config = config
        self.limiter = limiter or RateLimiter()

    def handle(self, method: str, headers: Mapping[str, str], body: bytes, peer: str) -> Reply | Awaitable[Reply]:
        if method in ("GET", "HEAD"):
            return 200, _page(_form()), _HEADERS
        if method != "POST":
            return 405, _page("<p>Use GET or POST.</p>"), _HEADERS + (("Allow", "GET, HEAD, POST"),)
        if len(body) > MAX_INPUT + 1024:
            return 413, _page(f"<p>The input is larger than {MAX_INPUT} bytes.</p>" + _form()), _HEADERS
        ctype = (headers.get("content-type") or "").split(";", 1)[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return 415, _page("<p>Send the form (application/x-www-form-urlencoded).</p>" + _form()), _HEADERS
        wait = self.limiter.take(peer)
        if wait:
            return 429, _page(f"<p>Too many inspections from your address; try again in {int(wait) + 1} s.</p>"), \
                _HEADERS + (("Retry-After", str(int(wait) + 1)),)
        try:
            form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=8)
        except ValueError:  # more fields than the form has
            return 400, _page('<div class="verdict fail" id="verdict">Unusable input: too many form fields</div>'
                              + _form()), _HEADERS
        text = (form.get("input") or [""])[0]
        orig = (form.get("orig") or [""])[0].strip()
        dest = (form.get("dest") or [""])[0].strip()
        if len(text.encode()) > MAX_INPUT:
            return 413, _page(f"<p>The input is larger than {MAX_INPUT} bytes.</p>" + _form()), _HEADERS
        try:
            call = parse_input(text, orig=orig or None, dest=[dest] if dest else None)
        except InputError as exc:
            return 400, _page(f'<div class="verdict fail" id="verdict">Unusable input: {_e(exc)}</div>' + _form(text, orig, dest)), _HEADERS
        return self._inspect(call, text, orig, dest)

    async def _inspect(self, call: Any, text: str, orig: str, dest: str) -> Reply:
        rep = await ainspect(call, self.config)
        return 200, _page(render_report(rep) + "<h2>Inspect another</h2>" + _form(text, orig, dest)), _HEADERS


__all__ = ["CSP", "MAX_INPUT", "PATH", "RateLimiter", "WebInspector", "render_report"]
