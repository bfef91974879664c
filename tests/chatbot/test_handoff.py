"""The handoff protocol over real sockets: a customer asks for a person, an agent takes the
conversation in the inbox, their words cross the channel layer both ways, the bot stays silent
while the person holds it, and answers again after the agent closes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission
from django.core import mail
from django.test import Client

from chatbot.models import Handoff, Message
from tests.chatbot.conftest import chat_socket, frames_until, new_session

pytestmark = [pytest.mark.django_db(transaction=True)]


def _agent_cookie(username: str, *, staff: bool = True, permission: bool = True) -> str:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(
        username=username,
        password="x",
        email=f"{username}@example.com",
        first_name=username.title(),
        is_staff=staff,
    )
    if permission:
        user.user_permissions.add(Permission.objects.get(codename="handle_handoff"))
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def agent_socket(username: str = "ada", **kwargs: bool) -> WebsocketCommunicator:
    """A connected inbox socket of a logged-in agent; its first frame (the list) is read."""
    from chatbot.asgi import application

    cookie = await sync_to_async(_agent_cookie)(username, **kwargs)
    communicator = WebsocketCommunicator(
        application,
        "/ws/inbox/",
        headers=[(b"origin", b"http://127.0.0.1"), (b"cookie", f"sessionid={cookie}".encode())],
    )
    connected, _ = await communicator.connect()
    assert connected
    first = await communicator.receive_json_from(timeout=10)
    assert first["type"] == "inbox.list"
    return communicator


async def _until(communicator: WebsocketCommunicator, kind: str, **match: object) -> dict:
    """The next frame of this type (and these field values), skipping others."""
    while True:
        frame = await communicator.receive_json_from(timeout=20)
        if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
            return frame


async def _update(agent: WebsocketCommunicator, **match: object) -> dict:
    """The next inbox update whose handoff has these field values."""
    while True:
        frame = await _until(agent, "handoff.update")
        if all(frame["handoff"].get(k) == v for k, v in match.items()):
            return frame["handoff"]


async def test_asking_in_words_opens_a_handoff_with_no_model_work(settings) -> None:  # noqa: ANN001
    settings.SUPPORT_HOURS = ""
    agent = await agent_socket()
    session = await new_session()
    customer = await chat_socket(session)
    # The button before any question: a conversation is made for the handoff.
    await customer.send_json_to({"type": "handoff", "reason": "declined"})
    waiting = await _until(customer, "handoff.status")
    assert waiting["status"] == "waiting" and waiting["open_now"] and waiting["agent"] is None
    conversation_id = waiting["conversation_id"]
    await _update(agent, id=waiting["handoff_id"], status="waiting")
    await agent.send_json_to({"type": "close", "handoff_id": waiting["handoff_id"]})
    await _until(customer, "handoff.status", status="closed")

    await customer.send_json_to(
        {
            "type": "ask",
            "text": "Can I talk to a human, please?",
            "client_id": "c1",
            "conversation_id": conversation_id,
        }
    )
    ack = await _until(customer, "ask.ack")
    assert ack["held"] is True
    status = await _until(customer, "handoff.status")
    assert status["status"] == "waiting" and status["conversation_id"] == conversation_id
    update = await _update(agent, status="waiting", conversation_id=conversation_id)
    assert update["reason"] == "asked" and update["id"] != waiting["handoff_id"]
    # Stored, and no model ran: no tier exists in this test, and no answer was made.
    assert await Message.objects.filter(role=Message.Role.USER, client_id="c1").aexists()
    assert not await Message.objects.filter(role=Message.Role.ASSISTANT).aexists()
    assert await customer.receive_nothing(timeout=0.5)
    await customer.disconnect()
    await agent.disconnect()


async def test_agent_and_customer_talk_and_the_bot_stays_silent(settings) -> None:  # noqa: ANN001
    settings.SUPPORT_HOURS = ""
    session = await new_session()
    customer = await chat_socket(session)
    second_tab = await chat_socket(session)
    await customer.send_json_to({"type": "handoff", "email": "kim@example.com"})
    waiting = await _until(customer, "handoff.status")
    handoff_id, conversation_id = waiting["handoff_id"], waiting["conversation_id"]
    assert waiting["email"] is True

    agent = await agent_socket("ada")
    other_agent = await agent_socket("bob")
    await agent.send_json_to({"type": "open", "handoff_id": handoff_id})
    detail = await _until(agent, "handoff.detail")
    assert detail["handoff"]["email"] == "kim@example.com"
    assert detail["handoff"]["status"] == "waiting"

    await agent.send_json_to({"type": "take", "handoff_id": handoff_id})
    joined = await _until(customer, "handoff.status", status="joined")
    assert joined["agent"] == "Ada"
    await _until(second_tab, "handoff.status", status="joined")
    # Another agent cannot take it over or write in it.
    await other_agent.send_json_to({"type": "take", "handoff_id": handoff_id})
    assert (await _until(other_agent, "error"))["code"] == "taken"
    await other_agent.send_json_to({"type": "say", "handoff_id": handoff_id, "text": "hi"})
    assert (await _until(other_agent, "error"))["code"] == "not_yours"

    await agent.send_json_to(
        {"type": "say", "handoff_id": handoff_id, "text": "Hello, I am Ada. How can I help?"}
    )
    said = await _until(customer, "agent.message")
    assert said["text"] == "Hello, I am Ada. How can I help?" and said["agent"] == "Ada"
    assert said["conversation_id"] == conversation_id
    assert (await _until(second_tab, "agent.message"))["message_id"] == said["message_id"]
    stored = await Message.objects.aget(id=said["message_id"])
    assert stored.role == Message.Role.AGENT and str(stored.conversation_id) == conversation_id
    # Every agent's inbox shows it in the transcript.
    for inbox in (agent, other_agent):
        echo = await _until(inbox, "conversation.message", handoff_id=handoff_id)
        assert echo["message"]["role"] == "agent" and echo["message"]["agent"] == "Ada"

    # The customer's words go to the agents, not to a model.
    await customer.send_json_to(
        {
            "type": "ask",
            "text": "My parcel never came.",
            "client_id": "c2",
            "conversation_id": conversation_id,
        }
    )
    ack = await _until(customer, "ask.ack")
    assert ack["held"] is True
    relayed = await _until(agent, "conversation.message", handoff_id=handoff_id)
    assert relayed["message"]["content"] == "My parcel never came."
    assert relayed["message"]["role"] == "user"
    assert await customer.receive_nothing(timeout=0.5)
    assert not await Message.objects.filter(role=Message.Role.ASSISTANT).aexists()

    await agent.send_json_to({"type": "close", "handoff_id": handoff_id})
    closed = await _until(customer, "handoff.status", status="closed")
    assert closed["handoff_id"] == handoff_id
    handoff = await Handoff.objects.aget(id=handoff_id)
    assert handoff.status == Handoff.Status.CLOSED and handoff.closed_at is not None
    for communicator in (customer, second_tab, agent, other_agent):
        await communicator.disconnect()


async def test_a_reply_while_the_customer_is_away_is_there_on_return(settings) -> None:  # noqa: ANN001
    settings.SUPPORT_HOURS = ""
    session = await new_session()
    customer = await chat_socket(session)
    await customer.send_json_to({"type": "handoff"})
    waiting = await _until(customer, "handoff.status")
    await customer.disconnect()  # the tab is closed

    agent = await agent_socket()
    await agent.send_json_to({"type": "take", "handoff_id": waiting["handoff_id"]})
    await _until(agent, "handoff.update")
    await agent.send_json_to(
        {"type": "say", "handoff_id": waiting["handoff_id"], "text": "Your refund is on its way."}
    )
    await _until(agent, "conversation.message")

    def reload() -> tuple[dict, dict]:
        client = Client()
        client.cookies["sessionid"] = session
        url = f"/api/conversations/{waiting['conversation_id']}/"
        return client.get(url).json(), client.get(url + "handoff/").json()

    conversation, state = await sync_to_async(reload)()
    [reply] = [m for m in conversation["messages"] if m["role"] == "agent"]
    assert reply["content"] == "Your refund is on its way."
    assert state["agents"] == {str(reply["id"]): "Ada"}
    assert state["handoff"]["status"] == "joined"
    await agent.disconnect()


async def test_outside_hours_the_customer_learns_when_and_agents_get_mail(settings) -> None:  # noqa: ANN001
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    now = datetime.now(UTC)
    # Open only tomorrow (UTC), so it is closed now whatever the time of day.
    tomorrow = (now + timedelta(days=1)).strftime("%a")
    settings.SUPPORT_HOURS = f"{tomorrow} 09:00-17:00 UTC"
    agent = await agent_socket()
    session = await new_session()
    customer = await chat_socket(session)
    await customer.send_json_to({"type": "handoff"})
    waiting = await _until(customer, "handoff.status")
    assert waiting["open_now"] is False and waiting["email"] is False
    expected = (now + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)
    assert datetime.fromisoformat(waiting["reply_expected"]) == expected
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ada@example.com"]
    assert "asks for a person" in mail.outbox[0].subject

    await customer.send_json_to({"type": "handoff", "email": "not an address"})
    assert (await _until(customer, "error"))["code"] == "bad_email"
    await customer.send_json_to(
        {
            "type": "handoff",
            "email": "kim@example.com",
            "conversation_id": waiting["conversation_id"],
        }
    )
    updated = await _until(customer, "handoff.status")
    assert updated["email"] is True and updated["handoff_id"] == waiting["handoff_id"]
    assert len(mail.outbox) == 2 and "kim@example.com" in mail.outbox[1].body
    await _update(agent, id=waiting["handoff_id"], email="kim@example.com")
    await customer.disconnect()
    await agent.disconnect()


async def test_a_handoff_for_another_sessions_conversation_is_refused(settings) -> None:  # noqa: ANN001
    settings.SUPPORT_HOURS = ""
    owner = await chat_socket(await new_session())
    await owner.send_json_to({"type": "handoff"})
    waiting = await _until(owner, "handoff.status")
    stranger = await chat_socket(await new_session())
    await stranger.send_json_to({"type": "handoff", "conversation_id": waiting["conversation_id"]})
    assert (await _until(stranger, "error"))["code"] == "not_found"
    await stranger.send_json_to({"type": "handoff", "reason": "because"})
    assert (await _until(stranger, "error"))["code"] == "bad_handoff"
    # The stranger hears nothing of the owner's handoff.
    agent = await agent_socket()
    await agent.send_json_to({"type": "take", "handoff_id": waiting["handoff_id"]})
    await _until(owner, "handoff.status", status="joined")
    assert await stranger.receive_nothing(timeout=0.5)
    for communicator in (owner, stranger, agent):
        await communicator.disconnect()


async def test_the_bot_answers_again_after_the_agent_closes(
    settings,  # noqa: ANN001
    small_tier,  # noqa: ANN001
    help_centre,  # noqa: ANN001
) -> None:
    settings.SUPPORT_HOURS = ""
    settings.CHAT_SHOW_DETAILS = False
    session = await new_session()
    customer = await chat_socket(session)
    await customer.send_json_to({"type": "handoff"})
    waiting = await _until(customer, "handoff.status")
    agent = await agent_socket()
    await agent.send_json_to({"type": "close", "handoff_id": waiting["handoff_id"]})
    await _until(customer, "handoff.status", status="closed")

    await customer.send_json_to(
        {
            "type": "ask",
            "text": "How long do refunds take?",
            "client_id": "c3",
            "conversation_id": waiting["conversation_id"],
        }
    )
    ack = await _until(customer, "ask.ack")
    assert ack["held"] is False
    frames = await frames_until(customer, ("answer.end",))
    start = next(f for f in frames if f["type"] == "answer.start")
    end = frames[-1]
    assert end["status"] == "complete"
    # A customer is not shown tiers, tokens or costs (CHAT_SHOW_DETAILS is off).
    for frame in (start, end):
        assert not {"tier", "usage", "cost", "attempts", "cost_if_largest"} & frame.keys(), frame
    stored = await Message.objects.aget(id=end["message_id"])
    assert stored.tier == "small" and stored.tokens_out > 0  # stored for staff all the same
    await customer.disconnect()
    await agent.disconnect()


async def test_the_customer_can_stop_waiting_and_the_bot_answers_again(settings) -> None:  # noqa: ANN001
    settings.SUPPORT_HOURS = ""
    agent = await agent_socket()
    session = await new_session()
    customer = await chat_socket(session)
    await customer.send_json_to({"type": "handoff.cancel"})
    assert (await _until(customer, "error"))["code"] == "not_found"
    await customer.send_json_to({"type": "handoff"})
    waiting = await _until(customer, "handoff.status")
    stranger = await chat_socket(await new_session())
    await stranger.send_json_to(
        {"type": "handoff.cancel", "conversation_id": waiting["conversation_id"]}
    )
    assert (await _until(stranger, "error"))["code"] == "not_found"

    await customer.send_json_to(
        {"type": "handoff.cancel", "conversation_id": waiting["conversation_id"]}
    )
    closed = await _until(customer, "handoff.status")
    assert closed["status"] == "closed" and closed["handoff_id"] == waiting["handoff_id"]
    await _update(agent, id=waiting["handoff_id"], status="closed")
    await customer.send_json_to(
        {
            "type": "ask",
            "text": "Where is my parcel?",
            "client_id": "c4",
            "conversation_id": waiting["conversation_id"],
        }
    )
    ack = await _until(customer, "ask.ack")
    assert ack["held"] is False
    # The pipeline runs again (no tier is enabled here, so it ends in an error frame).
    frames = await frames_until(customer, ("answer.start",), timeout=180)
    assert frames[-1]["conversation_id"] == waiting["conversation_id"]
    for communicator in (customer, stranger, agent):
        await communicator.disconnect()
