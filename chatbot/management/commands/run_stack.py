"""Run the whole product on one machine: model servers, the task workers and Daphne, supervised.

A child that dies is restarted (with a growing pause, logged) while the others keep serving.
SIGTERM or Ctrl-C stops every child, each in its own process group, within STOP_SECONDS.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections, connections

from chatbot.prompts import warm_messages
from chatbot.sweep import messages_sweep_streaming
from routing.models import ModelTier
from routing.servers import parent_death_signal, port_in_use

log = logging.getLogger("chatbot.run_stack")

# SIGTERM to every child's group, then SIGKILL to what is left after this many seconds: within
# the 10 s that systemd, Docker and Kubernetes wait before they kill everything themselves.
STOP_SECONDS = 7.0
# Pause before restarting a child that died: doubles per quick death, up to the maximum; a
# child that ran RESTART_STABLE_SECONDS counts as healthy again.
RESTART_FIRST_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
RESTART_STABLE_SECONDS = 60.0


def daphne_command(*, bind: str, port: int) -> list[str]:
    """Daphne's command line. Its socket limit sits above the consumer's frame limit, so an
    oversized frame gets a `frame_too_large` error and the socket stays open; only a frame over
    CHAT_SOCKET_MAX_BYTES closes the connection (code 1009) before any of it is parsed."""
    command = [
        sys.executable,
        "-m",
        "daphne",
        "-b",
        bind,
        "-p",
        str(port),
        "--websocket-max-message-size",
        str(max(settings.CHAT_SOCKET_MAX_BYTES, settings.CHAT_MAX_FRAME_BYTES + 1)),
        "--application-close-timeout",
        "5",
    ]
    if settings.SECURE_PROXY_SSL_HEADER:
        # Behind the proxy that DJANGO_PROXY_SSL_HEADER trusts: its X-Forwarded-For is the
        # client's address (login throttling and rate limits key on it).
        command.append("--proxy-headers")
    return [*command, "chatbot.asgi:application"]


@dataclass
class Child:
    """One supervised process and its restart state."""

    name: str
    argv: list[str]
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None
    restarts: int = 0

    def start(self) -> None:
        # Its own process group (a stop reaches its children too), and SIGTERM if the
        # supervisor itself is killed.
        self.process = subprocess.Popen(
            self.argv, preexec_fn=parent_death_signal(signal.SIGTERM, new_session=True)
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("%s started (pid %s)", self.name, self.process.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass


class Command(BaseCommand):
    help = (
        "Start serve_models, the task worker and Daphne on 127.0.0.1:8000; a child that dies "
        "is restarted; SIGTERM or Ctrl-C stops them all."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args: Any, **options: Any) -> None:
        bind, port = options["bind"], options["port"]
        python = sys.executable
        local = self.local = list(ModelTier.objects.filter(enabled=True).exclude(local_model=""))
        self._ports_check(bind, port, local)
        self._sweep()
        self.stop_requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._request_stop)
        children: list[Child] = []
        try:
            if local:
                models = Child("serve_models", [python, "manage.py", "serve_models"])
                children.append(models)
                models.start()
                self._wait_models(models, local)
                self._warm_models(local)
            if not self.stop_requested:
                for child in (
                    Child("db_worker", [python, "manage.py", "db_worker"]),
                    Child("web_worker", [python, "manage.py", "db_worker", "--queue-name", "web"]),
                    Child("daphne", daphne_command(bind=bind, port=port)),
                ):
                    children.append(child)
                    child.start()
                self.stdout.write(
                    self.style.SUCCESS(f"\n  Chat: http://{bind}:{port}/   Admin: /admin/\n")
                )
                self.stdout.flush()
            self._supervise(children)
        finally:
            self._stop(children)

    def _request_stop(self, signum: int, frame: Any) -> None:  # noqa: ARG002
        self.stop_requested = True

    def _ports_check(self, bind: str, port: int, local: list[ModelTier]) -> None:
        wanted = [(bind, port, "--port")]
        for tier in local:
            url = urlparse(tier.base_url)
            wanted.append(
                (url.hostname or "127.0.0.1", url.port or 80, f"tier {tier.name}'s base URL")
            )
        for host, number, where in wanted:
            taken = port_in_use(host, number)
            if taken:
                raise CommandError(
                    f"{taken}. Stop that process (often one left from an earlier run), or "
                    f"choose another port ({where})."
                )

    def _wait_models(self, models: Child, local: list[ModelTier]) -> None:
        """Until every local tier answers /health; a model server that dies is restarted."""
        import urllib.request

        pending = {t.base_url.removesuffix("/").removesuffix("/v1") for t in local}
        while pending and not self.stop_requested:
            if not models.alive():
                self._restart_due(models)
                time.sleep(0.25)
                continue
            for root in list(pending):
                try:
                    with urllib.request.urlopen(f"{root}/health", timeout=2) as response:
                        if response.status == 200:
                            pending.discard(root)
                except OSError:
                    pass
            time.sleep(0.25)

    @staticmethod
    def _warm_models(local: list[ModelTier], *, wait_seconds: float = 0.0) -> threading.Thread:
        """Each local model server reads, beside Daphne's own start, the prompts of
        `warm_messages`: the start every prompt shares (the instructions and the passages'
        opening mark), then the passage sets its customers' answers quoted most often
        (LOCAL_MODEL_WARM_PROMPTS). A server's prompt cache starts empty: the first question
        then prefills only its own passages and words, or only its words on a popular topic.
        wait_seconds: first wait that long for the servers to answer (after a restart)."""

        def warm() -> None:
            deadline = time.monotonic() + wait_seconds
            read: list[str] = []
            try:
                for tier in local:
                    prompts = warm_messages(tier.name, settings.LOCAL_MODEL_WARM_PROMPTS)
                    for messages in prompts:
                        if not Command._warm_one(tier, messages, deadline):
                            break
                    read.append(f"{tier.name}: {len(prompts) - 1} passage sets")
            finally:
                connections.close_all()  # this thread's own
            log.info("model servers warmed (%s)", "; ".join(read))

        thread = threading.Thread(target=warm, name="warm-models", daemon=True)
        thread.start()
        return thread

    @staticmethod
    def _warm_one(tier: ModelTier, messages: list[dict[str, str]], deadline: float) -> bool:
        """One prompt read by the tier's server (one token out); False when it cannot be."""
        body = {"model": tier.model, "messages": messages, "max_tokens": 1}
        request = urllib.request.Request(
            f"{tier.base_url.rstrip('/')}/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        while True:
            try:
                with urllib.request.urlopen(request, timeout=300):
                    return True
            except OSError as exc:
                if time.monotonic() >= deadline:
                    log.warning("model server of %s not warmed: %s", tier.name, exc)
                    return False
                time.sleep(0.5)

    def _supervise(self, children: list[Child]) -> None:
        interval = settings.CHAT_SWEEP_INTERVAL_SECONDS
        next_sweep = time.monotonic() + interval
        while not self.stop_requested:
            for child in children:
                if not child.alive():
                    self._restart_due(child)
            if time.monotonic() >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + interval
            time.sleep(0.25)

    def _restart_due(self, child: Child) -> None:
        """Note a child's death once, then restart it when its pause is over."""
        now = time.monotonic()
        if child.restart_at is None:
            code = child.process.returncode if child.process else None
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            if now - child.started_at >= RESTART_STABLE_SECONDS:
                child.quick_deaths = 0
            pause = min(RESTART_MAX_SECONDS, RESTART_FIRST_SECONDS * 2**child.quick_deaths)
            child.quick_deaths += 1
            child.restart_at = now + pause
            log.warning("%s died (%s); restarting in %.0f s", child.name, how, pause)
        elif now >= child.restart_at:
            child.restarts += 1
            log.info("%s: restart %d", child.name, child.restarts)
            child.start()
            if child.name == "serve_models":
                self._warm_models(self.local, wait_seconds=300)

    def _sweep(self) -> None:
        try:
            swept = messages_sweep_streaming()
        except Exception:  # noqa: BLE001 - a database outage must not stop the supervisor
            log.exception("sweeping answers left streaming failed; will retry")
            return
        finally:
            close_old_connections()
        if swept:
            log.warning(
                "%d answer(s) left streaming by a stopped process marked interrupted", swept
            )

    def _stop(self, children: list[Child]) -> None:
        """SIGTERM to every child's group, SIGKILL to what is left after STOP_SECONDS."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        running = [c for c in children if c.alive()]
        for child in running:
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline and any(c.alive() for c in running):
            time.sleep(0.1)
        for child in running:
            if child.alive():
                log.warning("%s did not stop within %.0f s: killed", child.name, STOP_SECONDS)
        for child in children:
            # Also what is left of each group (a parse child, a stray grandchild).
            child.signal_group(signal.SIGKILL)
            if child.process is not None:
                child.process.wait()
        log.info("stopped")
