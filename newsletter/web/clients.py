"""Who is asking: the client address the per-IP limits count, behind configured proxies only."""

from __future__ import annotations

import ipaddress

from starlette.requests import Request
from starlette.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from newsletter.environment import Env


def behind_proxies(app: ASGIApp, env: Env) -> ASGIApp:
    """Take the client address (and scheme) from X-Forwarded-For / X-Forwarded-Proto only when the connection comes from
    one of NEWSLETTER_TRUSTED_PROXIES; with none configured (the default) those headers are ignored."""
    if not env.trusted_proxies:
        return app
    return ProxyHeadersMiddleware(app, trusted_hosts=[str(net) for net in env.trusted_proxies])  # type: ignore[arg-type, return-value]


def rate_key(request: Request) -> str:
    """What the per-IP limits count: an IPv4 address, or the /64 an IPv6 address is in (one site gets a whole /64)."""
    host = request.client.host if request.client else ""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)
