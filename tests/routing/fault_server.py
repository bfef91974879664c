"""A tiny OpenAI-compatible SSE server on loopback that injects faults (tests only).

The requested model name picks the behaviour:
- ``ok:<text>``      streams <text> word by word, with log-probabilities and usage; at most
                     max_tokens words (a word a token), finish_reason "length" when cut;
- ``http500``        answers HTTP 500;
- ``timeout``        waits longer than any test timeout before answering;
- ``broken:<text>``  streams the first words of <text>, then closes the connection mid-answer;
- ``slow:<text>``    streams <text> a word every 0.2 s (to stop or time out mid-answer);
- ``cut:<text>``     streams the first words of <text> in a chunked body, then drops the
                     connection without the closing chunk (httpx: RemoteProtocolError);
- ``stall:<text>``   streams the first word of <text>, then sends nothing more for 30 s;
- ``busy``           answers HTTP 429 without Retry-After;
- ``busy<s>:<text>`` answers the first call of this model HTTP 429 with ``Retry-After: <s>``,
                     later calls like ``ok:<text>`` (a rate limit that clears).
Usage reports prompt_tokens=PROMPT_TOKENS and completion_tokens = number of words sent.

A support check (a request with max_tokens=1) gets its own behaviour when the model name ends
with ``|check=<mode>`` (any mode above, e.g. ``ok:Three days|check=http500`` or
``ok:Three days|check=ok:yes``); without the suffix it is answered like the answer.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PROMPT_TOKENS = 100


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Quiet: tests read results, not access logs."""

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        """Answer /v1/chat/completions according to the requested model name."""
        try:
            self._answer()
        except (BrokenPipeError, ConnectionResetError):
            # The client hung up mid-answer (a stop): count it, as a server would stop generating.
            self.server.hangups += 1  # type: ignore[attr-defined]

    def _answer(self) -> None:
        self.chunked = False
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self.server.requests.append(body)  # type: ignore[attr-defined]
        model, _, check = str(body.get("model", "")).partition("|check=")
        if check and body.get("max_tokens") == 1:
            model = check
        mode, _, text = model.partition(":")
        if mode.startswith("busy"):
            retry_after = mode.removeprefix("busy")
            calls = self.server.calls  # type: ignore[attr-defined]
            calls[model] = calls.get(model, 0) + 1
            if not retry_after or calls[model] == 1:
                payload = b'{"error": {"message": "rate limited", "type": "rate_limit"}}'
                self.send_response(429)
                if retry_after:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            mode = "ok"
        if mode == "http500":
            payload = b'{"error": {"message": "boom"}}'
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        if mode == "timeout":
            time.sleep(5)
            return
        if mode == "slow":
            text = " ".join([text] * 20)
        self.chunked = mode == "cut"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        if self.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        words = [w + " " for w in text.split()] or ["..."]
        if mode in ("broken", "cut"):
            words = words[: max(1, len(words) // 2)]
        limit = body.get("max_tokens")
        cut = mode == "ok" and isinstance(limit, int) and 0 < limit < len(words)
        if cut:
            words = words[:limit]
        for n, word in enumerate(words):
            if mode == "slow":
                time.sleep(0.2)
            if mode == "stall" and n == 1:
                time.sleep(30)
            self._event(
                {
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": word},
                            "logprobs": {
                                "content": [
                                    {
                                        "token": word,
                                        "logprob": -0.05,
                                        "bytes": None,
                                        "top_logprobs": [
                                            {"token": word, "logprob": -0.05, "bytes": None}
                                        ],
                                    }
                                ]
                            },
                            "finish_reason": None,
                        }
                    ]
                }
            )
        if mode == "broken":
            # Cut the connection without a finish_reason or [DONE].
            self.wfile.flush()
            self.close_connection = True
            return
        if mode == "cut":
            # Between two chunks, without the terminating zero-length chunk: the body is cut
            # short, as when a proxy or the model server dies mid-answer.
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        finish = "length" if cut else "stop"
        self._event({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        self._event(
            {
                "choices": [],
                "usage": {
                    "prompt_tokens": PROMPT_TOKENS,
                    "completion_tokens": len(words),
                    "total_tokens": PROMPT_TOKENS + len(words),
                },
            }
        )
        self._write(b"data: [DONE]\n\n")
        if self.chunked:
            self._write_raw(b"0\r\n\r\n")

    def _event(self, chunk: dict) -> None:
        chunk = {
            "id": "fault",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "fault",
            **chunk,
        }
        self._write(f"data: {json.dumps(chunk)}\n\n".encode())

    def _write(self, data: bytes) -> None:
        if getattr(self, "chunked", False):
            data = f"{len(data):x}\r\n".encode() + data + b"\r\n"
        self._write_raw(data)

    def _write_raw(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()


class FaultServer:
    """Start on a free loopback port in a thread; `base_url` for a tier; `stop()` when done."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.requests = []  # type: ignore[attr-defined]
        self._server.hangups = 0  # type: ignore[attr-defined]
        self._server.calls = {}  # type: ignore[attr-defined]
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def requests(self) -> list[dict]:
        """The JSON bodies received so far."""
        return self._server.requests  # type: ignore[attr-defined]

    @property
    def hangups(self) -> int:
        """Answers the client stopped reading mid-stream."""
        return self._server.hangups  # type: ignore[attr-defined]

    def stop(self) -> None:
        """Shut the server down."""
        self._server.shutdown()
        self._server.server_close()
