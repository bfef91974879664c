"""Admin roles: viewers read, tuners tune, editors edit knowledge, agents answer; none does more."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from chatbot.budget import budget_daily_limit
from chatbot.models import Conversation
from chatbot.permissions import ROLES
from retrieval.models import KnowledgeDocument

pytestmark = pytest.mark.django_db


def _document() -> KnowledgeDocument:
    return KnowledgeDocument.objects.create(
        title="Returns", source_name="returns.md", content_hash="x" * 64
    )


def _member(client: Client, role: str | None) -> User:
    user = User.objects.create_user(f"u-{role or 'none'}", password="pw", is_staff=True)
    if role:
        user.groups.add(Group.objects.get(name=role))
    client.force_login(user)
    return user


def test_every_role_exists_with_every_permission_it_names() -> None:
    for name, perms in ROLES.items():
        group = Group.objects.get(name=name)
        held = {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.all()}
        assert held == set(perms), name


def test_staff_without_a_role_sees_no_figures(client: Client) -> None:
    _member(client, None)
    for url in ("/admin/dashboard/", "/admin/tuning/", "/admin/evaluations/"):
        assert client.get(url).status_code == 403, url
    response = client.get("/admin/dashboard/data.json")
    assert response.status_code == 403 and response.json()["error"] == "permission"
    assert client.get("/admin/dashboard/export.csv").status_code == 403
    assert client.get("/admin/inbox/").status_code == 403
    assert client.get("/admin/gaps/").status_code == 403


def test_a_viewer_reads_but_changes_nothing(client: Client) -> None:
    _member(client, "Viewers")
    budget = budget_daily_limit()
    for url in (
        "/admin/dashboard/",
        "/admin/dashboard/data.json",
        "/admin/dashboard/export.csv",
        "/admin/tuning/",
        "/admin/evaluations/",
        "/admin/retrieval/knowledgedocument/",
    ):
        assert client.get(url).status_code == 200, url
    assert client.post("/admin/dashboard/", {"daily_budget_usd": "5"}).status_code == 403
    assert budget_daily_limit() == budget
    assert client.post("/admin/tuning/", {"threshold": "0.5"}).status_code == 403
    assert client.post("/admin/evaluations/", {"dataset": "labelled"}).status_code == 403
    _document()
    # The knowledge list shows no action that changes documents, and posting one does nothing.
    page = client.get("/admin/retrieval/knowledgedocument/").content.decode()
    assert 'value="reingest"' not in page
    assert client.get("/admin/retrieval/knowledgedocument/upload/").status_code == 302


def test_a_tuner_sets_the_budget_but_cannot_touch_knowledge(client: Client) -> None:
    _member(client, "Cascade tuners")
    response = client.post("/admin/dashboard/", {"daily_budget_usd": "5"})
    assert response.status_code == 302
    assert budget_daily_limit() == 5
    assert client.get("/admin/retrieval/knowledgedocument/upload/").status_code == 302
    doc = _document()
    response = client.post(f"/admin/retrieval/knowledgedocument/{doc.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    assert KnowledgeDocument.objects.filter(pk=doc.pk).exists()
    assert client.get("/admin/gaps/").status_code == 403


def test_an_editor_uploads_but_cannot_tune(client: Client) -> None:
    _member(client, "Knowledge editors")
    assert client.get("/admin/retrieval/knowledgedocument/upload/").status_code == 200
    _document()
    page = client.get("/admin/retrieval/knowledgedocument/").content.decode()
    assert 'value="reingest"' in page
    assert client.get("/admin/gaps/").status_code == 200
    assert client.post("/admin/dashboard/", {"daily_budget_usd": "5"}).status_code == 403
    assert client.post("/admin/tuning/", {"threshold": "0.5"}).status_code == 403


def test_an_agent_answers_customers_and_sees_no_figures(client: Client) -> None:
    _member(client, "Support agents")
    assert client.get("/admin/inbox/").status_code == 200
    assert client.get("/admin/dashboard/").status_code == 403
    assert client.get("/admin/tuning/").status_code == 403


def test_the_admin_never_shows_a_session_key(admin_client: Client) -> None:
    conversation = Conversation.objects.create(session_key="secret-session-key-123456")
    for url in (
        "/admin/chatbot/conversation/",
        f"/admin/chatbot/conversation/{conversation.pk}/change/",
        "/admin/chatbot/message/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert b"secret-session-key-123456" not in response.content, url
