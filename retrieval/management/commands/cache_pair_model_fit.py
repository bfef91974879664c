"""Refit the answer cache's pair model (retrieval/data/pair_model.json) from the public pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from retrieval.pair_model import MODEL_PATH
from retrieval.pair_model_fit import pair_model_refit

PUBLIC_PAIRS = settings.BASE_DIR / "bench" / "data" / "paraphrase_public.jsonl"
TEAM_PAIRS = [
    settings.BASE_DIR / "bench" / "data" / "cache_pairs_help.jsonl",
    settings.BASE_DIR / "bench" / "data" / "cache_pairs_demo.jsonl",
]


class Command(BaseCommand):
    help = (
        "Refit the cache's learned same-question decision on the fit half of the public "
        "paraphrase pairs (fixed seed) and write it; --check only compares with the shipped file."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pairs", default=str(PUBLIC_PAIRS), help="public labelled pairs")
        parser.add_argument(
            "--team-pairs",
            nargs="*",
            default=[str(p) for p in TEAM_PAIRS],
            help="look-alike pair files a dropped veto must not let through",
        )
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--out", default=str(MODEL_PATH))
        parser.add_argument("--check", action="store_true", help="compare, write nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        paths = [Path(options["pairs"]), *(Path(p) for p in options["team_pairs"])]
        for path in paths:
            if not path.is_file():
                raise CommandError(f"{path}: no such file")
        try:
            refit = pair_model_refit(
                public=paths[0],
                team=paths[1:],
                seed=options["seed"],
                store_dir=settings.VAR_DIR,
            )
        except ValueError as error:  # a bad line in a pair file, named with its number
            raise CommandError(str(error)) from error
        text = refit.model.to_json()
        out = Path(options["out"])
        if options["check"]:
            shipped = out.read_text(encoding="utf-8") if out.exists() else ""
            if shipped != text:
                raise CommandError(f"{out} differs from a refit on {paths[0]}")
            self.stdout.write(f"{out} is what a refit gives")
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        model = refit.model
        self.stdout.write(
            f"wrote {out}: features {', '.join(model.features)}; vetoes "
            f"{', '.join(model.vetoes) or 'none'}; cut {model.threshold}"
        )
