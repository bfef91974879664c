"""How fast an agent's words reach the customer's open chat, on loopback, with baselines.

Usage:
  python bench/handoff.py [--messages 200]

Starts its own stack: a throw-away database (bench_handoff) and Daphne on a free port (no
model server: a handoff never calls a model); everything is stopped and dropped at the end.
A customer socket asks for a person, an agent's inbox socket takes the conversation, then:
- agent_to_customer: the agent sends `say`; time until the customer's socket receives the
  `agent.message` (Daphne, the inbox consumer, the row lock and stored message in PostgreSQL,
  a channel-layer group_send, the chat consumer, the customer's socket);
- customer_to_agent: the customer's `ask` while the person holds the conversation; time until
  the agent's socket receives it (the question is stored first, no model runs);
- baseline_socket_round_trip: the customer sends a frame the consumer refuses at once; time to
  the `error` frame (one trip through Daphne and back, no database, no channel layer);
- baseline_group_send: the configured channel layer alone in this process (in-memory unless
  REDIS_URL is set): group_send to a group of one channel, then receive.
One message at a time. Prints JSON (milliseconds, p50 and p95 by nearest rank).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from cache_latency import free_port, percentiles  # noqa: E402


class Stack:
    """A throw-away database and Daphne, stopped together."""

    def __init__(self) -> None:
        from knowledge_db import bench_database

        self.drop = bench_database("bench_handoff")
        from chatbot.management.commands.run_stack import daphne_command

        self.port = free_port()
        env = {
            **os.environ,
            "CHAT_RATE_LIMIT_PER_MINUTE": "1000000",
            "CHAT_RATE_LIMIT_PER_ADDRESS_PER_MINUTE": "1000000",
            "SUPPORT_HOURS": "",
        }
        self.log = open(ROOT / "var" / "bench_handoff_daphne.log", "wb")
        self.proc = subprocess.Popen(
            daphne_command(bind="127.0.0.1", port=self.port),
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait()
        except BaseException:
            self.stop()
            raise
        self.http = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"

    def _wait(self, timeout: float = 120) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("daphne exited; see var/bench_handoff_daphne.log")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/healthz", timeout=2
                ) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("daphne did not come up")

    def stop(self) -> None:
        """Stop Daphne (by its own process id) and drop the database."""
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        self.drop()


def sessions() -> tuple[str, str]:
    """A customer's session and a logged-in agent's session (cookie values)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.contrib.sessions.backends.db import SessionStore
    from django.test import Client

    customer = SessionStore()
    customer.save()
    agent = get_user_model().objects.create_user(
        username="bench-agent", password=None, first_name="Bench", is_staff=True
    )
    agent.user_permissions.add(Permission.objects.get(codename="handle_handoff"))
    client = Client()
    client.force_login(agent)
    return customer.session_key or "", client.cookies["sessionid"].value


async def _until(ws: websockets.ClientConnection, kind: str) -> dict:
    while True:
        frame = json.loads(await ws.recv())
        if frame["type"] == kind:
            return frame


async def baseline_group_send(n: int) -> list[float]:
    """The channel layer alone: group_send to one channel and receive it."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("bench.baseline", channel)
    times = []
    for i in range(n):
        started = time.perf_counter()
        await layer.group_send("bench.baseline", {"type": "chat.frame", "frame": {"i": i}})
        await layer.receive(channel)
        times.append((time.perf_counter() - started) * 1000)
    await layer.group_discard("bench.baseline", channel)
    return times


async def measure(stack: Stack, n: int, customer_key: str, agent_key: str) -> dict:
    """Open a handoff, take it, then time n messages each way and n plain round trips."""
    origin = stack.http  # the app's own page, as a browser would send it
    customer = await websockets.connect(
        stack.ws + "/ws/chat/",
        origin=origin,
        additional_headers=[("Cookie", f"sessionid={customer_key}")],
    )
    agent = await websockets.connect(
        stack.ws + "/ws/inbox/",
        origin=origin,
        additional_headers=[("Cookie", f"sessionid={agent_key}")],
    )
    await _until(agent, "inbox.list")
    await customer.send(json.dumps({"type": "handoff"}))
    waiting = await _until(customer, "handoff.status")
    handoff_id = waiting["handoff_id"]
    await agent.send(json.dumps({"type": "take", "handoff_id": handoff_id}))
    await _until(customer, "handoff.status")

    # Warm-up: the first trips open pooled database connections.
    for i in range(5):
        await agent.send(json.dumps({"type": "say", "handoff_id": handoff_id, "text": f"w{i}"}))
        await _until(customer, "agent.message")
    agent_to_customer, customer_to_agent, round_trip = [], [], []
    for i in range(n):
        started = time.perf_counter()
        await agent.send(json.dumps({"type": "say", "handoff_id": handoff_id, "text": f"a{i}"}))
        frame = await _until(customer, "agent.message")
        agent_to_customer.append((time.perf_counter() - started) * 1000)
        assert frame["text"] == f"a{i}", frame

        started = time.perf_counter()
        await customer.send(
            json.dumps(
                {
                    "type": "ask",
                    "text": f"c{i}",
                    "client_id": f"bench-{i}",
                    "conversation_id": waiting["conversation_id"],
                }
            )
        )
        while True:
            relayed = await _until(agent, "conversation.message")
            if relayed["message"]["content"] == f"c{i}":
                break
        customer_to_agent.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await customer.send(json.dumps({"type": "bench-unknown"}))
        while True:
            frame = await _until(customer, "error")
            if frame["code"] == "unknown_type":
                break
        round_trip.append((time.perf_counter() - started) * 1000)
    await customer.close()
    await agent.close()
    return {
        "agent_to_customer": percentiles(agent_to_customer),
        "customer_to_agent": percentiles(customer_to_agent),
        "baseline_socket_round_trip": percentiles(round_trip),
        "baseline_group_send": percentiles(await baseline_group_send(n)),
    }


def main() -> None:
    """Run the benchmark and print its JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    stack = Stack()
    try:
        customer_key, agent_key = sessions()
        result = asyncio.run(measure(stack, args.messages, customer_key, agent_key))
        from django.conf import settings

        result["channel_layer"] = settings.CHANNEL_LAYERS["default"]["BACKEND"]
        result["server"] = "Daphne started by the script, loopback, one process"
        result["load_average"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(result, indent=2))
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
