"""Languages: detect a text's language offline and say what each part can do with it.

Detection uses lingua (its models ship in the wheel) with its full models: on the public SQuAD
questions its low-accuracy mode (trigrams only) called 22 of 626 English questions Dutch,
German or Spanish ("Who led Issacs troops to Cyprus?": Dutch), which would have asked for an
answer in the wrong language; the full models made no such mistake above the confidence floor
(bench/multilingual.py). They cost about 230 MB per process for the default 14 languages and a
few milliseconds a question, off the event loop. Short or ambiguous texts get no language ("")
rather than a guess: callers then refuse to guess too (no answer cache).
"""

from __future__ import annotations

import asyncio
import functools
import threading

from django.conf import settings

# ISO 639-1 code -> the PostgreSQL text search configuration for it (pg_catalog, PostgreSQL 16+).
# A language missing here is indexed and searched with `simple` over unaccented words. The SQL
# function retrieval_tsconfig (migration 0011_language) holds the same table: change both.
PG_CONFIGS: dict[str, str] = {
    "ar": "arabic",
    "ca": "catalan",
    "da": "danish",
    "de": "german",
    "el": "greek",
    "en": "english",
    "es": "spanish",
    "et": "estonian",
    "eu": "basque",
    "fi": "finnish",
    "fr": "french",
    "ga": "irish",
    "hi": "hindi",
    "hu": "hungarian",
    "hy": "armenian",
    "id": "indonesian",
    "it": "italian",
    "lt": "lithuanian",
    "nb": "norwegian",
    "ne": "nepali",
    "nl": "dutch",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sr": "serbian",
    "sv": "swedish",
    "ta": "tamil",
    "tr": "turkish",
    "yi": "yiddish",
}

# Languages whose questions the answer cache may serve and store. The cache guard's rules
# (retrieval/guard.py: stop words, stemming, negation, numbers, opposites) and the learned pair
# decision were written and fitted on English only; elsewhere a hit would be a guess.
CACHE_LANGUAGES: frozenset[str] = frozenset({"en"})

# English names, for the instruction that asks a model to answer in the customer's language.
NAMES: dict[str, str] = {
    "ar": "Arabic",
    "cs": "Czech",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "fi": "Finnish",
    "fr": "French",
    "hu": "Hungarian",
    "it": "Italian",
    "ja": "Japanese",
    "ko": "Korean",
    "nb": "Norwegian",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "sv": "Swedish",
    "tr": "Turkish",
    "zh": "Chinese",
}

# What a model is told to reply when its passages lack the answer, and what the product says
# when it declines before any model: in the customer's language (routing/scorer.py
# says_dont_know recognises each of these replies).
DONT_KNOW: dict[str, str] = {
    "en": "I don't know.",
    "de": "Ich weiß es nicht.",
    "fr": "Je ne sais pas.",
    "es": "No lo sé.",
    "it": "Non lo so.",
    "pt": "Não sei.",
    "nl": "Ik weet het niet.",
}
ABSTAIN: dict[str, str] = {
    "de": (
        "Ich weiß es nicht: Unser Hilfe-Center behandelt das nicht. Sie können Ihre Frage "
        "umformulieren oder unser Support-Team kontaktieren, dann hilft Ihnen ein Mensch."
    ),
    "fr": (
        "Je ne sais pas : notre centre d'aide ne traite pas ce sujet. Vous pouvez reformuler "
        "votre question ou contacter notre équipe d'assistance, une personne vous aidera."
    ),
    "es": (
        "No lo sé: nuestro centro de ayuda no trata ese tema. Puede reformular su pregunta o "
        "contactar con nuestro equipo de soporte y una persona le ayudará."
    ),
    "it": (
        "Non lo so: il nostro centro assistenza non tratta questo argomento. Può riformulare "
        "la domanda o contattare il nostro team di supporto: una persona la aiuterà."
    ),
    "pt": (
        "Não sei: a nossa central de ajuda não aborda esse assunto. Pode reformular a sua "
        "pergunta ou contactar a nossa equipa de apoio e uma pessoa irá ajudar."
    ),
    "nl": (
        "Ik weet het niet: ons helpcentrum behandelt dat niet. U kunt uw vraag anders stellen "
        "of contact opnemen met ons supportteam, dan helpt een medewerker u."
    ),
}

_lock = threading.Lock()


@functools.cache
def _detector():  # noqa: ANN202
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    codes = [c.strip().upper() for c in settings.LANGUAGE_DETECT_LANGUAGES.split(",") if c.strip()]
    unknown = [c for c in codes if not hasattr(IsoCode639_1, c)]
    if unknown or len(codes) < 2:
        raise RuntimeError(
            "LANGUAGE_DETECT_LANGUAGES needs two or more ISO 639-1 codes separated by commas; "
            f"not known to the detector: {', '.join(unknown) or '(fewer than two codes)'}"
        )
    languages = [Language.from_iso_code_639_1(getattr(IsoCode639_1, c)) for c in codes]
    return LanguageDetectorBuilder.from_languages(*languages).build()


@functools.lru_cache(maxsize=2048)
def detect_language(text: str) -> str:
    """The ISO 639-1 code of text's language, or "" when the detector is not sure enough.

    CPU work (the first call also loads the models): from async code call adetect_language().
    """
    sample = _sample(text)
    if not sample:
        return ""
    with _lock:  # lingua's detector loads its models lazily: one loader at a time
        values = _detector().compute_language_confidence_values(sample)
    return _decided(values)


def detect_languages(texts: list[str]) -> list[str]:
    """detect_language() of each text, the texts spread over the CPU's cores (lingua's threads):
    a group of pages at ingestion, in half the time on 2 cores. Not cached."""
    samples = [_sample(text) for text in texts]
    todo = [sample for sample in samples if sample]
    with _lock:
        values = iter(_detector().compute_language_confidence_values_in_parallel(todo))
    return [_decided(next(values)) if sample else "" for sample in samples]


def _sample(text: str) -> str:
    """What the detector reads of text; "" when it has too few letters to tell."""
    sample = text[: settings.LANGUAGE_DETECT_MAX_CHARS]
    return sample if sum(ch.isalpha() for ch in sample) >= 2 else ""


def _decided(values: list) -> str:
    """The language code lingua's confidence values decide (see detect_language)."""
    if not values:
        return ""
    code = values[0].language.iso_code_639_1.name.lower()
    # lingua spreads a short text's confidence over related languages: "How do I reset my
    # password?" is English at 0.32 (Italian 0.28). The site's own language is taken whenever it
    # ranks first (626 public English questions: 625 English, 1 unsure, none wrong); another
    # language must be sure, since it changes the answer's language and turns the cache off.
    if code != settings.LANGUAGE_DEFAULT and values[0].value < settings.LANGUAGE_MIN_CONFIDENCE:
        return ""
    return code


async def adetect_language(text: str) -> str:
    """detect_language() in a worker thread, so the event loop never waits on it."""
    return await asyncio.to_thread(detect_language, text)


def text_search_config(language: str) -> str:
    """The PostgreSQL text search configuration for a language code ("simple" when none)."""
    return PG_CONFIGS.get(language, "simple")


def cache_supports(language: str) -> bool:
    """True when the answer cache can decide for a question in this language: its guard reads
    the language, and its pair model was fitted on the cosines of the embedder in use.

    Another embedder's cosines lie elsewhere (multilingual-e5-small's between 0.82 and 0.90
    for every SQuAD question, bench/multilingual.py): the fitted cut would serve nearly any
    cached answer. After an embedder switch the cache waits for `cache_pair_model_fit`.
    """
    if language not in CACHE_LANGUAGES:
        return False
    from retrieval.embedders import get_embedder
    from retrieval.pair_model import pair_model

    return pair_model().fitted.get("embedder") == get_embedder().path


def answer_instruction(language: str) -> str:
    """The line that asks a model to answer in the customer's language ("" for English or unknown)."""
    if not language or language == "en":
        return ""
    name = NAMES.get(language)
    if name is None:
        return "Reply in the language of the customer's question."
    dont_know = DONT_KNOW.get(language)
    if dont_know is None:
        return f"Reply in {name}."
    return (
        f'Reply in {name}. If the passages do not contain the answer, reply exactly: "{dont_know}"'
    )


def abstain_text(language: str, default: str) -> str:
    """The decline shown to the customer, in their language when there is a translation."""
    return ABSTAIN.get(language, default)
