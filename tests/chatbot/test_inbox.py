"""Who may work in the inbox: the page and its socket need an active staff user holding the
handoff permission; customers, plain staff and anonymous visitors are refused."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group, Permission
from django.test import Client

pytestmark = [pytest.mark.django_db(transaction=True)]


def _client(username: str | None, *, staff: bool, permission: str) -> Client:
    from django.contrib.auth import get_user_model

    client = Client()
    if username is None:
        return client
    user = get_user_model().objects.create_user(username=username, password="x", is_staff=staff)
    perm = Permission.objects.get(codename="handle_handoff")
    if permission == "user":
        user.user_permissions.add(perm)
    elif permission == "group":
        group, _ = Group.objects.get_or_create(name="Agents")
        group.permissions.add(perm)
        user.groups.add(group)
    client.force_login(user)
    return client


CASES = [
    # (who, staff, permission, may work in the inbox)
    (None, False, "none", False),
    ("customer", False, "user", False),  # the permission alone is not enough: staff only
    ("staff", True, "none", False),
    ("agent", True, "user", True),
    ("group_agent", True, "group", True),
]


@pytest.mark.parametrize(("who", "staff", "permission", "allowed"), CASES)
def test_inbox_page(who: str | None, staff: bool, permission: str, allowed: bool) -> None:
    client = _client(who, staff=staff, permission=permission)
    response = client.get("/admin/inbox/")
    if allowed:
        assert response.status_code == 200
        assert b"/ws/inbox/" in response.content
    elif not staff:
        assert response.status_code == 302 and "/login/" in response["Location"]
    else:
        assert response.status_code == 403


@pytest.mark.parametrize(("who", "staff", "permission", "allowed"), CASES)
async def test_inbox_socket(who: str | None, staff: bool, permission: str, allowed: bool) -> None:
    from chatbot.asgi import application

    client = await sync_to_async(_client)(who, staff=staff, permission=permission)
    headers = [(b"origin", b"http://127.0.0.1")]
    if "sessionid" in client.cookies:
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/inbox/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected is allowed
    if allowed:
        first = await communicator.receive_json_from(timeout=10)
        assert first["type"] == "inbox.list"
        await communicator.send_json_to({"type": "take", "handoff_id": 999999})
        assert (await communicator.receive_json_from(timeout=10))["code"] == "not_found"
    await communicator.disconnect()


async def test_inbox_socket_refuses_another_sites_origin() -> None:
    from chatbot.asgi import application

    client = await sync_to_async(_client)("agent", staff=True, permission="user")
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    communicator = WebsocketCommunicator(
        application,
        "/ws/inbox/",
        headers=[(b"origin", b"https://evil.example"), (b"cookie", cookie)],
    )
    connected, _ = await communicator.connect()
    assert not connected
    await communicator.disconnect()
