"""One-off probe (evaluation run 3): a pre-answer "do the passages contain the answer?" per tier.

For each SQuAD question of run 1 in the evaluation database, the tier's answer prompt as the
pipeline builds it (retrieval above the relevance floor, the tier's fitted passages) with the
question followed by PROMPT as the last user turn; max_tokens=1; P(yes) over yes/no; then the
AUC of P(yes) for answerable against unanswerable questions, per split. Kept as run (output in
precheck_probe_run3.json), not part of the product:

    DATABASE_NAME=eval_run3 LOCAL_MODEL_PORT_BASE=8601 CASCADE_RELEVANCE_FLOOR=0.30 \
        PYTHONPATH=. python bench/results/precheck_probe_run3.py medium
"""

import asyncio
import json
import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
django.setup()

from chatbot.pipeline import retrieve, tier_prompt  # noqa: E402
from chatbot.prompts import build_messages  # noqa: E402
from routing.cascade import p_yes_from_top  # noqa: E402
from routing.evaluation.fit import auc  # noqa: E402
from routing.models import EvaluationRun, ModelTier  # noqa: E402
from routing.providers import Generation, OpenAICompatibleProvider  # noqa: E402

PROMPT = "Do the passages above contain the answer to this question? Reply yes or no."


async def main(tier_name: str) -> None:
    run = await EvaluationRun.objects.aget(pk=1)
    tier = await ModelTier.objects.aget(name=tier_name)
    provider = OpenAICompatibleProvider(tier.provider_config())
    out = []
    for q in run.settings["questions"]:
        if q["source"] != "squad":
            continue
        passages = await retrieve(question=q["question"])
        if not passages:
            continue
        fitted = (
            await tier_prompt(tier=tier, passages=passages, turns=[], question=q["question"])
        ).passages
        messages = build_messages(
            passages=fitted, history=[], question=q["question"] + "\n\n" + PROMPT
        )
        g = Generation()
        async for _ in provider.stream(messages=messages, max_tokens=1, generation=g):
            pass
        out.append(
            {
                "id": q["id"],
                "split": q["split"],
                "answerable": q["answerable"],
                "p_yes": p_yes_from_top(g.first_top_logprobs),
                "ms": g.total_ms,
                "tokens_in": g.tokens_in,
            }
        )
        print(json.dumps(out[-1]), flush=True)
    for split in ("fit", "test", None):
        rows = [r for r in out if r["p_yes"] is not None and (split is None or r["split"] == split)]
        value = auc([r["p_yes"] for r in rows], [r["answerable"] for r in rows])
        print(tier_name, split or "all", len(rows), "AUC answerable", value, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
