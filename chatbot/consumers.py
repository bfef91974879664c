"""The chat WebSocket: parse and validate frames, persist the question, run the pipeline as a task."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import ThreadSensitiveContext
from channels.consumer import get_handler_name
from channels.db import aclose_old_connections, database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    transaction,
)

from chatbot import handoff as handoffs
from chatbot import metrics, ratelimit
from chatbot.customer_view import customer_frame, details_visible
from chatbot.handoff_intent import wants_human
from chatbot.handoff_selectors import OPEN, HandoffError, status_frame
from chatbot.models import Conversation, Handoff, Message, WidgetSite
from chatbot.pipeline import AnswerOptions, RunControl, answer_question, db_retrying
from chatbot.services import FeedbackError, message_feedback
from chatbot.widget import VISITOR_TOKEN, visitor_session_key

logger = logging.getLogger(__name__)

# The fields each frame type may carry; anything else is refused (`unknown_field`), so a typo
# or a probe is told at once instead of being silently ignored.
FRAME_FIELDS: dict[str, frozenset[str]] = {
    "ask": frozenset({"type", "text", "client_id", "conversation_id"}),
    "stop": frozenset({"type"}),
    "feedback": frozenset({"type", "message_id", "value", "reason"}),
    "handoff": frozenset({"type", "conversation_id", "reason", "email"}),
    "handoff.cancel": frozenset({"type", "conversation_id"}),
}


def _holds_nul(value: Any) -> bool:
    """True when any string in a parsed frame (keys included) holds a NUL, which PostgreSQL
    text cannot store. Iterative: json.loads already bounds the nesting."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class DatabaseLanes:
    """A fixed set of database threads ("lanes") that sockets' sync database work runs on.

    Left alone, Channels runs every `database_sync_to_async` call, async ORM query and
    thread-sensitive `sync_to_async` of every socket on one process-wide thread: one slow query
    (a search, a budget sum, a session write in a connect storm) queues all the others, and the
    pool's connections act as one. Each event (and each answer) instead borrows the least busy
    of CHAT_DATABASE_THREADS single-thread executors for its whole run, so its calls stay on one
    thread (what thread-sensitive code needs) while other sockets use other threads. A lane's
    connection goes back to the pool when the event ends: at most one connection per lane is
    ever held, and none by an idle socket.
    """

    def __init__(self, size: int) -> None:
        self._executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"chat-db-{n}")
            for n in range(max(1, size))
        ]
        self._busy = [0] * len(self._executors)

    @asynccontextmanager
    async def lane(self) -> AsyncIterator[None]:
        """Run the block's thread-sensitive calls on the least busy lane."""
        n = min(range(len(self._busy)), key=self._busy.__getitem__)
        self._busy[n] += 1
        try:
            async with ThreadSensitiveContext(executor=self._executors[n]):
                try:
                    yield
                finally:
                    # On this lane's thread: its connection returns to the pool. A database
                    # that went away meanwhile must not fail an event that already answered.
                    try:
                        await aclose_old_connections()
                    except Exception:  # noqa: BLE001
                        logger.warning("closing a lane's database connection failed", exc_info=True)
        finally:
            self._busy[n] -= 1


_lanes: DatabaseLanes | None = None


def database_lane() -> Any:
    """The process's database lanes (created on first use), as a context manager for one event."""
    global _lanes
    if _lanes is None:
        _lanes = DatabaseLanes(settings.CHAT_DATABASE_THREADS)
    return _lanes.lane()


def resent_question(*, session_key: str, client_id: str) -> Message | None:
    """The session's question sent before under this client_id (a resend after a lost
    acknowledgement), else None. Every question pays this check and almost none is a resend: a
    plain statement for the id (about 0.15 ms against 0.6 ms through the ORM), the ORM only to
    load a resent one."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT m.id FROM {Message._meta.db_table} m"
            f" JOIN {Conversation._meta.db_table} c ON c.id = m.conversation_id"
            " WHERE m.client_id = %s AND c.session_key = %s AND m.role = %s"
            " ORDER BY m.id LIMIT 1",
            [client_id, session_key, Message.Role.USER],
        )
        row = cursor.fetchone()
    return Message.objects.get(pk=row[0]) if row else None


class ChatConsumer(AsyncWebsocketConsumer):
    """One browser tab's chat socket. Generation runs as its own task so stop/disconnect act at once."""

    # The embedding website (the widget's consumer sets it); new conversations record it.
    site: WidgetSite | None = None
    group: str | None = None

    async def connect(self) -> None:
        """Called on the WebSocket handshake: bind the socket to the browser's session."""
        self.session_key = await self._ensure_session()
        await self._start()

    async def _start(self) -> None:
        self.conversation: Conversation | None = None
        self.generation: asyncio.Task[None] | None = None
        self.control = RunControl()
        self.address = ratelimit.client_address(self.scope)
        self.show_details = details_visible(self.scope.get("user"))
        # Agents' words and handoff changes reach every tab of this session through the group.
        self.group = handoffs.session_group(self.session_key)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        metrics.socket_opened(self)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Called for every event of this socket: its database work runs on a lane of its own."""
        async with database_lane():
            handler = getattr(self, get_handler_name(message), None)
            if handler is None:
                raise ValueError(f"No handler for message type {message['type']}")
            # Channels' own dispatch would first close old connections, a trip to the lane's
            # thread for every frame; the lane already gives its connection back as each event
            # ends, so that close would find nothing to close.
            await handler(message)

    async def disconnect(self, code: int) -> None:
        """Called when the socket closes: cancel any answer in flight (its partial text is stored)."""
        metrics.socket_closed(self)
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        if hasattr(self, "control"):
            await self._cancel(Message.Status.INTERRUPTED)

    async def chat_frame(self, event: dict[str, Any]) -> None:
        """Called for a channel-layer message to this session's group: forward its frame."""
        await self._send_json(event["frame"])

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called for every frame: validate, then dispatch on its type."""
        if bytes_data is not None:
            return await self._error(
                "binary_frame", "Binary frames are not accepted; send JSON text."
            )
        if text_data is None:
            return await self._error("bad_json", "Empty frame.")
        if len(text_data.encode()) > settings.CHAT_MAX_FRAME_BYTES:
            return await self._error(
                "frame_too_large", f"Frames are limited to {settings.CHAT_MAX_FRAME_BYTES} bytes."
            )
        try:
            frame = json.loads(text_data)
        except (json.JSONDecodeError, RecursionError):
            # RecursionError: "[[[[..." nested deeper than the parser goes.
            return await self._error("bad_json", "The frame is not valid JSON.")
        if not isinstance(frame, dict):
            return await self._error("bad_json", "A frame must be a JSON object with a 'type'.")
        kind = frame.get("type")
        if not isinstance(kind, str) or kind not in FRAME_FIELDS:
            shown = kind[:40] if isinstance(kind, str) else type(kind).__name__
            return await self._error("unknown_type", f"Unknown frame type {shown!r}.")
        unknown = sorted(str(k)[:40] for k in frame.keys() - FRAME_FIELDS[kind])
        if unknown:
            return await self._error(
                "unknown_field", f"A {kind!r} frame has no field {', '.join(unknown[:5])}."
            )
        if _holds_nul(frame):
            return await self._error("nul_character", "Text may not contain NUL characters.")
        handler = {
            "ask": self._ask,
            "stop": self._stop,
            "feedback": self._feedback,
            "handoff": self._handoff,
            "handoff.cancel": self._handoff_cancel,
        }[kind]
        if kind != "ask" and not await ratelimit.rate_allow(
            ratelimit.CONTROL, session_key=self.session_key, address=self.address
        ):
            return await self._error(
                "rate_limited", "Too many requests in a minute; please wait a moment."
            )
        try:
            await handler(frame)
        except (OperationalError, InterfaceError):
            # The database is restarting or its pool is exhausted: a passing fault, not a bug.
            # The page keeps a question queued and sends it again (its client_id keeps it single).
            logger.exception("%s frame failed: database unavailable", kind)
            await self._error(
                "unavailable", "We cannot reach our records just now; trying again shortly."
            )
        except Exception:
            # Whatever a frame does wrong (or the database does), this socket and its other
            # frames go on: the customer is told, the traceback goes to the log.
            logger.exception("%s frame failed", kind)
            await self._error("internal", "Something went wrong; please try again.")

    async def _ask(self, frame: dict[str, Any]) -> None:
        text = frame.get("text")
        if not isinstance(text, str) or not text.strip():
            return await self._error("empty", "Please type a question.")
        text = text.strip()
        if len(text) > settings.CHAT_MAX_MESSAGE_CHARS:
            return await self._error(
                "too_long",
                f"Questions are limited to {settings.CHAT_MAX_MESSAGE_CHARS} characters.",
            )
        client_id = frame.get("client_id") or ""
        if not isinstance(client_id, str) or len(client_id) > 64:
            return await self._error(
                "bad_client_id", "client_id must be a string of at most 64 characters."
            )
        if self.generation is not None and not self.generation.done():
            return await self._error(
                "busy", "An answer is still streaming: stop it or wait for it to finish."
            )
        # Taken before the question is stored, so a refusal stores nothing; given back when the
        # answer's task ends, or below when no answer follows. Before the rate limit: waiting
        # for a free slot (the page retries `busy` soon) spends no question of the budget.
        if not ratelimit.generation_take():
            return await self._error(
                "busy", "We are answering many customers right now; please ask again shortly."
            )
        slot_handed = False
        try:
            if not await ratelimit.rate_allow(
                ratelimit.ASK, session_key=self.session_key, address=self.address
            ):
                return await self._error(
                    "rate_limited", "Too many questions in a minute; please wait a moment."
                )
            slot_handed = await self._ask_accepted(frame, text=text, client_id=client_id)
        finally:
            if not slot_handed:
                ratelimit.generation_give_back()

    async def _ask_accepted(self, frame: dict[str, Any], *, text: str, client_id: str) -> bool:
        """Store the question and start its answer; True when an answer task now holds the
        generation slot taken for it. After the rate limit: a flood reaches no query."""

        def accept():  # noqa: ANN202
            return self._accept_question(
                text=text, client_id=client_id, conversation_id=frame.get("conversation_id")
            )

        # A question with a client_id is safe to store again after a dropped connection (the
        # resend check finds one that did commit), so a restarting database costs the customer
        # a pause, not an `unavailable` and a resend; without one a retry might store it twice.
        refused, conversation, user_message, held = await (
            db_retrying(accept) if client_id else accept()
        )
        if refused == "duplicate":
            # A resend after a reconnect: acknowledge the stored message, never ask twice.
            await self._send_json(
                {
                    "type": "ask.ack",
                    "client_id": client_id,
                    "message_id": user_message.id,
                    "conversation_id": str(user_message.conversation_id),
                    "duplicate": True,
                }
            )
            return False
        if refused == "not_found":
            await self._error("not_found", "That conversation does not exist in this session.")
            return False
        asks_for_person = held is None and wants_human(text)
        await self._send_json(
            {
                "type": "ask.ack",
                "client_id": client_id,
                "message_id": user_message.id,
                "conversation_id": str(conversation.id),
                "duplicate": False,
                # No bot answer follows: a person holds the conversation or was asked for.
                "held": held is not None or asks_for_person,
            }
        )
        if held is not None:
            # A person holds this conversation: the bot stays silent, the agent reads it.
            await handoffs.handoff_customer_message(handoff=held, message=user_message)
            return False
        if asks_for_person:
            # Asked for a person in words: no model work at all.
            await self._open_handoff(
                conversation_id=str(conversation.id), reason=Handoff.Reason.ASKED, email=""
            )
            return False
        self.control = RunControl()
        options = AnswerOptions(new_conversation=not frame.get("conversation_id"))
        self.generation = asyncio.create_task(
            self._generate(conversation, user_message, self.control, options)
        )
        # A callback, not the task's own finally: a task cancelled before it first runs never
        # enters its body.
        self.generation.add_done_callback(lambda _task: ratelimit.generation_give_back())
        return True

    async def _stop(self, frame: dict[str, Any]) -> None:
        await self._cancel(Message.Status.STOPPED)

    async def _feedback(self, frame: dict[str, Any]) -> None:
        await aclose_old_connections()
        try:
            message = await message_feedback(
                session_key=self.session_key,
                message_id=frame.get("message_id"),
                value=frame.get("value"),
                reason=frame.get("reason"),
            )
        except FeedbackError as exc:
            return await self._error(exc.code, str(exc))
        await self._send_json(
            {
                "type": "feedback.ok",
                "message_id": message.id,
                "value": message.feedback,
                "reason": message.feedback_reason,
            }
        )

    async def _handoff(self, frame: dict[str, Any]) -> None:
        await aclose_old_connections()
        await self._open_handoff(
            conversation_id=frame.get("conversation_id") or None,
            reason=frame.get("reason") or Handoff.Reason.ASKED,
            email=frame.get("email") or "",
        )

    async def _handoff_cancel(self, frame: dict[str, Any]) -> None:
        await aclose_old_connections()
        try:
            await handoffs.handoff_cancel(
                session_key=self.session_key, conversation_id=frame.get("conversation_id")
            )
        except HandoffError as exc:
            await self._error(exc.code, str(exc))

    async def _open_handoff(self, *, conversation_id: Any, reason: Any, email: Any) -> None:
        try:
            handoff = await handoffs.handoff_request(
                session_key=self.session_key,
                conversation_id=conversation_id,
                reason=reason,
                email=email,
                site=self.site,
            )
        except HandoffError as exc:
            return await self._error(exc.code, str(exc))
        # To every tab of the session, this one included.
        await handoffs.broadcast(self.group or "", status_frame(handoff))

    async def _generate(
        self,
        conversation: Conversation,
        user_message: Message,
        control: RunControl,
        options: AnswerOptions,
    ) -> None:
        # Its own lane: the task outlives the event that started it.
        async with database_lane():
            await self._answer(conversation, user_message, control, options)

    async def _answer(
        self,
        conversation: Conversation,
        user_message: Message,
        control: RunControl,
        options: AnswerOptions,
    ) -> None:
        events = answer_question(
            conversation=conversation, user_message=user_message, control=control, options=options
        )
        failed = False
        try:
            async for event in events:
                await self._send_json(event)
            # The end frame is out: the page may ask its next question while this task still
            # tidies up (the generator's close, its lane's connection), without a `busy`.
            if self.generation is asyncio.current_task():
                self.generation = None
        except Exception:
            logger.exception("answer failed")
            failed = True
        finally:
            # Stores the answer when it did not end by itself (a stop, a failed send).
            try:
                await events.aclose()
            except Exception:
                logger.exception("the failed answer could not be stored")
                failed = True
        if failed:
            # The pipeline stored it as an error (or interrupted); the page needs the end frame
            # to leave its answering state and show Send again.
            await self._error(
                "internal", "Something went wrong while answering; your question is saved."
            )
            await self._send_json(self._end_frame(control, Message.Status.ERROR))

    async def _cancel(self, reason: str) -> None:
        task = self.generation
        if task is None or task.done():
            return
        self.control.cancel_reason = reason
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        if reason == Message.Status.STOPPED:
            await self._send_json(self._end_frame(self.control, reason))

    @staticmethod
    def _end_frame(control: RunControl, status: str) -> dict[str, Any]:
        """The end frame of an answer that did not end by itself: what it paid, as stored
        (counted tokens are marked estimated). A failure keeps the stored interrupted."""
        stored = control.answer.message if control.answer else None
        if stored is not None and status == Message.Status.ERROR:
            if stored.status == Message.Status.INTERRUPTED:
                status = stored.status
        return {
            "type": "answer.end",
            "message_id": stored.id if stored else None,
            "status": status,
            "error_code": (stored.error_code if stored else "") or "",
            "cost": float(stored.cost) if stored else 0.0,
            "cost_estimated": stored.cost_estimated if stored else False,
            "usage": {
                "tokens_in": stored.tokens_in if stored else 0,
                "tokens_out": stored.tokens_out if stored else 0,
            },
        }

    @database_sync_to_async
    def _accept_question(
        self, *, text: str, client_id: str, conversation_id: Any
    ) -> tuple[str, Conversation | None, Message | None, Handoff | None]:
        """The resend check, the conversation and the stored question in one trip to the
        database thread and one commit: (refusal code or "", conversation, user message, the
        conversation's open handoff). A resend
        ("duplicate") returns the message stored before. Stored (committed) before any model
        work."""
        # In this trip rather than a hop of its own (aclose_old_connections): every trip to the
        # lane's thread is paid by every cache hit.
        close_old_connections()
        if client_id:
            existing = resent_question(session_key=self.session_key, client_id=client_id)
            if existing is not None:
                return "duplicate", None, existing, None
        with transaction.atomic():
            return self._accept_question_in_transaction(
                text=text, client_id=client_id, conversation_id=conversation_id
            )

    def _accept_question_in_transaction(
        self, *, text: str, client_id: str, conversation_id: Any
    ) -> tuple[str, Conversation | None, Message | None, Handoff | None]:
        # No conversation_id starts a new conversation: the browser owns which thread is open.
        if not conversation_id:
            # Titled as it is created, and nobody can hold a conversation this new: two
            # statements fewer for every first question.
            conversation = Conversation.objects.create(
                session_key=self.session_key, site=self.site, title=text[:80]
            )
            self.conversation = conversation
            user_message = Message.objects.create(
                conversation=conversation,
                role=Message.Role.USER,
                content=text,
                client_id=client_id,
            )
            return "", conversation, user_message, None
        try:
            conversation = Conversation.objects.get(
                id=conversation_id, session_key=self.session_key
            )
        except (Conversation.DoesNotExist, ValueError, ValidationError):
            return "not_found", None, None, None
        self.conversation = conversation
        user_message = Message.objects.create(
            conversation=conversation, role=Message.Role.USER, content=text, client_id=client_id
        )
        if not conversation.title:
            conversation.title = text[:80]
        conversation.save()
        held = (
            Handoff.objects.select_related("agent", "conversation__site")
            .filter(conversation=conversation, status__in=OPEN)
            .first()
        )
        return "", conversation, user_message, held

    @database_sync_to_async
    def _ensure_session(self) -> str:
        session = self.scope.get("session")
        if session is None:
            from django.contrib.sessions.backends.db import SessionStore

            session = SessionStore()
        if not session.session_key:
            session.save()
        return session.session_key

    async def _error(self, code: str, message: str) -> None:
        await self._send_json({"type": "error", "code": code, "message": message})

    async def _send_json(self, frame: dict[str, Any]) -> None:
        if not self.show_details:
            frame = customer_frame(frame)
        await self.send(text_data=json.dumps(frame))


class WidgetConsumer(ChatConsumer):
    """The widget's chat socket: the chat consumer, owned by a visitor token of one site."""

    async def connect(self) -> None:
        """Called on the handshake: find the site and the visitor, else refuse the socket."""
        key = self.scope["url_route"]["kwargs"]["key"]
        self.site = await WidgetSite.objects.filter(key=key, enabled=True).afirst()
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        visitor = (query.get("visitor") or [""])[0]
        if self.site is None or not VISITOR_TOKEN.match(visitor):
            await self.close(code=4403)
            return
        self.session_key = visitor_session_key(site=self.site, visitor=visitor)
        await self._start()
