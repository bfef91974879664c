"""The pipeline asks the router for the starting tier, and a stored answer (and its thumbs)
trains it: real SmolLM2 'small', a scripted pricier 'big' standing in for a paid remote API."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.core.management import call_command

from chatbot.evaluation.labelled import message_label
from chatbot.models import Conversation, Message
from chatbot.pipeline import AnswerOptions, answer_question
from chatbot.services import message_feedback
from retrieval.embedders import get_embedder
from routing.models import CascadePolicy, ModelTier, RouterCluster, RouterDecision, RouterLearner
from routing.router import GLOBAL

pytestmark = [pytest.mark.django_db(transaction=True)]

DOCS = {
    "returns.md": (
        "# Returns policy\n\n## Return window\nYou can return most items within 30 days of "
        "delivery. Items must be unused and in their original packaging.\n"
    ),
}
QUESTION = "How many days do I have to return an item?"
SESSION = "router-test"


@pytest.fixture
def knowledge(tmp_path: Path, django_db_blocker) -> None:  # noqa: ANN001
    for name, text in DOCS.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    with django_db_blocker.unblock():
        call_command(
            "load_demo_knowledge", folder=str(tmp_path), verbosity=0, stdout=open(os.devnull, "w")
        )


@pytest.fixture
def tiers(small_tier, fault_server, settings, django_db_blocker, knowledge):  # noqa: ANN001, ANN201
    """small (real SmolLM2, accepts anything) then 'big' (fault server, pricier, scripted)."""
    settings.CASCADE_START_TIER = "small"
    settings.CACHE_ENABLED = True
    with django_db_blocker.unblock():
        ModelTier.objects.update_or_create(
            name="big",
            defaults=dict(
                base_url=fault_server.base_url,
                model="ok:You have 30 days to return an item [1]",
                order=50,
                enabled=True,
                threshold=0.0,
                max_answer_tokens=32,
                timeout_seconds=5,
                price_input_per_mtok="10",
                price_output_per_mtok="40",
            ),
        )
    return ["small", "big"]


async def policy(**fields: object) -> None:
    await CascadePolicy.objects.aupdate_or_create(name="default", defaults=fields)


async def learner(kind: str, cluster: int, values: dict[str, float]) -> None:
    """A learner that already tried every tier once and holds these values."""
    await RouterLearner.objects.aupdate_or_create(
        kind=kind,
        cluster=cluster,
        defaults=dict(values=values, counts={t: 1 for t in values}, updates=len(values)),
    )


async def ask(text: str = QUESTION, options: AnswerOptions | None = None) -> list[dict]:
    conversation = await Conversation.objects.acreate(session_key=SESSION)
    user = await Message.objects.acreate(
        conversation=conversation, role=Message.Role.USER, content=text
    )
    return [
        e
        async for e in answer_question(
            conversation=conversation, user_message=user, options=options
        )
    ]


async def test_router_starts_high_and_the_stored_answer_trains_every_learner(tiers) -> None:  # noqa: ANN001
    await policy(router_mode="router", router_scope="global", router_epsilon=0.0)
    await learner("qlearning", GLOBAL, {"small": -1.0, "big": 0.5})
    events = await ask()
    start, end = events[0], events[-1]
    assert start["type"] == "answer.start" and start["tier"] == "big"
    assert end["type"] == "answer.end" and end["tier"] == "big", events
    assert [a["tier"] for a in end["attempts"]] == ["big"]  # small was never asked
    decision = await RouterDecision.objects.aget(message_id=end["message_id"])
    assert (decision.start_tier, decision.learner, decision.learned) == ("big", "qlearning", True)
    assert float(decision.cost) == pytest.approx(end["attempts"][0]["cost"])
    assert decision.score == pytest.approx(end["attempts"][0]["score"])
    assert len(decision.vector) == get_embedder().dimensions
    q = await RouterLearner.objects.aget(kind="qlearning", cluster=GLOBAL)
    assert q.updates == 3 and q.counts == {"small": 1, "big": 2}
    assert q.values["big"] == pytest.approx(0.5 + 0.1 * (decision.reward - 0.5))
    sla = await RouterLearner.objects.aget(kind="sla", cluster=GLOBAL)
    assert sla.updates == 1 and sla.counts["big"] == 1

    # The customer's thumbs-down replaces the scorer's accuracy in that reward.
    await message_feedback(session_key=SESSION, message_id=end["message_id"], value=-1)
    corrected = await RouterDecision.objects.aget(message_id=end["message_id"])
    assert corrected.thumbs == 0.0
    assert corrected.reward == pytest.approx(decision.reward - decision.score)
    q_after = await RouterLearner.objects.aget(kind="qlearning", cluster=GLOBAL)
    assert q_after.values["big"] == pytest.approx(q.values["big"] - 0.1 * decision.score)
    assert q_after.updates == q.updates

    # An admin's label in the message explorer counts above the thumbs; cleared, the thumbs again.
    message = await Message.objects.aget(id=end["message_id"])
    await sync_to_async(message_label)(message=message, label=Message.Label.RIGHT)
    labelled = await RouterDecision.objects.aget(message_id=end["message_id"])
    assert labelled.label == 1.0
    assert labelled.reward == pytest.approx(decision.reward - decision.score + 1.0)
    q_label = await RouterLearner.objects.aget(kind="qlearning", cluster=GLOBAL)
    assert q_label.values["big"] == pytest.approx(q_after.values["big"] + 0.1)
    await sync_to_async(message_label)(message=message, label="")
    cleared = await RouterDecision.objects.aget(message_id=end["message_id"])
    assert cleared.label is None and cleared.reward == pytest.approx(corrected.reward)


async def test_the_question_s_cluster_chooses_its_own_start(tiers) -> None:  # noqa: ANN001
    vector = (await get_embedder().aembed([QUESTION]))[0].tolist()
    # Cluster 0 is this question's topic, cluster 1 the opposite direction.
    await RouterCluster.objects.acreate(index=0, centroid=vector, size=1, examples=[QUESTION])
    await RouterCluster.objects.acreate(
        index=1, centroid=[-x for x in vector], size=1, examples=["x"]
    )
    await policy(router_mode="router", router_scope="cluster", router_epsilon=0.0)
    await learner("qlearning", GLOBAL, {"small": 0.9, "big": 0.0})
    await learner("qlearning", 0, {"small": 0.0, "big": 0.9})
    await learner("qlearning", 1, {"small": 0.9, "big": 0.0})
    end = (await ask())[-1]
    assert end["tier"] == "big", end
    decision = await RouterDecision.objects.aget(message_id=end["message_id"])
    assert decision.cluster == 0
    assert (await RouterLearner.objects.aget(kind="qlearning", cluster=0)).updates == 3
    assert (await RouterLearner.objects.aget(kind="qlearning", cluster=1)).updates == 2


async def test_evaluation_runs_never_train_the_live_router(tiers) -> None:  # noqa: ANN001
    await policy(router_mode="router", router_scope="global", router_epsilon=0.0)
    await learner("qlearning", GLOBAL, {"small": -1.0, "big": 0.5})
    options = AnswerOptions(origin=Message.Origin.EVALUATION, tiers=["small"], accept_last=True)
    end = (await ask(options=options))[-1]
    assert end["tier"] == "small"
    assert not await RouterDecision.objects.aexists()
    assert (await RouterLearner.objects.aget(kind="qlearning", cluster=GLOBAL)).updates == 2


async def test_single_tier_policy_answers_from_that_tier_alone(tiers) -> None:  # noqa: ANN001
    await ModelTier.objects.filter(name="small").aupdate(threshold=1.0)
    await policy(router_mode="single", single_tier="small")
    end = (await ask())[-1]
    # Below its threshold, alone: it declines instead of escalating to 'big'.
    assert [a["tier"] for a in end["attempts"]] == ["small"] and end["abstained"]
    decision = await RouterDecision.objects.aget(message_id=end["message_id"])
    assert (decision.start_tier, decision.learned) == ("small", False)
    assert not await RouterLearner.objects.aexists()


async def test_fixed_cascade_is_the_default_and_records_without_learning(tiers) -> None:  # noqa: ANN001
    events = await ask()
    assert events[0]["tier"] == "small" and events[-1]["tier"] == "small"
    decision = await RouterDecision.objects.aget(message_id=events[-1]["message_id"])
    assert (decision.start_tier, decision.learned, decision.question) == ("small", False, QUESTION)
    assert not await RouterLearner.objects.aexists()


async def test_a_cache_hit_chooses_no_start_and_names_the_tier_that_answered(
    tiers,  # noqa: ANN001
    monkeypatch,  # noqa: ANN001
) -> None:
    import chatbot.pipeline as pipeline

    await policy(router_mode="router", router_scope="global", router_epsilon=0.0)
    await learner("qlearning", GLOBAL, {"small": -1.0, "big": 0.5})
    first = await ask()
    assert first[-1]["tier"] == "big" and not first[-1]["cached"]
    # The learner now prefers small: a choice made for the hit would name small.
    await learner("qlearning", GLOBAL, {"small": 0.9, "big": -1.0})
    choices = []
    route_choose = pipeline.route_choose

    def counted(**kwargs: object) -> object:
        choices.append(kwargs)
        return route_choose(**kwargs)

    monkeypatch.setattr(pipeline, "route_choose", counted)
    again = await ask()
    start, end = again[0], again[-1]
    assert start["cached"] and end["cached"]
    # No starting tier was chosen for an answer no tier gives, and none is recorded.
    assert choices == []
    assert start["tier"] == end["tier"] == "big"
    assert not await RouterDecision.objects.filter(message_id=end["message_id"]).aexists()
    learned = await RouterLearner.objects.aget(kind="qlearning", cluster=GLOBAL)
    assert learned.values == {"small": 0.9, "big": -1.0}
