"""Serve the enabled local tiers' bundled models with llama.cpp, in one process of their own."""

from __future__ import annotations

import signal
import threading
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.bundled import ModelFileError, model_path
from routing.models import ModelTier
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
        if not specs:
            raise CommandError("No enabled tier has a bundled model; nothing to serve.")
        for key, spec in specs:
            self._port_check(key, spec)
        servers = []  # kept referenced: a collected xllamacpp.Server stops serving
        for key, spec in specs:
            self.stdout.write(
                f"serving {key} on http://{spec.host}:{spec.port}/v1 "
                f"({spec.parallel} slot(s) of context {spec.context_window}"
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
        for _, spec in specs:
            wait_until_healthy(f"http://{spec.host}:{spec.port}")
        self.stdout.write(self.style.SUCCESS("model servers ready"), ending="\n")
        self.stdout.flush()
        threading.Event().wait()

    def _port_check(self, key: str, spec: LocalServerSpec) -> None:
        taken = port_in_use(spec.host, spec.port)
        if taken:
            raise CommandError(
                f"cannot serve {key}: {taken}. Stop that process (often a model server left "
                f"from an earlier run), or serve {key} on another port (its tier's base URL in "
                "the admin, or --serve MODEL=PORT)."
            )

    def _specs(self, explicit: list[str]) -> list[tuple[str, LocalServerSpec]]:
        threads = settings.LOCAL_MODEL_THREADS
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
