"""Settings that take one count for every tier or name=count pairs ("medium=4,1")."""

from __future__ import annotations


class PerTierCountError(ValueError):
    """A per-tier setting is not a count or a list of name=count pairs."""


def count_for(name: str, setting: str | int, *, knob: str, minimum: int = 1) -> int:
    """The count for a tier or model name from a per-tier setting.

    The setting is a count for every name ("2") or comma-separated name=count pairs with an
    optional bare count for the rest ("medium=4,1"); a name not listed gets the bare count, else
    `minimum`. `knob` is the setting's name, for the error message.
    """
    default, counts = minimum, {}
    for item in str(setting).split(","):
        key, sep, value = item.strip().rpartition("=")
        if not value:
            continue
        try:
            count = int(value)
        except ValueError:
            count = minimum - 1
        if count < minimum or (sep and not key.strip()):
            raise PerTierCountError(
                f"{knob}={setting!r}: {item.strip()!r} is not a count of at least {minimum} or "
                "a name=count pair (e.g. '2' or 'medium=4,large=1')."
            )
        if sep:
            counts[key.strip()] = count
        else:
            default = count
    return counts.get(name, default)
