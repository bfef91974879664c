"""The scorer: P(answer is right) from signals that need no bigger model.

Signals (all plain numbers; `routing` never sees a Chunk):
- the answer's token log-probabilities (mean and minimum),
- the probability that the model wanted to start with "I" (as in "I don't know"), read
  from the first token's top log-probabilities: models rarely *say* they do not know,
  but they often hesitate,
- the retrieval similarity of the best passage and of the passages the answer cites,
- support: the share of the answer's content words found in the passages,
- coverage: the share of the question's content words found in the best passage,
- an explicit "I don't know",
- when retrieval reranks (RETRIEVAL_RERANK), the cross-encoder's relevance (0-1) of the best
  passage (`top_relevance`) and of the passage the answer cites (`cited_relevance`),
- optionally, the answerability check (`check_yes`): a tier (CASCADE_SUPPORT_CHECK names it)
  is asked whether the one passage the answer cites states the answer to the question; P(yes)
  normalised over yes/no (`routing.cascade.SupportCheck`).

A signal that may be missing (no reranking; the check is off, failed, timed out, or gave
neither "yes" nor "no" among its top tokens) is *neutral*: it takes the value stored in the
weights as `<name>_neutral` (the fit split's mean of that signal; 0.5 when absent), so its
term adds what an average one adds and the score rests on the other signals.

The score is a logistic model over those features. Default weights are hand-set and
documented below; `routing.evaluation.fit.scorer_fit` refits them from labelled rows (evaluation runs) and the
result is stored in `ScorerWeights` (one row per name).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Starting weights, fitted on evaluation run 2's fit split (medium and large tiers; label:
# answerable and the answer holds a gold answer). They do not separate right from wrong
# answers: on run 4's test split they rank answers at AUC 0.54, and run 4's own fit (the
# minimum log-probability alone, chosen by stratified repeated CV) at 0.56. They stay the
# default because the policy they belong to (medium >= 0.10, then large) held up better on
# run 4's test split than the one fitted there (bench/results/evaluation_run4.md). An
# evaluation's `--fit --apply` replaces them in routing.ScorerWeights.
DEFAULT_WEIGHTS: dict[str, float] = {
    "bias": 1.562,
    "mean_logprob": -0.145,
    "min_logprob": 1.295,
    "p_first_i": -3.552,
    "top_similarity": -1.652,
    "cited_similarity": 2.25,
    "support": -0.925,
    "coverage": -1.678,
    "idk": -2.303,
    "check_yes": 0.0,
    "check_yes_neutral": 0.5,
    "top_relevance": 0.0,
    "top_relevance_neutral": 0.5,
    "cited_relevance": 0.0,
    "cited_relevance_neutral": 0.5,
}
# Signals that may be absent from an attempt: missing means neutral (see the module docstring).
OPTIONAL_FEATURES = ("check_yes", "top_relevance", "cited_relevance")
FEATURES = [k for k in DEFAULT_WEIGHTS if k != "bias" and not k.endswith("_neutral")]

# An explicit abstention: the model says it does not know, or that the passages do not say.
# A negative *answer* ("Cash on delivery is not available [1]", "Refunds are not given for
# digital downloads") is an answer, not an abstention, so bare negations do not count.
_IDK = re.compile(
    r"\bi\s+(do\s+not|don'?t|dont)\s+know\b"
    r"|\bi\s*(am|'m)\s+not\s+sure\b"
    r"|\bi\s+(cannot|can'?t|am\s+unable\s+to)\s+(answer|tell|say|determine|find\s+(the|an|any)\s+answer)"
    r"|\b(passages?|text|context|documents?|information\s+(provided|given))\s+"
    r"(do(es)?\s+not|don'?t|doesn'?t)\s+(contain|say|mention|state|provide|include|specify|cover)"
    r"|\bnot\s+(mentioned|stated|specified|provided|covered|given)\s+in\s+the\s+"
    r"(passages?|text|context|documents?)"
    r"|\bthere\s+is\s+no\s+information\b",
    re.IGNORECASE,
)
_CITATION = re.compile(r"\[(\d{1,2})\]")
# Words in any alphabet (Größe, être, доставка); scripts written without spaces (Chinese,
# Japanese) are read as overlapping character pairs, so an answer copied from its passage in
# those languages still shows its support (whole runs would never match).
_WORD = re.compile(r"[^\W_]+")
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_STOP = frozenset(
    "a an the of in on at to for from by with and or but is are was were be been being it its "
    "this that these those what which who whom whose when where why how do does did can could "
    "would should will shall may might must i you he she we they them their our your his her "
    "as if than then there here not no yes so such into about over under after before also "
    "passage passages answer "
    # The commonest function words of the other languages the product answers in (German,
    # French, Spanish, Italian, Portuguese, Dutch), leaving out those that are English content
    # words ("die", "hat", "son", "den", "door", "come", "plus").
    "der das und ist ein eine einen einem einer eines nicht mit von zu dem des im auf "
    "für sich es sie ich wir ihr kann können wird werden oder auch bei aus nach wenn wie wo "
    "dass sind haben noch nur über unter vor durch um am vom zum zur als "
    "le la les un une des du de et est en que qui dans pour pas sur au aux avec ce cette ces "
    "il elle ils elles nous vous je ne se sont ou par peut être été sa ses leur leurs "
    "el los las unos unas y por para con del al lo su sus como más pero esta este estos estas "
    "está hay puede gli di da della dei delle che non per sono è si più anche ma nel nella "
    "questo questa può o os um uma umas é dos das em na nos nas não com mais mas pode seu "
    "são ao het een van op te dat niet met voor zijn er aan ook bij wordt worden naar dan".split()
)


# The same abstentions in the languages whose "I don't know" the prompt asks for (German,
# French, Spanish, Italian, Portuguese, Dutch): "I don't know" and "the passages do not say".
_IDK_OTHER = re.compile(
    r"\bich\s+wei(ß|ss)\s+(es\s+)?nicht\b"
    r"|\b(passagen|texte?|abschnitte|dokumente?)\s+(enthalten|nennen|sagen|erwähnen)\s+"
    r"(das\s+|dies\s+|es\s+)?nicht\b"
    r"|\bje\s+ne\s+(le\s+)?sais\s+pas\b|\bje\s+ne\s+suis\s+pas\s+s[uû]re?\b"
    r"|\b(passages?|textes?|documents?)\s+ne\s+(contien(nen)?t|mentionnen?t|disent|dit|précisen?t)\s+pas\b"
    # "no se ..." is the reflexive (an answer); only "no lo se" or an accented "no sé" abstain.
    r"|\bno\s+lo\s+s[eé]\b|\bno\s+sé(?!\w)"
    r"|\b(pasajes?|textos?|documentos?)\s+no\s+(contienen?|mencionan?|dicen?|indican?)\b"
    r"|\bnon\s+(lo\s+)?so\b|\bnão\s+(o\s+)?sei\b"
    r"|\bik\s+weet\s+(het\s+)?niet\b",
    re.IGNORECASE,
)


def says_dont_know(text: str) -> bool:
    """True when an answer says it does not know (or that its passages do not say), or is empty.

    Recognised in English, German, French, Spanish, Italian, Portuguese and Dutch: the languages
    whose exact "I don't know" reply the prompt asks for (retrieval.language.DONT_KNOW).
    """
    return bool(_IDK.search(text) or _IDK_OTHER.search(text)) or not text.strip()


def content_words(text: str) -> list[str]:
    """Lower-cased words minus stop words and citation numbers."""
    text = _CITATION.sub(" ", text.lower())
    text = _UNSPACED.sub(lambda m: f" {_pairs(m.group(0))} ", text)
    return [w for w in _WORD.findall(text) if w not in _STOP]


def _pairs(run: str) -> str:
    """Overlapping character pairs of a run of unspaced script ("配送料金" -> "配送 送料 料金")."""
    return " ".join(run[i : i + 2] for i in range(max(1, len(run) - 1)))


@dataclass(frozen=True)
class ScoringInput:
    """What the scorer needs to know about one answer, as plain data.

    The passages are those the answering tier's prompt showed, in the prompt's order: a
    citation [n] refers to the n-th, and support is measured over them and nothing else.
    """

    question: str
    answer: str
    token_logprobs: Sequence[float]
    first_top_logprobs: Mapping[str, float]
    passage_texts: Sequence[str]
    passage_similarities: Sequence[float]
    # The cross-encoder's relevance of each passage (same order); empty when not reranked.
    passage_relevance: Sequence[float] = ()


def cited_passage(answer: str, relevance: Sequence[float]) -> int | None:
    """Index of the passage an answer rests on: its first valid citation [n], else the most
    relevant passage (by `relevance`, one value per passage in the prompt's order)."""
    for number in _CITATION.findall(answer):
        if 1 <= int(number) <= len(relevance):
            return int(number) - 1
    return max(range(len(relevance)), key=lambda i: relevance[i], default=None)


def signals_extract(item: ScoringInput) -> dict[str, float]:
    """The feature vector of one answer (keys of FEATURES)."""
    logprobs = [max(-5.0, float(x)) for x in item.token_logprobs] or [-5.0]
    p_first_i = sum(
        math.exp(lp) for tok, lp in item.first_top_logprobs.items() if tok.strip() in {"I", "i"}
    )
    sims = list(item.passage_similarities) or [0.0]
    cited = {int(n) for n in _CITATION.findall(item.answer)}
    cited_sims = [sims[n - 1] for n in cited if 1 <= n <= len(sims)]
    passage_words = set()
    for text in item.passage_texts:
        passage_words.update(content_words(text))
    answer_words = content_words(item.answer)
    support = (
        sum(w in passage_words for w in answer_words) / len(answer_words) if answer_words else 0.0
    )
    # Passages come in the prompt's order: the best one is the most similar, wherever it sits.
    best_index = max(range(len(item.passage_texts)), key=lambda i: sims[i], default=None)
    best = content_words(item.passage_texts[best_index]) if best_index is not None else []
    question_words = set(content_words(item.question))
    coverage = len(question_words & set(best)) / len(question_words) if question_words else 0.0
    signals = {
        "mean_logprob": sum(logprobs) / len(logprobs),
        "min_logprob": min(logprobs),
        "p_first_i": min(1.0, p_first_i),
        "top_similarity": max(sims),
        "cited_similarity": (sum(cited_sims) / len(cited_sims)) if cited_sims else max(sims),
        "support": support,
        "coverage": coverage,
        "idk": 1.0 if says_dont_know(item.answer) else 0.0,
    }
    relevance = list(item.passage_relevance)
    if relevance and len(relevance) == len(item.passage_texts):
        signals["top_relevance"] = max(relevance)
        signals["cited_relevance"] = relevance[cited_passage(item.answer, relevance) or 0]
    return signals


def score_signals(
    signals: Mapping[str, float], weights: Mapping[str, float] | None = None
) -> float:
    """P(right) in [0, 1] from a feature vector and logistic weights (defaults when None)."""
    weights = weights or DEFAULT_WEIGHTS
    z = float(weights.get("bias", 0.0))
    for name in FEATURES:
        z += float(weights.get(name, 0.0)) * signal_value(signals, name, weights)
    return 1.0 / (1.0 + math.exp(-max(-40.0, min(40.0, z))))


def signal_value(signals: Mapping[str, float], name: str, weights: Mapping[str, float]) -> float:
    """A feature's value; a missing optional signal takes its neutral value from the weights."""
    value = signals.get(name)
    if value is not None:
        return float(value)
    if name in OPTIONAL_FEATURES:
        return float(weights.get(f"{name}_neutral", 0.5))
    return 0.0
