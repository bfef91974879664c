"""Frame limits through a real Daphne started as `make run` starts it (run_stack's command line)."""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

pytestmark = [pytest.mark.django_db(transaction=True)]


def _socket(daphne_server):  # noqa: ANN001, ANN202
    url = daphne_server.url.replace("http://", "ws://") + "/ws/chat/"
    return connect(url, origin=daphne_server.url, max_size=None, open_timeout=10)


def _next_error(ws) -> dict:  # noqa: ANN001
    while True:
        frame = json.loads(ws.recv(timeout=20))
        if frame["type"] == "error":
            return frame


def test_a_frame_over_the_chat_limit_is_refused_and_the_socket_stays_open(daphne_server) -> None:  # noqa: ANN001
    from django.conf import settings

    with _socket(daphne_server) as ws:
        ws.send("[" * (settings.CHAT_MAX_FRAME_BYTES + 1000))
        assert _next_error(ws)["code"] == "frame_too_large"
        # Still open: the next frame is read and answered.
        ws.send("{not json")
        assert _next_error(ws)["code"] == "bad_json"


def test_a_frame_over_the_socket_limit_closes_the_connection(daphne_server) -> None:  # noqa: ANN001
    from django.conf import settings

    from chatbot.models import Message

    before = Message.objects.count()
    with _socket(daphne_server) as ws:
        ws.send("x" * (settings.CHAT_SOCKET_MAX_BYTES + 1))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=20)
    # Daphne drops the connection (with close code 1009 when its close frame gets through
    # before the TCP connection ends): the frame is never handed to the consumer.
    assert closed.value.rcvd is None or closed.value.rcvd.code == 1009
    assert Message.objects.count() == before
