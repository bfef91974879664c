"""Formatting for the admin dashboard pages: rates, money, milliseconds; '-' when there is no figure."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.filter
def pct(value: Any, digits: int = 1) -> str:
    """0.1234 -> '12.3%'."""
    if value is None or value == "":
        return "–"
    return f"{float(value) * 100:.{int(digits)}f}%"


@register.filter
def usd(value: Any, digits: int = 6) -> str:
    """A dollar amount with enough decimals for fractions of a cent."""
    if value is None or value == "":
        return "–"
    return f"${float(value):,.{int(digits)}f}"


@register.filter
def ms(value: Any) -> str:
    """Milliseconds, shown as seconds past one second."""
    if value is None or value == "":
        return "–"
    value = float(value)
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


@register.filter
def get_item(mapping: Any, key: Any) -> Any:
    """mapping[key] in a template, None when missing."""
    try:
        return mapping.get(key)
    except AttributeError:
        return None
