"""API authentication: DRF's token authentication, throttled on failures per address."""

from typing import Any

from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.request import Request

from core.throttling import TokenFailureThrottle


class ThrottledTokenAuthentication(TokenAuthentication):
    """`Authorization: Token KEY`, where an address that sent too many bad tokens (the
    `token_failure` rate) gets 429 with Retry-After for every token until its window
    clears, even a valid one, so guessing keys gains nothing from a lucky hit. Requests
    without a token header (browsers on the session) are never refused here."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        if not self._sends_a_token(request):
            return None
        failures = TokenFailureThrottle(request)
        wait = failures.wait_seconds()
        if wait is not None:
            raise Throttled(wait=wait, detail="Too many failed token logins from this address.")
        try:
            return super().authenticate(request)
        except AuthenticationFailed:
            failures.record_failure()
            raise

    def _sends_a_token(self, request: Request) -> bool:
        words = get_authorization_header(request).split()
        return bool(words) and words[0].lower() == self.keyword.lower().encode()
