"""Serve the enabled local tiers' bundled models with llama.cpp, in one process of their own."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from subprocess import Popen
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from routing.bundled import ModelFileError, model_path
from routing.models import ModelTier
from routing.native_build import native_server
from routing.per_tier import PerTierCountError
from routing.servers import (
    DraftSettingError,
    LocalServerSpec,
    draft_for,
    port_in_use,
    slots_for,
    start_local_server,
    wait_until_healthy,
)


class Command(BaseCommand):
    help = "Start a llama.cpp server on loopback for each enabled tier with a bundled model."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--serve",
            action="append",
            default=[],
            metavar="MODEL=PORT[:CTX[:SLOTS]]",
            help=(
                "Serve a bundled model on a port instead of the enabled tiers (repeatable); "
                "CTX is each slot's context, SLOTS defaults to LOCAL_MODEL_PARALLEL."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # Nothing here is worth a graceful stop: the servers are threads of this process and
        # hold no state. The kernel's default action ends it at once on SIGTERM or Ctrl-C, even
        # while llama.cpp loads a model or generates in C code, which would hold back a Python
        # handler (and a Python exit waits for the server threads): the ports are free at once.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        specs = self._specs(options["serve"])
        # Nothing here reads the database again: give its connection (and the pool's threads)
        # back before servers start. A fork beside running threads may hang in the child before
        # it runs the server (Python's preexec_fn warning), and the connection would sit idle
        # for as long as the servers run.
        for connection in connections.all(initialized_only=True):
            connection.close()
            if hasattr(connection, "close_pool"):
                connection.close_pool()
        if not specs:
            raise CommandError("No enabled tier has a bundled model; nothing to serve.")
        for key, spec in specs:
            self._port_check(key, spec)
        servers: list[Any] = []  # kept referenced: a collected xllamacpp.Server stops serving
        if any(spec.server_binary for _, spec in specs):
            # Servers in child processes hold the ports until they have exited: on SIGTERM or
            # Ctrl-C they are killed and waited for, then this process ends as it would have.
            # (Were this process killed outright, the kernel still kills them: servers.py.)
            # Plain system calls: the handler may run inside Popen.poll(), which holds a lock
            # that Popen.wait() would wait for forever.
            def stop(signum: int, _frame: Any) -> None:
                children = [s for s in servers if isinstance(s, Popen) and s.returncode is None]
                for child in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child.pid, signal.SIGKILL)
                for child in children:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(child.pid, 0)
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, stop)
        for key, spec in specs:
            self.stdout.write(
                f"serving {key} on http://{spec.host}:{spec.port}/v1 "
                f"({'native llama-server' if spec.server_binary else 'xllamacpp wheel'}, "
                f"{spec.parallel} slot(s) of context {spec.context_window}"
                + (
                    f", drafting {spec.draft_max} with {spec.draft_model_path.stem}"
                    if spec.draft_model_path
                    else ""
                )
                + ")"
            )
            self.stdout.flush()
            try:
                servers.append(start_local_server(spec))
            except Exception as exc:
                # llama.cpp says only "Failed to init server": name the port if that is why.
                self._port_check(key, spec)
                raise CommandError(f"could not start {key} on port {spec.port}: {exc}") from exc
        for (key, spec), server in zip(specs, servers, strict=True):
            try:
                wait_until_healthy(f"http://{spec.host}:{spec.port}", server=server)
            except RuntimeError as exc:
                raise CommandError(f"could not start {key}: {exc}") from exc
        self.stdout.write(self.style.SUCCESS("model servers ready"), ending="\n")
        self.stdout.flush()
        children = [
            (key, server)
            for (key, _), server in zip(specs, servers, strict=True)
            if isinstance(server, Popen)
        ]
        if not children:
            threading.Event().wait()
        # A child that ends ends this process too, as a crash of an in-process server would: the
        # stack (run_stack) restarts serve_models, and the kernel ends the other children.
        while True:
            for key, child in children:
                if child.poll() is not None:
                    raise CommandError(
                        f"the model server for {key} stopped (exit code {child.returncode})"
                    )
            time.sleep(0.5)

    def _port_check(self, key: str, spec: LocalServerSpec) -> None:
        taken = port_in_use(spec.host, spec.port)
        if taken:
            raise CommandError(
                f"cannot serve {key}: {taken}. Stop that process (often a model server left "
                f"from an earlier run), or serve {key} on another port (its tier's base URL in "
                "the admin, or --serve MODEL=PORT)."
            )

    def _server_binary(self) -> Path | None:
        """The native llama-server per LOCAL_MODEL_RUNTIME, or None for the wheel's."""
        if settings.LOCAL_MODEL_RUNTIME == "wheel":
            return None
        binary = native_server(settings.LLAMA_SERVER_DIR)
        if binary is None and settings.LOCAL_MODEL_RUNTIME == "native":
            raise CommandError(
                "LOCAL_MODEL_RUNTIME=native, but no llama-server was built for this CPU in "
                f"{settings.LLAMA_SERVER_DIR}: run 'manage.py build_llama_server' (make does), "
                "or set LOCAL_MODEL_RUNTIME=auto to use the wheel's llama.cpp."
            )
        return binary

    def _specs(self, explicit: list[str]) -> list[tuple[str, LocalServerSpec]]:
        threads = settings.LOCAL_MODEL_THREADS
        binary = self._server_binary()
        specs: list[tuple[str, LocalServerSpec]] = []
        try:
            if explicit:
                for item in explicit:
                    key, _, rest = item.partition("=")
                    port, _, rest = rest.partition(":")
                    ctx, _, slots = rest.partition(":")
                    try:
                        port_number, context = int(port), int(ctx or 4096)
                        parallel = (
                            int(slots) if slots else slots_for(key, settings.LOCAL_MODEL_PARALLEL)
                        )
                    except ValueError as exc:
                        raise CommandError(
                            f"--serve {item!r}: expected MODEL=PORT[:CTX[:SLOTS]] with numbers "
                            f"({exc})"
                        ) from exc
                    if parallel < 1:
                        raise CommandError(f"--serve {item!r}: SLOTS must be at least 1")
                    path = model_path(key, settings.MODEL_CACHE_DIR)
                    specs.append(
                        (
                            key,
                            LocalServerSpec(
                                path,
                                port_number,
                                context_window=context,
                                threads=threads,
                                slot_similarity=settings.LOCAL_MODEL_SLOT_SIMILARITY,
                                parallel=parallel,
                                alias=key,
                                server_binary=binary,
                                **self._draft(key),
                            ),
                        )
                    )
                return specs
            for tier in ModelTier.objects.filter(enabled=True).exclude(local_model=""):
                url = urlparse(tier.base_url)
                path = model_path(tier.local_model, settings.MODEL_CACHE_DIR)
                specs.append(
                    (
                        tier.name,
                        LocalServerSpec(
                            path,
                            url.port or 80,
                            host=url.hostname or "127.0.0.1",
                            context_window=tier.context_window,
                            threads=threads,
                            slot_similarity=settings.LOCAL_MODEL_SLOT_SIMILARITY,
                            parallel=slots_for(tier.name, settings.LOCAL_MODEL_PARALLEL),
                            alias=tier.model,
                            server_binary=binary,
                            **self._draft(tier.name),
                        ),
                    )
                )
        except (ModelFileError, PerTierCountError, DraftSettingError) as exc:
            raise CommandError(str(exc)) from exc
        return specs

    def _draft(self, name: str) -> dict[str, Any]:
        """The LocalServerSpec fields of the draft model LOCAL_MODEL_DRAFT names for a server."""
        draft = draft_for(name, settings.LOCAL_MODEL_DRAFT)
        if draft is None:
            return {}
        return {
            "draft_model_path": model_path(draft.model, settings.MODEL_CACHE_DIR),
            "draft_max": draft.max_tokens,
        }
