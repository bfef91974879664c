"""Template tags of the customer chat pages."""

from __future__ import annotations

from django import template
from django.conf import settings

register = template.Library()


@register.simple_tag
def chat_link_domains() -> str:
    """The host names answers may link to, comma-separated, for the page's renderer (chat.js)."""
    return ",".join(settings.CHAT_LINK_ALLOWED_DOMAINS)
