"""Run the whole product on one machine: model servers, task worker, Daphne; stop all together."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from routing.models import ModelTier
from routing.servers import wait_until_healthy


def daphne_command(*, bind: str, port: int) -> list[str]:
    """Daphne's command line. Its socket limit sits above the consumer's frame limit, so an
    oversized frame gets a `frame_too_large` error and the socket stays open; only a frame over
    CHAT_SOCKET_MAX_BYTES closes the connection (code 1009) before any of it is parsed."""
    return [
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
        "chatbot.asgi:application",
    ]


class Command(BaseCommand):
    help = (
        "Start serve_models, the task worker and Daphne on 127.0.0.1:8000; Ctrl-C stops them all."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args: Any, **options: Any) -> None:
        python = sys.executable
        procs: list[subprocess.Popen] = []
        local = list(ModelTier.objects.filter(enabled=True).exclude(local_model=""))
        try:
            if local:
                procs.append(subprocess.Popen([python, "manage.py", "serve_models"]))
                for tier in local:
                    wait_until_healthy(tier.base_url, timeout=300)
            procs.append(subprocess.Popen([python, "manage.py", "db_worker"]))
            procs.append(
                subprocess.Popen(daphne_command(bind=options["bind"], port=options["port"]))
            )
            self.stdout.write(
                self.style.SUCCESS(
                    f"\n  Chat: http://{options['bind']}:{options['port']}/   Admin: /admin/\n"
                )
            )
            signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
            while all(p.poll() is None for p in procs):
                time.sleep(0.5)
            self.stderr.write("a process exited; stopping the others")
        except KeyboardInterrupt:
            pass
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
