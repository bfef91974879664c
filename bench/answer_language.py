"""Are answers in the customer's language? Reads a stored evaluation run's answers.

Usage: DATABASE_NAME=<the run's database> python bench/answer_language.py [RUN_ID]
       (default: the newest run)

For each tier (and the cascade) of the run: of the answers that are neither declined nor "I
don't know", the share whose detected language is the question's (the product's own detector,
`retrieval.language.detect_language`), the share detected as another language (with the most
frequent pairs, question->answer) and the share too short or mixed to tell. Prints JSON.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")


def main() -> None:
    """Print the figures of one run."""
    import django

    django.setup()
    from retrieval.language import detect_language
    from routing.models import EvaluationResult, EvaluationRun

    runs = EvaluationRun.objects.order_by("-id")
    run = runs.filter(pk=int(sys.argv[1])).first() if len(sys.argv) > 1 else runs.first()
    if run is None:
        sys.exit("No such evaluation run in this database.")
    verdicts: dict[str, Counter] = defaultdict(Counter)
    others: dict[str, Counter] = defaultdict(Counter)
    rows = EvaluationResult.objects.filter(run=run, said_dont_know=False, abstained=False)
    for row in rows:
        if not row.answer.strip():
            continue
        asked, answered = detect_language(row.question), detect_language(row.answer)
        if not asked or not answered:
            verdicts[row.tier]["unsure"] += 1
        elif asked == answered:
            verdicts[row.tier]["same"] += 1
        else:
            verdicts[row.tier]["other"] += 1
            others[row.tier][f"{asked}->{answered}"] += 1
    report = {"run": run.pk, "name": run.name, "tiers": {}}
    for tier, counts in sorted(verdicts.items()):
        total = sum(counts.values())
        report["tiers"][tier] = {
            "answers": total,
            "same_language": round(counts["same"] / total, 3),
            "other_language": round(counts["other"] / total, 3),
            "unsure": round(counts["unsure"] / total, 3),
            "other_most_common": dict(others[tier].most_common(3)),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
