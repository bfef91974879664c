"""Admin login throttling: django-axes' lockout for every login that comes over HTTP."""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from django.http import HttpRequest


class LoginThrottleBackend(AxesStandaloneBackend):
    """Refuses a locked-out (address, user name) pair before any password is checked.

    A login without a request (Django's test client, a management command) comes from no
    address, so there is nothing to throttle; django-axes would raise instead.
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Raise PermissionDenied for a locked-out pair; otherwise let the next backend decide."""
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
