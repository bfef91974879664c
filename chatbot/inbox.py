"""The agents' inbox socket: live list of handoffs, open one, take it, write, close.

Only active staff with the `chatbot.handle_handoff` permission connect; everyone else's
handshake is refused. Every inbox joins one channel-layer group, so a change made by one agent
(or a customer's new message) reaches all agents, on any process.
"""

from __future__ import annotations

import json
from typing import Any

from channels.db import aclose_old_connections, database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from chatbot import handoff as handoffs
from chatbot import metrics
from chatbot.handoff_selectors import HandoffError, handoff_detail, inbox_list

PERMISSION = "chatbot.handle_handoff"


def can_handle_handoffs(user: Any) -> bool:
    """True for an active staff user holding the handoff permission (superusers hold all)."""
    return bool(
        user is not None
        and user.is_authenticated
        and user.is_active
        and user.is_staff
        and user.has_perm(PERMISSION)
    )


class InboxConsumer(AsyncWebsocketConsumer):
    """One agent's inbox tab."""

    joined = False

    async def connect(self) -> None:
        """Called on the handshake: agents only; then the current list."""
        self.user = self.scope.get("user")
        if not await database_sync_to_async(can_handle_handoffs)(self.user):
            await self.close(code=4403)
            return
        await self.channel_layer.group_add(handoffs.INBOX_GROUP, self.channel_name)
        self.joined = True
        await self.accept()
        metrics.socket_opened(self)
        await self._send({"type": "inbox.list", "handoffs": await inbox_list()})

    async def disconnect(self, code: int) -> None:
        """Called when the socket closes: leave the inbox group."""
        metrics.socket_closed(self)
        if self.joined:
            await self.channel_layer.group_discard(handoffs.INBOX_GROUP, self.channel_name)

    async def chat_frame(self, event: dict[str, Any]) -> None:
        """Called for a change in any handoff: forward it to this agent."""
        await self._send(event["frame"])

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called per frame: open, take, say or close a handoff."""
        if text_data is None or len(text_data.encode()) > settings.CHAT_MAX_FRAME_BYTES:
            return await self._error("bad_json", "Send JSON text frames within the size limit.")
        try:
            frame = json.loads(text_data)
        except json.JSONDecodeError:
            return await self._error("bad_json", "The frame is not valid JSON.")
        if not isinstance(frame, dict):
            return await self._error("bad_json", "A frame must be a JSON object with a 'type'.")
        kind = frame.get("type")
        handoff_id = frame.get("handoff_id")
        await aclose_old_connections()
        try:
            if kind == "open":
                detail = await handoff_detail(handoff_id=handoff_id)
                await self._send({"type": "handoff.detail", "handoff": detail})
            elif kind == "take":
                await handoffs.handoff_take(handoff_id=handoff_id, agent=self.user)
            elif kind == "say":
                await handoffs.handoff_say(
                    handoff_id=handoff_id, agent=self.user, text=frame.get("text")
                )
            elif kind == "close":
                await handoffs.handoff_close(handoff_id=handoff_id, agent=self.user)
            else:
                await self._error("unknown_type", f"Unknown frame type {kind!r}.")
        except HandoffError as exc:
            await self._error(exc.code, str(exc), handoff_id=handoff_id)

    async def _error(self, code: str, message: str, **extra: Any) -> None:
        await self._send({"type": "error", "code": code, "message": message, **extra})

    async def _send(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(frame))
