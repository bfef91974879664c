"""What each scorer signal and the combined scorer are worth on a stored evaluation run.

Reads a run written by `manage.py evaluate` (tiers alone, rows per question and tier; no model
call) and prints, as JSON and a table:

- each signal's AUC alone per tier and split, for two labels: "right" (the scorer's label:
  answerable and the answer holds a gold answer) and "answerable" (SQuAD questions the tier
  answered: does the signal tell near misses from answerable questions?);
- the combined scorer fitted on the fit split (`scorer_select`), with and without the support
  check (`check_yes`), and its AUC on the test split per tier;
- the thresholds a tuner would choose on the fit split (`thresholds_choose`: within 0.70 of
  the large tier's cost and 2 F1 points of it, the most declined; else the best F1 within the
  cost bound), for each scorer;
- the trade-off curve on the test split: the last tier's threshold swept (lower tiers at the
  tuner's choice), with declined unanswerable, false abstentions, answerable F1 and cost
  relative to the largest tier alone *without* the check (its plain answer cost).

Costs: a row's cost holds its support check when one was asked, billed on the prompt tokens
the server reports (llama.cpp counts the cached prefix too); the replay removes it where a
threshold is 0 (the cascade does not ask the check there) and for the no-check scorer. The
variant `with_check_billed_new_tokens_only` bills the check on its new tokens only (its prompt
minus the answer call's prompt and answer), as a price of 0 for cached input would.

    manage.py evaluate_signals RUN_ID [--floor 0.30] [--json bench/results/evaluate_run3.json]
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from routing.evaluation import (
    RELEVANCE_FLOORS,
    Row,
    answer_right,
    policy_summary,
    relative_to,
    signal_aucs,
    thresholds_choose,
)
from routing.models import EvaluationResult, EvaluationRun
from routing.scorer import FEATURES, auc, score_signals, scorer_select

CASCADE = EvaluationResult.CASCADE
CHECK = "check_yes"


def _check(result: EvaluationResult) -> dict[str, Any]:
    scored = [a for a in (result.attempts or []) if a.get("score") is not None]
    return (scored[-1].get("check") or {}) if scored else {}


class Command(BaseCommand):
    help = "Single-signal and combined scorer AUCs, tuned thresholds and the trade-off curve."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run", type=int)
        parser.add_argument("--floor", type=float, default=None, help="Relevance floor to report")
        parser.add_argument("--json", help="Also write the JSON to this file")

    def handle(self, *args: Any, **options: Any) -> None:
        run = EvaluationRun.objects.filter(pk=options["run"]).first()
        if run is None:
            raise CommandError(f"No evaluation run {options['run']}.")
        floor = (
            options["floor"] if options["floor"] is not None else settings.CASCADE_RELEVANCE_FLOOR
        )
        results = list(EvaluationResult.objects.filter(run=run).exclude(tier=CASCADE))
        orders = {t["name"]: t["order"] for t in run.tiers}
        tiers = sorted({r.tier for r in results}, key=lambda t: orders.get(t, 0))
        if len(tiers) < 2:
            raise CommandError("The run needs at least two tiers.")
        fit = [r for r in results if r.split == "fit" and r.signals]
        labels_fit = [answer_right(r) for r in fit]
        scorers = {}
        for name, exclude in (("with_check", ()), ("without_check", (CHECK,))):
            report, cv = scorer_select(
                signals=[r.signals for r in fit], labels=labels_fit, exclude=exclude
            )
            scorers[name] = {"weights": report.weights, "fit_auc": report.auc, "cv_auc_fit": cv}
        out: dict[str, Any] = {
            "run": run.pk,
            "name": run.name,
            "tiers": tiers,
            "relevance_floor": floor,
            "rows": len(results),
            "check_asked": sum(1 for r in results if _check(r)),
            "check_failed": sum(1 for r in results if _check(r).get("error")),
            "check_missing_p_yes": sum(
                1 for r in results if _check(r) and _check(r).get("p_yes") is None
            ),
            "signal_auc": {},
            "scorers": scorers,
        }
        names = [*FEATURES]
        for tier in tiers:
            for split in ("fit", "test", "all"):
                subset = [
                    r for r in results if r.tier == tier and r.signals and split in ("all", r.split)
                ]
                squad = [r for r in subset if r.source == "squad" and not r.abstained]
                entry = {
                    "right": signal_aucs(
                        [r.signals for r in subset], [answer_right(r) for r in subset], names
                    ),
                    "answerable": signal_aucs(
                        [r.signals for r in squad], [r.answerable for r in squad], names
                    ),
                    "positives_right": sum(answer_right(r) for r in subset),
                    "rows": len(subset),
                }
                for label, weights in (
                    ("scorer_with_check", scorers["with_check"]["weights"]),
                    ("scorer_without_check", scorers["without_check"]["weights"]),
                ):
                    entry["right"][label] = {
                        "auc": _round(
                            auc(
                                [score_signals(r.signals, weights) for r in subset],
                                [answer_right(r) for r in subset],
                            )
                        ),
                        "n": len(subset),
                    }
                    entry["answerable"][label] = {
                        "auc": _round(
                            auc(
                                [score_signals(r.signals, weights) for r in squad],
                                [r.answerable for r in squad],
                            )
                        ),
                        "n": len(squad),
                    }
                out["signal_auc"].setdefault(tier, {})[split] = entry
        # Rows for replays: per tier, "<tier>" (with check: its cost, the check's share apart)
        # and "<tier>:plain" (no check: the answer's cost only), scored by each scorer.
        policies: dict[str, Any] = {}
        prices = {
            t["name"]: (float(t["price_input_per_mtok"]), float(t["price_output_per_mtok"]))
            for t in run.tiers
        }
        largest = tiers[-1]
        plain_largest = f"{largest}:plain"
        # The scorer with the check, its check billed as reported and on its new tokens only;
        # the scorer without it (no check paid).
        variants = (
            ("with_check", "with_check", ""),
            ("with_check_billed_new_tokens_only", "with_check", ":suffix"),
            ("without_check", "without_check", ":plain"),
        )
        for name, scorer_name, suffix in variants:
            scorer = scorers[scorer_name]
            rows = self._rows(
                results, scorer["weights"], with_check=scorer_name == "with_check", prices=prices
            )
            fit_rows = [r for r in rows if r.split == "fit"]
            test_rows = [r for r in rows if r.split == "test"]
            cascade = [f"{t}{suffix}" for t in tiers]
            collected = float(run.settings.get("relevance_floor", 0.0))
            thresholds, chosen_floor, fit_figures = thresholds_choose(
                fit_rows,
                tiers=cascade,
                largest=plain_largest,
                floors=sorted({collected, *(f for f in RELEVANCE_FLOORS if f >= collected)}),
                reference_floor=floor,
            )
            reference = {
                split: policy_summary(subset, tiers=[plain_largest], thresholds=[0.0], floor=floor)
                for split, subset in (("fit", fit_rows), ("test", test_rows))
            }
            curve = []
            for step in range(21):
                value = step / 20
                figures = policy_summary(
                    test_rows,
                    tiers=cascade,
                    thresholds=[*thresholds[:-1], value],
                    floor=floor,
                )
                point = {"last_threshold": value, **relative_to(figures, reference["test"])}
                curve.append(_rounded(point))
            # For each last-tier threshold, the lower tiers' thresholds chosen on the fit split
            # (best fit F1 within the cost bound, then most declined), figures on the test split.
            budget = 0.70 * reference["fit"]["mean_cost"]
            grid = [step / 20 for step in range(21)]
            frontier = []
            for value in grid:
                best = None
                for lower in itertools.product(grid, repeat=len(cascade) - 1):
                    figures = policy_summary(
                        fit_rows, tiers=cascade, thresholds=[*lower, value], floor=floor
                    )
                    if figures["mean_cost"] > budget + 1e-15:
                        continue
                    key = (
                        round(figures["answerable_f1"], 3),
                        figures["abstain_unanswerable"],
                        -figures["mean_cost"],
                    )
                    if best is None or key > best[0]:
                        best = (key, list(lower))
                if best is None:
                    continue
                figures = policy_summary(
                    test_rows, tiers=cascade, thresholds=[*best[1], value], floor=floor
                )
                frontier.append(
                    _rounded(
                        {
                            "last_threshold": value,
                            "lower_thresholds": best[1],
                            **relative_to(figures, reference["test"]),
                        }
                    )
                )
            largest_curve = []
            largest_tier = f"{largest}{suffix}"
            for step in range(21):
                value = step / 20
                figures = policy_summary(
                    test_rows, tiers=[largest_tier], thresholds=[value], floor=floor
                )
                largest_curve.append(
                    {"threshold": value, **_rounded(relative_to(figures, reference["test"]))}
                )
            singles = {
                f"{t} alone (no check)": _rounded(
                    relative_to(
                        policy_summary(
                            test_rows, tiers=[f"{t}:plain"], thresholds=[0.0], floor=floor
                        ),
                        reference["test"],
                    )
                )
                for t in tiers
            }
            policies[name] = {
                "tuner_choice_on_fit": {
                    "tiers": cascade,
                    "thresholds": thresholds,
                    "relevance_floor": chosen_floor,
                    "fit_split": _rounded(relative_to(fit_figures, reference["fit"])),
                    "test_split_at_chosen_floor": _rounded(
                        relative_to(
                            policy_summary(
                                test_rows, tiers=cascade, thresholds=thresholds, floor=chosen_floor
                            ),
                            reference["test"],
                        )
                    ),
                    "test_split_at_floor": _rounded(
                        relative_to(
                            policy_summary(
                                test_rows, tiers=cascade, thresholds=thresholds, floor=floor
                            ),
                            reference["test"],
                        )
                    ),
                },
                "singles_test": singles,
                "tradeoff_test_last_threshold": curve,
                "tradeoff_test_lower_tuned_on_fit": frontier,
                "tradeoff_test_largest_alone": largest_curve,
            }
        out["policies"] = policies
        text = json.dumps(out, indent=1)
        self.stdout.write(text)
        self.stdout.write(self._table(out))
        if options["json"]:
            Path(options["json"]).write_text(text + "\n", encoding="utf-8")

    def _rows(
        self,
        results: list[EvaluationResult],
        weights: dict[str, float],
        *,
        with_check: bool,
        prices: dict[str, tuple[float, float]],
    ) -> list[Row]:
        per_question: dict[str, dict[str, Any]] = {}
        top: dict[str, float] = {}
        for r in results:
            top[r.question_id] = max(
                top.get(r.question_id, 0.0), float(r.signals.get("top_similarity", 0.0))
            )
            entry = per_question.setdefault(
                r.question_id,
                {"source": r.source, "answerable": r.answerable, "split": r.split, "tiers": {}},
            )
            check = _check(r)
            check_cost = float(check.get("cost") or 0.0)
            # The check's new tokens only: its prompt minus the answer call's prompt and answer
            # (llama.cpp serves those from its cache; a price for cached input would apply).
            scored = [a for a in (r.attempts or []) if a.get("score") is not None]
            answer_tokens = (
                scored[-1]["tokens_in"]
                - check.get("tokens_in", 0)
                + scored[-1]["tokens_out"]
                - check.get("tokens_out", 0)
                if scored and check
                else 0
            )
            new_tokens = max(0, int(check.get("tokens_in", 0)) - answer_tokens)
            price = prices.get(r.tier, (0.0, 0.0))
            suffix_cost = (
                (new_tokens * price[0] + int(check.get("tokens_out", 0)) * price[1]) / 1e6
                if check
                else 0.0
            )
            check_latency = float(check.get("latency_ms") or 0.0)
            signals = dict(r.signals)
            if not with_check:
                signals.pop(CHECK, None)
            base = {
                "f1": r.f1,
                "score": score_signals(signals, weights) if r.signals else 0.0,
                "latency_ms": r.latency_ms,
                "abstained": r.abstained,
            }
            entry["tiers"][r.tier] = {
                **base,
                "cost": float(r.cost),
                "check_cost": check_cost,
                "check_latency_ms": check_latency,
            }
            entry["tiers"][f"{r.tier}:suffix"] = {
                **base,
                "cost": float(r.cost) - check_cost + suffix_cost,
                "check_cost": suffix_cost,
                "check_latency_ms": check_latency,
            }
            entry["tiers"][f"{r.tier}:plain"] = {
                **base,
                "cost": float(r.cost) - check_cost,
                "latency_ms": r.latency_ms - check_latency,
            }
        return [
            Row(question_id=q, top_similarity=top.get(q, 0.0), **v) for q, v in per_question.items()
        ]

    def _table(self, out: dict[str, Any]) -> str:
        lines = ["", "[single-signal AUC, test split: label right | label answerable]"]
        tiers = out["tiers"]
        names = sorted(
            {n for t in tiers for n in out["signal_auc"][t]["test"]["right"]},
            key=lambda n: (n.startswith("scorer"), n),
        )
        lines.append(f"{'signal':<22}" + "".join(f"{t:>22}" for t in tiers))
        for n in names:
            cells = []
            for t in tiers:
                entry = out["signal_auc"][t]["test"]
                right = entry["right"].get(n, {}).get("auc")
                ans = entry["answerable"].get(n, {}).get("auc")
                cells.append(f"{_fmt(right):>10} | {_fmt(ans):<9}")
            lines.append(f"{n:<22}" + "".join(f"{c:>22}" for c in cells))
        for name, data in out["policies"].items():
            choice = data["tuner_choice_on_fit"]
            lines.append(
                f"\n[{name}] tuner's choice on fit: {choice['tiers']} "
                f"{[round(v, 2) for v in choice['thresholds']]} floor {choice['relevance_floor']}"
            )
            lines.append(
                f"{'last thr':>8} {'abst unans':>10} {'false abst':>10} {'ans F1':>7} "
                f"{'F1/L':>6} {'cost/L':>7} {'abst off':>8}"
            )
            for p in data["tradeoff_test_last_threshold"][::2]:
                lines.append(
                    f"{p['last_threshold']:>8.2f} {p['abstain_unanswerable']:>10.2f} "
                    f"{p['false_abstention']:>10.2f} {p['answerable_f1']:>7.3f} "
                    f"{p['f1_vs_reference']:>6.2f} {p['cost_vs_reference']:>7.2f} "
                    f"{p['abstain_off_topic']:>8.2f}"
                )
            lines.append(
                f"[{name}] lower thresholds tuned on fit per last threshold (cost <= 0.70 L on fit)"
            )
            lines.append(
                f"{'last thr':>8} {'lower':>6} {'abst unans':>10} {'false abst':>10} "
                f"{'ans F1':>7} {'F1/L':>6} {'cost/L':>7} {'abst off':>8}"
            )
            for p in data["tradeoff_test_lower_tuned_on_fit"][::2]:
                lower = ",".join(f"{v:.2f}" for v in p["lower_thresholds"])
                lines.append(
                    f"{p['last_threshold']:>8.2f} {lower:>6} {p['abstain_unanswerable']:>10.2f} "
                    f"{p['false_abstention']:>10.2f} {p['answerable_f1']:>7.3f} "
                    f"{p['f1_vs_reference']:>6.2f} {p['cost_vs_reference']:>7.2f} "
                    f"{p['abstain_off_topic']:>8.2f}"
                )
            lines.append(f"[{name}] largest tier alone, its threshold swept")
            for p in data["tradeoff_test_largest_alone"][::2]:
                lines.append(
                    f"{p['threshold']:>8.2f} {'':>6} {p['abstain_unanswerable']:>10.2f} "
                    f"{p['false_abstention']:>10.2f} {p['answerable_f1']:>7.3f} "
                    f"{p['f1_vs_reference']:>6.2f} {p['cost_vs_reference']:>7.2f} "
                    f"{p['abstain_off_topic']:>8.2f}"
                )
        return "\n".join(lines) + "\n"


def _round(value: float) -> float | None:
    return None if value != value else round(value, 4)


def _rounded(data: dict[str, Any]) -> dict[str, Any]:
    # Four significant digits: costs per question are around 1e-4.
    return {k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in data.items()}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
