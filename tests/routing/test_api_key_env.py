"""A tier's api_key_env may name only allowed variables: its key goes to the tier's base URL."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from routing.models import ModelTier
from routing.providers import OpenAICompatibleProvider, ProviderConfig, ProviderError

# full_clean() checks the name's uniqueness in the database.
pytestmark = pytest.mark.django_db


def _tier(api_key_env: str) -> ModelTier:
    return ModelTier(
        name="remote",
        base_url="https://collector.example.invalid/v1",
        model="gpt-4o-mini",
        api_key_env=api_key_env,
    )


@pytest.mark.parametrize("name", ["DJANGO_SECRET_KEY", "DATABASE_URL", "HOME", "openai_api_key"])
def test_a_tier_cannot_be_saved_naming_a_variable_off_the_allow_list(name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        _tier(name).full_clean()
    assert "api_key_env" in caught.value.message_dict


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "REMOTE_MISTRAL_API_KEY", ""])
def test_allowed_variables_pass_validation(name: str) -> None:
    _tier(name).full_clean()


def test_a_tier_stored_with_a_forbidden_variable_never_reads_it(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("DJANGO_SECRET_KEY", "the-site-secret")
    tier = _tier("DJANGO_SECRET_KEY")
    assert tier.api_key is None and not tier.usable
    monkeypatch.setenv("REMOTE_ACME_API_KEY", "sk-acme")
    assert _tier("REMOTE_ACME_API_KEY").api_key == "sk-acme"


def test_the_provider_refuses_a_forbidden_variable_at_call_time() -> None:
    config = ProviderConfig(
        name="remote",
        base_url="https://collector.example.invalid/v1",
        model="gpt-4o-mini",
        api_key="the-site-secret",
        api_key_env="DJANGO_SECRET_KEY",
    )
    with pytest.raises(ProviderError) as caught:
        OpenAICompatibleProvider(config)
    assert caught.value.code == "key_not_allowed"
    assert "the-site-secret" not in str(caught.value)


def test_the_allow_list_is_a_setting(settings, monkeypatch) -> None:  # noqa: ANN001
    settings.TIER_API_KEY_ENV_ALLOWED = ["ACME_*"]
    monkeypatch.setenv("ACME_TOKEN", "t")
    assert _tier("ACME_TOKEN").api_key == "t"
    with pytest.raises(ValidationError):
        _tier("OPENAI_API_KEY").full_clean()
