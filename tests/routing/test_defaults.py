"""Default tiers, and a remote tier described by the environment (its key never stored)."""

from __future__ import annotations

import pytest

from routing.defaults import tiers_ensure_defaults
from routing.models import ModelTier, tiers_enabled

pytestmark = [pytest.mark.django_db]


def test_remote_tier_from_environment_without_its_key(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("REMOTE_TIER_BASE_URL", "https://api.example.invalid/v1")
    monkeypatch.setenv("REMOTE_TIER_MODEL", "gpt-4o-mini")
    monkeypatch.setenv("REMOTE_TIER_KEY_ENV", "REMOTE_EXAMPLE_API_KEY")
    monkeypatch.setenv("REMOTE_TIER_PRICE_IN", "0.15")
    monkeypatch.delenv("REMOTE_EXAMPLE_API_KEY", raising=False)
    created = {t.name for t in tiers_ensure_defaults()}
    assert {"small", "medium", "large", "remote"} <= created
    remote = ModelTier.objects.get(name="remote")
    assert remote.api_key_env == "REMOTE_EXAMPLE_API_KEY" and remote.api_key is None
    assert str(remote.price_input_per_mtok) == "0.150000"
    monkeypatch.setenv("REMOTE_EXAMPLE_API_KEY", "sk-test")
    assert remote.api_key == "sk-test"
    # Idempotent: an admin's edit survives the next set-up.
    ModelTier.objects.filter(name="medium").update(threshold=0.42)
    assert tiers_ensure_defaults() == []
    assert ModelTier.objects.get(name="medium").threshold == 0.42


def test_enabled_tiers_come_in_cascade_order_with_every_field_loaded() -> None:
    tiers_ensure_defaults()
    ModelTier.objects.filter(name="large").update(enabled=False)
    ModelTier.objects.create(name="b-extra", model="m", order=1, price_input_per_mtok="0.5")
    ModelTier.objects.create(name="a-extra", model="m", order=1, threshold=0.25)
    got = tiers_enabled()
    want = list(ModelTier.objects.filter(enabled=True).order_by("order", "name"))
    assert [t.name for t in got] == [t.name for t in want] and "large" not in [t.name for t in got]
    assert [t.name for t in got if t.order == 1] == ["a-extra", "b-extra"]
    for mine, orm in zip(got, want, strict=True):
        assert {f.attname: getattr(mine, f.attname) for f in ModelTier._meta.concrete_fields} == {
            f.attname: getattr(orm, f.attname) for f in ModelTier._meta.concrete_fields
        }
