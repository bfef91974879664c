"""Several llama.cpp slots per model server: the setting, each slot's context, prefix affinity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest
from django.core.management.base import CommandError

from routing.management.commands.serve_models import Command
from routing.per_tier import PerTierCountError
from routing.servers import slots_for, wait_until_healthy
from tests.conftest import ROOT, free_port


@pytest.mark.parametrize(
    ("setting", "name", "expected"),
    [
        ("1", "medium", 1),
        (4, "medium", 4),
        ("medium=4", "medium", 4),
        ("medium=4", "large", 1),
        ("medium=4, 2", "large", 2),
        ("2,medium=4,large=1", "large", 1),
        ("2,medium=4,large=1", "medium", 4),
    ],
)
def test_slots_for_reads_counts_and_tier_pairs(setting, name, expected) -> None:  # noqa: ANN001
    assert slots_for(name, setting) == expected


@pytest.mark.parametrize("setting", ["0", "medium=0", "medium=four", "=3", "-1", "two"])
def test_slots_for_refuses_bad_settings_with_the_value(setting) -> None:  # noqa: ANN001
    with pytest.raises(PerTierCountError, match="LOCAL_MODEL_PARALLEL"):
        slots_for("medium", setting)


@pytest.mark.django_db
def test_tier_specs_take_their_own_slot_count(settings) -> None:  # noqa: ANN001
    from routing.models import ModelTier

    ModelTier.objects.update(enabled=False)
    for name, port in (("medium", 18101), ("large", 18102)):
        ModelTier.objects.update_or_create(
            name=name,
            defaults=dict(
                base_url=f"http://127.0.0.1:{port}/v1",
                model="smollm2-135m",
                local_model="smollm2-135m",
                context_window=2048,
                order=port,
                enabled=True,
            ),
        )
    settings.LOCAL_MODEL_PARALLEL = "medium=4,1"
    specs = dict(Command()._specs([]))
    assert (specs["medium"].parallel, specs["medium"].context_window) == (4, 2048)
    assert specs["large"].parallel == 1

    settings.LOCAL_MODEL_PARALLEL = "medium=lots"
    with pytest.raises(CommandError, match="medium=lots"):
        Command()._specs([])


def test_serve_flag_refuses_a_malformed_slot_count() -> None:
    with pytest.raises(CommandError, match="MODEL=PORT"):
        Command()._specs(["smollm2-135m=8123:1024:x"])


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def three_slot_server():  # noqa: ANN201
    """SmolLM2-135M served with three slots of 1024 tokens each, through serve_models."""
    port = free_port()
    log = (ROOT / "test-output" / "model-slots.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve_models", "--serve", f"smollm2-135m={port}:1024:3"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "LOCAL_MODEL_PARALLEL": "1"},
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", timeout=180)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(15)
        log.close()


def test_each_slot_gets_the_whole_context(three_slot_server: str) -> None:
    with urllib.request.urlopen(f"{three_slot_server}/props", timeout=30) as response:
        props = json.load(response)
    assert props["total_slots"] == 3
    assert props["default_generation_settings"]["n_ctx"] == 1024


def test_a_returning_prefix_is_served_from_its_slot(three_slot_server: str) -> None:
    """Topic A, then topic B, then A with a new question: A's passages are still cached.

    The prompts share their instructions (about a third of each, as the product's prompts do):
    with llama.cpp's default similarity (0.1) B would land on A's slot and overwrite it (A's
    prompt could then come back only from llama.cpp's prompt cache in RAM)."""
    instructions = "Answer the customer's question from the passages below and cite one. " * 10

    def topic(name: str) -> str:
        facts = " ".join(
            f"{name} fact {i}: item {i} of {name} costs {i * 7} euros." for i in range(25)
        )
        return f"{instructions}\nPassages about {name}.\n{facts}\nQuestion: "

    def ask(prompt: str) -> dict:
        return _post(
            f"{three_slot_server}/completion",
            {"prompt": prompt, "n_predict": 1, "cache_prompt": True, "temperature": 0},
        )

    first = ask(topic("returns") + "How long do I have?")
    other = ask(topic("shipping") + "How much is it?")
    again = ask(topic("returns") + "Which items are excluded?")
    # Another topic takes another slot; the returning topic finds its own.
    assert other["id_slot"] != first["id_slot"]
    assert again["id_slot"] == first["id_slot"]
    prefix_tokens = first["timings"]["prompt_n"] - 12
    assert again["timings"]["cache_n"] >= prefix_tokens, (first["timings"], again["timings"])
    assert again["timings"]["prompt_n"] < first["timings"]["prompt_n"] / 4
