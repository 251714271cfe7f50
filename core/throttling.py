"""Rate limits of the API (429 with Retry-After), on top of DRF's cache-based throttles.

Rates live in REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] (config/settings/base.py). The
counters live in Django's cache: with several web processes it must be a shared cache
(Redis, REDIS_URL), or each process counts on its own.
"""

import math
from typing import Any

from django.http import HttpRequest
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, ScopedRateThrottle, SimpleRateThrottle


def client_address(request: HttpRequest | Request) -> str | None:
    """The client's address as DRF's throttles see it: REMOTE_ADDR, or the entry that the
    last of NUM_PROXIES (RLHF_NUM_PROXIES) trusted proxies appended to X-Forwarded-For.
    django-axes uses it too (AXES_CLIENT_IP_CALLABLE), so logins and tokens agree."""
    return BaseThrottle().get_ident(request)  # type: ignore[arg-type]  # reads .META only


class _RatesInForce(SimpleRateThrottle):
    """DRF binds THROTTLE_RATES when its class is defined; read the settings in force."""

    def get_rate(self) -> str | None:
        # The stubs type the rates as numbers; DRF wants (and we set) "N/period" strings.
        self.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES  # type: ignore[assignment]
        return super().get_rate()


class WriteScopedRateThrottle(_RatesInForce, ScopedRateThrottle):
    """DRF's ScopedRateThrottle for the writes of a view with `throttle_scope`: a POST
    that starts a run or an import counts, reading the same URL (GET, HEAD, OPTIONS) does
    not. Per user; anonymous requests are refused by authentication before this."""

    def allow_request(self, request: Request, view: Any) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return super().allow_request(request, view)


class TokenFailureThrottle(_RatesInForce):
    """Failed token authentications per client address, at the `token_failure` rate.

    Unlike a request throttle it counts only what `record_failure` is told, and
    `wait_seconds` says whether the address is over the rate."""

    scope = "token_failure"
    num_requests: int | None  # both set by DRF from the rate; None when the rate is None
    duration: int | None

    def __init__(self, request: Request) -> None:
        super().__init__()
        self.key = self.cache_format % {"scope": self.scope, "ident": client_address(request)}
        self.now = self.timer()
        self.history = []
        if self.duration is not None:
            since = self.now - self.duration
            self.history = [moment for moment in self.cache.get(self.key, []) if moment > since]

    def wait_seconds(self) -> int | None:
        """Whole seconds until the oldest counted failure leaves the window (the address
        may try again then); None if it may try now. The history is newest first."""
        if self.num_requests is None or self.duration is None:
            return None
        if len(self.history) < self.num_requests:
            return None
        return max(1, math.ceil(self.duration - (self.now - self.history[-1])))

    def record_failure(self) -> None:
        if self.duration is None:  # rate None: not limited, nothing to count
            return
        self.throttle_success()  # DRF's name for "count this one and store the history"
