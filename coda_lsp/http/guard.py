"""Keep web pages out: the server answers editors and scripts, not sites a browser visits.

A page the user opens can send requests to 127.0.0.1 (a ``text/plain`` POST needs no CORS
preflight) and, through DNS rebinding (its own name re-pointed at 127.0.0.1), even read the
answers. Browsers always name the page in ``Origin`` on such requests and the name the page
used in ``Host``; editors and CLI clients send no ``Origin``. So:

- a request with an ``Origin`` that is not allowed (``--allow-origin``) is refused, 403;
- a ``Host`` that names neither a loopback name, an IP address (an address cannot be
  rebound), the bound host nor an allowed host (``--allow-host``) is refused, 403;
- allowed origins get CORS headers (starlette's CORSMiddleware, inside this guard).
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
ALLOW_ORIGINS_ENV = "CODA_LSP_ALLOW_ORIGINS"  # comma-separated, like --allow-origin repeated


@dataclass(frozen=True)
class Policy:
    """Which origins and hosts may talk to the server. ``*`` in either allows every one."""

    origins: frozenset[str] = field(default_factory=frozenset)
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def make(cls, origins: Iterable[str] = (), hosts: Iterable[str] = (),
             bound_host: str | None = None) -> Policy:
        names = {_host_name(h) for h in hosts if h}
        if bound_host and not _wildcard(bound_host):
            names.add(_host_name(bound_host))
        return cls(frozenset(o.rstrip("/").lower() for o in origins if o), frozenset(names))

    def origin_allowed(self, origin: str) -> bool:
        return "*" in self.origins or origin.rstrip("/").lower() in self.origins

    def host_allowed(self, host: str) -> bool:
        name = _host_name(host)
        if not name or "*" in self.hosts or name in self.hosts:
            return True
        if name in LOOPBACK_NAMES or name.endswith(".localhost"):
            return True  # browsers resolve these to loopback themselves: not rebindable
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True


def origins_from_env(value: str | None) -> list[str]:
    return [o.strip() for o in (value or "").split(",") if o.strip()]


def _wildcard(host: str) -> bool:
    return host in ("", "0.0.0.0", "::", "[::]")


def _host_name(host: str) -> str:
    """``Host`` without its port, lower case, IPv6 brackets removed."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


class WebGuard:
    """ASGI middleware: 403 for a foreign ``Origin`` or ``Host`` before any handler runs."""

    def __init__(self, app: ASGIApp, policy: Policy,
                 on_refused: Callable[[], object] | None = None) -> None:
        self.app = app
        self.policy = policy
        self.on_refused = on_refused  # counts refusals (/metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        origin, host = headers.get("origin"), headers.get("host", "")
        reason = None
        if origin is not None and not self.policy.origin_allowed(origin):
            reason = f"origin {origin!r} is not allowed (start the server with --allow-origin)"
        elif not self.policy.host_allowed(host):
            reason = f"host {host!r} is not allowed (start the server with --allow-host)"
        if reason is None:
            await self.app(scope, receive, send)
            return
        log.warning("refused %s %s: %s", scope.get("method"), scope.get("path"), reason)
        if self.on_refused is not None:
            self.on_refused()
        body = json.dumps({"error": {"message": reason, "type": "forbidden", "code": 403}})
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body.encode()})
