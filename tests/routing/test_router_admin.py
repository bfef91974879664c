"""The router in the admin: the policy choice and weights, each learner's state with example
questions and a reset, and an admin's label correcting a reward."""

from __future__ import annotations

import pytest

from routing.models import CascadePolicy, ModelTier, RouterCluster, RouterLearner
from routing.router import GLOBAL, Route, route_observe

pytestmark = [pytest.mark.django_db]


@pytest.fixture
def tiers() -> list[str]:
    for order, name in enumerate(["medium", "large"]):
        ModelTier.objects.create(
            name=name, base_url="http://127.0.0.1:9/v1", model=name, order=order, enabled=True
        )
    return ["medium", "large"]


def policy_form(**changes: object) -> dict:
    data = {
        "name": "default",
        "relevance_floor": "",
        "rerank_floor": "",
        "applied_from": "",
        "router_mode": "fixed",
        "single_tier": "",
        "router_learner": "qlearning",
        "router_scope": "cluster",
        "reward_accuracy_weight": "1.0",
        "reward_cost_weight": "200",
        "reward_latency_weight": "0.05",
        "router_learning_rate": "0.1",
        "router_epsilon": "0.1",
    }
    data.update({k: str(v) for k, v in changes.items()})
    return data


def test_admin_chooses_the_policy_and_refuses_what_the_router_cannot_use(
    admin_client, tiers
) -> None:  # noqa: ANN001
    page = admin_client.post(
        "/admin/routing/cascadepolicy/add/",
        policy_form(router_mode="router", router_learner="sla", reward_cost_weight=50),
    )
    assert page.status_code == 302, page.content.decode()[:2000]
    row = CascadePolicy.objects.get(name="default")
    assert (row.router_mode, row.router_learner, row.reward_cost_weight) == ("router", "sla", 50)
    change = f"/admin/routing/cascadepolicy/{row.id}/change/"
    refused = admin_client.post(change, policy_form(router_mode="single", single_tier="huge"))
    assert refused.status_code == 200
    text = refused.content.decode()
    assert "Name an enabled tier (medium, large)" in text
    refused = admin_client.post(change, policy_form(router_epsilon=1.5, reward_cost_weight=-1))
    assert "Epsilon lies in [0, 1]" in refused.content.decode()
    assert "A weight is 0 or more" in refused.content.decode()
    row.refresh_from_db()
    assert row.router_mode == "router" and row.router_epsilon == 0.1


def test_learner_state_with_examples_and_reset(admin_client, tiers) -> None:  # noqa: ANN001
    CascadePolicy.objects.create(name="default", router_mode="router", router_learning_rate=0.5)
    RouterCluster.objects.create(
        index=2, centroid=[1.0, 0.0], size=4, examples=["Where is my <b>parcel</b>?"]
    )
    route = Route(start="large", mode="router", learner="qlearning", cluster=2, vector=[1.0, 0.0])
    route_observe(
        message_id=1,
        route=route,
        question="Where is my parcel?",
        attempts=[{"outcome": "accepted", "score": 0.9, "cost": 0.0, "latency_ms": 1000.0}],
        abstained=False,
        tiers=tiers,
    )
    page = admin_client.get("/admin/routing/routerlearner/").content.decode()
    assert "large Q=0.450 (n=1)" in page and "medium Q=0.000 (n=0)" in page
    assert "large p=0.500 (n=1)" in page  # SLA does not move on its first reward
    assert "Where is my &lt;b&gt;parcel&lt;/b&gt;?" in page  # escaped, never rendered as HTML
    assert "(all questions)" in page
    ids = [str(i) for i in RouterLearner.objects.filter(cluster=2).values_list("id", flat=True)]
    done = admin_client.post(
        "/admin/routing/routerlearner/", {"action": "reset", "_selected_action": ids}, follow=True
    )
    assert "2 learner(s) reset." in done.content.decode()
    for row in RouterLearner.objects.filter(cluster=2):
        assert row.updates == 0
    assert RouterLearner.objects.get(kind="qlearning", cluster=GLOBAL).updates == 1


def test_an_admin_label_corrects_the_reward(admin_client, tiers) -> None:  # noqa: ANN001
    CascadePolicy.objects.create(name="default", router_mode="router", router_learning_rate=0.5)
    decision = route_observe(
        message_id=9,
        route=Route(start="medium", mode="router", learner="qlearning"),
        question="q",
        attempts=[{"outcome": "accepted", "score": 0.2, "cost": 0.0, "latency_ms": 1000.0}],
        abstained=False,
        tiers=tiers,
    )
    assert decision is not None
    url = f"/admin/routing/routerdecision/{decision.id}/change/"
    assert admin_client.post(url, {"label": "1.0"}).status_code == 302
    decision.refresh_from_db()
    assert decision.label == 1.0 and decision.reward == pytest.approx(1.0)
    q = RouterLearner.objects.get(kind="qlearning", cluster=GLOBAL)
    assert q.values["medium"] == pytest.approx(0.5 * 1.0)
    refused = admin_client.post(url, {"label": "3"})
    assert "A label is an accuracy in [0, 1]" in refused.content.decode()
    decision.refresh_from_db()
    assert decision.label == 1.0  # out of range: refused, nothing changed
