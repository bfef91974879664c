"""The PickLLM router replayed on a stored evaluation run: reward over questions for both
learners, per question cluster and global, against every fixed policy.

Usage: DATABASE_NAME=eval11 python bench/router.py [--run ID (default: the latest complete)] [--seeds 10] [--k 4]
           [--cycles 10] [--train-on grade|score] [--w-acc 1] [--w-cost 200] [--w-lat 0.05]

Reads `routing.EvaluationResult` rows (each question answered by every tier alone) and never
writes to the database. For each question and starting tier, the outcome of the cascade from
that tier up is the replay's (`routing.evaluation.replay.question_replay`: the live cascade's
own decisions, the run's thresholds and relevance floor, the stored scores). Questions below the
relevance floor are left out: no model runs for them, so the router is never asked and every
policy gets the same reward.

reward = w_acc * accuracy - w_cost * cost_usd - w_lat * log(latency_seconds), the router's own
`reward_compute`. The figures are always the true accuracy (the answer's F1 when answerable;
1 for declining an unanswerable question, else 0). The learners are trained on it
(--train-on grade: as if every answer got a thumbs or a label) or on the scorer's accuracy
(--train-on score: what the live router has without feedback). Questions are replayed in a
shuffled order per seed; with --cycles N the shuffled questions are replayed N times (each pass
reshuffled): that is cycling, the same questions again, not new ones.

Clusters: k-means (`routing.router_learners.clusters_fit`) over the configured embedder's vectors of the
questions. The fixed policies: each tier alone (threshold 0) and the cascade from each starting
tier. "Reaches 95%": the first question after which the learner's running mean reward stays at
or above the best fixed policy's running mean minus 5% of its magnitude, to the end (rewards
can be negative). Prints JSON, writes it to --out (bench/results/router.json) and plots beside it
(router_single_pass.png, router_cycled.png).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatbot.settings")
RESULTS = ROOT / "bench" / "results"
LEARNERS = [
    ("sla", "global"),
    ("sla", "cluster"),
    ("qlearning", "global"),
    ("qlearning", "cluster"),
]


@dataclass(frozen=True)
class Outcome:
    """One question under one policy: true accuracy, the scorer's, cost and latency."""

    accuracy: float
    score_accuracy: float
    cost: float
    latency_ms: float
    tier: str | None


def load(run_id: int | None) -> tuple[Any, list[str], list[Any], list[str], float]:
    """The run, its tiers (cheapest first), its questions answered by all, their texts, floor."""
    from chatbot.evaluation.rows import question_rows
    from routing.models import EvaluationResult, EvaluationRun

    runs = EvaluationRun.objects.order_by("-started_at")
    run = runs.get(id=run_id) if run_id else runs.filter(status="complete").first()
    if run is None:
        raise SystemExit("No complete evaluation run in this database (set DATABASE_NAME).")
    order, rows = question_rows(run=run)
    texts = dict(
        EvaluationResult.objects.filter(run=run).values_list("question_id", "question").distinct()
    )
    floor = float((run.settings or {}).get("relevance_floor") or 0.0)
    return run, order, rows, [texts[r.question_id] for r in rows], floor


def outcome(row: Any, policy: Any) -> Outcome:
    """The replayed outcome of one policy on one question, with both accuracies."""
    from routing.evaluation.replay import question_replay

    done = question_replay(row=row, policy=policy)
    if done.tier is not None:
        accuracy = row.tiers[done.tier].f1 if row.answerable else 0.0
        score = row.tiers[done.tier].score
    elif done.abstained:
        accuracy = 0.0 if row.answerable else 1.0
        scored = [t for t in policy.tiers if not row.tiers[t].error]
        score = 1.0 - row.tiers[scored[-1]].score if scored else 0.0
    else:
        accuracy = score = 0.0
    return Outcome(accuracy, score, done.cost, done.latency_ms, done.tier)


def reached_at(learner: np.ndarray, best: np.ndarray) -> int | None:
    """The first question (1-based) after which the running mean stays >= 95% of the best's."""
    target = best - 0.05 * np.abs(best)
    ok = learner >= target
    if not ok[-1]:
        return None
    bad = np.flatnonzero(~ok)
    return int(bad[-1]) + 2 if len(bad) else 1


def running_mean(values: np.ndarray) -> np.ndarray:
    """Mean of the first i values, for each i."""
    return np.cumsum(values) / np.arange(1, len(values) + 1)


def window_mean(values: np.ndarray, width: int) -> np.ndarray:
    """Mean of each run of `width` consecutive values (from the width-th value on)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    return (sums[width:] - sums[:-width]) / width


def simulate(
    *,
    kind: str,
    scope: str,
    order: list[int],
    arms: list[str],
    rewards: dict[str, np.ndarray],
    train: dict[str, np.ndarray],
    clusters: np.ndarray,
    rng: random.Random,
    rate: float,
    epsilon: float,
) -> tuple[np.ndarray, list[str]]:
    """The true rewards a learner earns on questions in this order, and the tiers it chose."""
    from routing.router_learners import GLOBAL, learner_choose, learner_new, learner_update

    states: dict[int, Any] = {}
    earned, chosen = [], []
    for q in order:
        key = int(clusters[q]) if scope == "cluster" else GLOBAL
        state = states.get(key) or learner_new(kind=kind, tiers=arms)
        arm, _explored = learner_choose(state, epsilon=epsilon, rng=rng)
        states[key], _beta = learner_update(state, tier=arm, reward=train[arm][q], rate=rate)
        earned.append(rewards[arm][q])
        chosen.append(arm)
    return np.asarray(earned), chosen


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The convergence figures in plain words, one line per pass and learner."""
    lines = [
        f"{report['questions']} questions above the relevance floor "
        f"({report['left_out_below_floor']} below it left out); best fixed policy "
        f"{report['best_fixed_policy']!r}, best fixed starting tier "
        f"{report['best_fixed_starting_tier']!r}."
    ]
    for label, data in report["passes"].items():
        how = (
            f"cycling: {data['questions_replayed']} questions = the same questions replayed"
            if data["cycling"]
            else f"one pass of {data['questions_replayed']} questions"
        )
        for name, learner in data["learners"].items():
            parts = []
            for target, rules in learner["reaches_95pct_of"].items():
                for rule, found in rules.items():
                    where = (
                        f"after {found['median_questions']} questions (median)"
                        if found["median_questions"] is not None
                        else "never"
                    )
                    parts.append(
                        f"95% of the {target} by {rule.replace('_', ' ')}: "
                        f"{found['seeds_reaching']} seeds, {where}"
                    )
            lines.append(
                f"{label} ({how}) {name}: mean reward {learner['mean_reward']} "
                f"(best fixed {data['best_fixed_mean_reward']}); " + "; ".join(parts)
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--train-on", choices=["grade", "score"], default="grade")
    parser.add_argument("--w-acc", type=float, default=1.0)
    parser.add_argument("--w-cost", type=float, default=200.0)
    parser.add_argument("--w-lat", type=float, default=0.05)
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--out", default=str(RESULTS / "router.json"))
    args = parser.parse_args()

    import django

    django.setup()
    from retrieval.embedders import get_embedder
    from routing.evaluation.replay import Policy, question_replay
    from routing.router_learners import (
        RewardWeights,
        cluster_assign,
        clusters_fit,
        reward_compute,
    )

    run, tier_order, all_rows, all_texts, floor = load(args.run)
    thresholds = {t: float(run.thresholds.get(t, 0.0)) for t in tier_order}
    probe = Policy(tiers=(tier_order[0],), thresholds=(0.0,), floor=floor)
    kept = [
        i
        for i, row in enumerate(all_rows)
        if question_replay(row=row, policy=probe).reason != "no_passages"
    ]
    rows = [all_rows[i] for i in kept]
    texts = [all_texts[i] for i in kept]
    weights = RewardWeights(args.w_acc, args.w_cost, args.w_lat)

    def cascade_from(start: str) -> Any:
        tiers = tuple(tier_order[tier_order.index(start) :])
        return Policy(tiers=tiers, thresholds=tuple(thresholds[t] for t in tiers), floor=floor)

    policies = {
        f"{t} alone": Policy(tiers=(t,), thresholds=(0.0,), floor=floor) for t in tier_order
    }
    policies.update({f"cascade from {t}": cascade_from(t) for t in tier_order})
    table = {name: [outcome(r, p) for r in rows] for name, p in policies.items()}

    def reward_of(o: Outcome, accuracy: float) -> float:
        return reward_compute(
            accuracy=accuracy, cost=o.cost, latency_ms=o.latency_ms, weights=weights
        )

    true = {n: np.array([reward_of(o, o.accuracy) for o in os_]) for n, os_ in table.items()}
    scored = {
        n: np.array([reward_of(o, o.score_accuracy) for o in os_]) for n, os_ in table.items()
    }
    arms = list(tier_order)  # the router's arm: the cascade's starting tier
    arm_true = {a: true[f"cascade from {a}"] for a in arms}
    arm_train = {
        a: (true if args.train_on == "grade" else scored)[f"cascade from {a}"] for a in arms
    }

    vectors = get_embedder().embed(texts)
    centroids = clusters_fit(vectors, k=args.k, seed=0)
    clusters = np.array([cluster_assign(v, centroids) for v in vectors])

    n = len(rows)
    fixed_means = {name: float(v.mean()) for name, v in true.items()}
    best_fixed = max(fixed_means, key=fixed_means.__getitem__)
    per_cluster_best = (
        sum(max(arm_true[a][clusters == c].sum() for a in arms) for c in set(clusters.tolist())) / n
    )
    oracle = float(np.mean(np.max(np.vstack([arm_true[a] for a in arms]), axis=0)))

    def figures(name: str) -> dict[str, Any]:
        outs = table[name]
        answerable = [o.accuracy for o, r in zip(outs, rows, strict=True) if r.answerable]
        return {
            "mean_reward": round(fixed_means[name], 4),
            "answerable_f1": round(float(np.mean(answerable)), 4) if answerable else None,
            "mean_accuracy": round(float(np.mean([o.accuracy for o in outs])), 4),
            "mean_cost_usd": float(np.mean([o.cost for o in outs])),
            "mean_latency_ms": round(float(np.mean([o.latency_ms for o in outs])), 1),
        }

    report: dict[str, Any] = {
        "command": "DATABASE_NAME="
        + os.environ.get("DATABASE_NAME", "")
        + " python bench/router.py "
        + " ".join(sys.argv[1:]),
        "run": {
            "id": run.id,
            "name": run.name,
            "tiers": tier_order,
            "thresholds": thresholds,
            "relevance_floor": floor,
        },  # fmt: skip
        "questions": n,
        "left_out_below_floor": len(all_rows) - n,
        "weights": {
            "w_acc": args.w_acc,
            "w_cost_per_usd": args.w_cost,
            "w_lat_per_log_s": args.w_lat,
        },
        "learning": {
            "rate": args.rate,
            "epsilon": args.epsilon,
            "train_on": args.train_on,
            "seeds": args.seeds,
        },  # fmt: skip
        "clusters": {
            "k": int(len(centroids)),
            "sizes": [int((clusters == c).sum()) for c in range(len(centroids))],
            "examples": {
                str(c): [
                    texts[i]
                    for i in sorted(
                        np.flatnonzero(clusters == c),
                        key=lambda i: -float(vectors[i] @ centroids[c]),
                    )[:3]
                ]
                for c in range(len(centroids))
            },
            "best_start_per_cluster": {
                str(c): max(arms, key=lambda a: arm_true[a][clusters == c].mean())
                for c in range(len(centroids))
                if (clusters == c).any()
            },
        },  # fmt: skip
        "fixed_policies": {name: figures(name) for name in table},
        "best_fixed_policy": best_fixed,
        "ceiling": {
            "best_start_per_cluster_mean_reward": round(per_cluster_best, 4),
            "best_start_per_question_mean_reward": round(oracle, 4),
        },  # fmt: skip
        "passes": {},
    }

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    best_arm = max((f"cascade from {a}" for a in arms), key=fixed_means.__getitem__)
    targets = {"best fixed policy": best_fixed, "best fixed starting tier": best_arm}
    report["best_fixed_starting_tier"] = best_arm
    names = [f"{k} {s}" for k, s in LEARNERS]
    for label, cycles in (("single_pass", 1), ("cycled", args.cycles)):
        length = n * cycles
        fixed_curves: dict[str, list[np.ndarray]] = {name: [] for name in true}
        learner_curves: dict[str, list[np.ndarray]] = {name: [] for name in names}
        # learner -> target -> criterion -> the question it was reached at, per seed
        reached: dict[str, dict[str, dict[str, list[int | None]]]] = {
            name: {t: {"running_mean": [], "last_pass_window": []} for t in targets}
            for name in names
        }
        starts: dict[str, list[float]] = {name: [] for name in names}
        late: dict[str, list[float]] = {name: [] for name in names}
        by_cluster: dict[str, dict[int, list[float]]] = {name: {} for name in names}
        for seed in range(args.seeds):
            shuffler = random.Random(seed)
            order: list[int] = []
            for _ in range(cycles):
                one = list(range(n))
                shuffler.shuffle(one)
                order += one
            for name in true:
                fixed_curves[name].append(running_mean(true[name][order]))
            for kind, scope in LEARNERS:
                name = f"{kind} {scope}"
                earned, chosen = simulate(
                    kind=kind,
                    scope=scope,
                    order=order,
                    arms=arms,
                    rewards=arm_true,
                    train=arm_train,
                    clusters=clusters,
                    rng=random.Random(1000 + seed),
                    rate=args.rate,
                    epsilon=args.epsilon,
                )
                curve = running_mean(earned)
                learner_curves[name].append(curve)
                for target, policy_name in targets.items():
                    fixed = true[policy_name][order]
                    found = reached[name][target]
                    found["running_mean"].append(reached_at(curve, running_mean(fixed)))
                    if cycles > 1:
                        # Mean over the last n questions (one pass), from question n on.
                        at = reached_at(window_mean(earned, n), window_mean(fixed, n))
                        found["last_pass_window"].append(None if at is None else at + n - 1)
                starts[name].append(chosen.count(arms[0]) / len(chosen))
                for c in range(len(centroids)):
                    last = [
                        a for q, a in zip(order[-n:], chosen[-n:], strict=True) if clusters[q] == c
                    ]
                    if last:
                        by_cluster[name].setdefault(c, []).append(last.count(arms[0]) / len(last))
                late[name].append(float(earned[-n:].mean()))
        best_final = float(np.mean([c[-1] for c in fixed_curves[best_fixed]]))
        learners_json = {}
        for name in names:
            mean = float(np.mean([c[-1] for c in learner_curves[name]]))
            criteria = {}
            for target, by_rule in reached[name].items():
                criteria[target] = {
                    rule: {
                        "seeds_reaching": f"{sum(v is not None for v in values)} of {len(values)}",
                        "median_questions": statistics.median(hits)
                        if (hits := [v for v in values if v is not None])
                        else None,
                        "per_seed": values,
                    }
                    for rule, values in by_rule.items()
                    if values
                }
            learners_json[name] = {
                "mean_reward": round(mean, 4),
                "last_pass_mean_reward": round(float(np.mean(late[name])), 4),
                "minus_best_fixed": round(mean - best_final, 4),
                f"share_starting_on_{arms[0]}": round(float(np.mean(starts[name])), 3),
                # Last pass: do easy topics start cheap and hard ones high?
                f"last_pass_share_starting_on_{arms[0]}_per_cluster": {
                    str(c): round(float(np.mean(v)), 3) for c, v in by_cluster[name].items()
                },
                "reaches_95pct_of": criteria,
            }
        report["passes"][label] = {
            "questions_replayed": length,
            "cycling": cycles > 1,
            "best_fixed_mean_reward": round(best_final, 4),
            "best_fixed_starting_tier_mean_reward": round(
                float(np.mean([c[-1] for c in fixed_curves[best_arm]])), 4
            ),
            "learners": learners_json,
        }
        figure, axes = plt.subplots(figsize=(10, 6))
        x = np.arange(1, length + 1)
        for name, curves in fixed_curves.items():
            axes.plot(
                x, np.mean(curves, axis=0), linestyle="--", linewidth=1.2, label=f"{name} (fixed)"
            )
        for name, curves in learner_curves.items():
            axes.plot(x, np.mean(curves, axis=0), linewidth=2, label=name)
        axes.set_xlabel(
            "questions" + (f" ({cycles} shuffled passes over {n})" if cycles > 1 else "")
        )
        axes.set_ylabel("running mean reward (true accuracy)")
        axes.set_title(
            f"Router vs fixed policies, run {run.id}, mean of {args.seeds} seeds "
            f"(w_acc {args.w_acc}, w_cost {args.w_cost}/USD, w_lat {args.w_lat}/log s)"
        )
        axes.legend(fontsize=8, loc="lower right")
        axes.grid(alpha=0.3)
        figure.tight_layout()
        out = Path(args.out).resolve()
        path = out.with_name(f"{out.stem}_{label}.png")
        figure.savefig(path, dpi=110)
        plt.close(figure)
        report["passes"][label]["plot"] = str(
            path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        )
    report["single_pass_enough"] = any(
        not criteria["running_mean"]["seeds_reaching"].startswith("0 ")
        for learner in report["passes"]["single_pass"]["learners"].values()
        for criteria in learner["reaches_95pct_of"].values()
    )
    report["summary"] = summary_lines(report)
    text = json.dumps(report, indent=2, default=float)
    Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
