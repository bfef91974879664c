"""Build llama.cpp's server for this CPU from the pinned source (a set-up step `make` runs)."""

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.native_build import NativeBuildError, build

# What `make` downloads into VAR_DIR/llama-source (requirements-llama-source.txt).
SOURCE_GLOB = "llama_cpp_python-*.tar.gz"


class Command(BaseCommand):
    help = (
        "Compile llama-server for this machine's CPU from the llama.cpp source in the pinned "
        "llama-cpp-python sdist; serve_models runs it (LOCAL_MODEL_RUNTIME). Fast when done."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--source",
            type=Path,
            help=f"the sdist (default: the one {SOURCE_GLOB} in the var folder's llama-source)",
        )
        parser.add_argument("--jobs", type=int, default=2, help="parallel compile jobs")

    def handle(self, *args: Any, **options: Any) -> None:
        root = settings.LLAMA_SERVER_DIR
        source = options["source"] or self._source(settings.VAR_DIR / "llama-source")
        if not source.is_file():
            raise CommandError(f"no such file: {source}")
        try:
            build(source, root, jobs=max(1, options["jobs"]), say=self._say)
        except NativeBuildError as exc:
            raise CommandError(f"llama-server was not built: {exc}") from exc

    def _source(self, folder: Path) -> Path:
        found = sorted(folder.glob(SOURCE_GLOB))
        if len(found) != 1:
            raise CommandError(
                f"expected one {SOURCE_GLOB} in {folder}, found {len(found)}: download it with "
                "'pip download --no-deps --no-binary :all: --require-hashes "
                f"-r requirements-llama-source.txt -d {folder}' (make does)"
            )
        return found[0]

    def _say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()
