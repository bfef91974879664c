"""Recognise "let me talk to a person" in a customer's message, before any model work.

Pure and cheap (a few regular expressions over normalised text), so it runs on every question
and a customer who asks for a person never waits for, or pays for, a model answer.
"""

from __future__ import annotations

import re
import unicodedata

# Someone who is a person, as customers say it.
_PERSON = (
    r"(?:a |an |some |one |real |actual |live )*"
    r"(?:human(?: being)?|person|people|agent|operator|representative|rep|someone|somebody|"
    r"staff|(?:member of )?(?:your )?(?:support|customer service|service) (?:team|staff|agent)|"
    r"mensch(?:en)?|mitarbeiter(?:in)?|menschlichen? (?:mitarbeiter|ansprechpartner)|"
    r"ansprechpartner(?:in)?|humain|personne|conseill(?:er|ere)|agent humain)"
)
_CONTACT = (
    r"(?:talk|speak|chat|get|reach|connect|transfer|put me through|be connected|sprechen|parler)"
)
_PATTERNS = [
    # "can I talk to a human", "I want to speak with someone", "connect me to an agent"
    rf"\b{_CONTACT}\b(?: \w+){{0,3}} (?:to|with|me to|me with|through to|mit|avec|a|à) {_PERSON}\b",
    # "I want a human", "give me a real person", "human please", "need an agent"
    rf"(?:\b(?:i|we) (?:\w+ )?(?:want|need|prefer|request|ask for)|\bgive me|\bget me)"
    rf"(?: to (?:talk|speak|chat) (?:to|with))? {_PERSON}(?: (?:please|now|pls))?[.!?]*$",
    r"^(?:an? )?(?:real |live )?(?:human|person|agent|operator|representative)(?: please| now| pls)?[.!?]*$",
    # "is there a human I can talk to?", "are you a bot? I want a person"
    r"\bis there (?:a |an )?(?:human|person|someone|somebody|agent)\b",
    # German and French short forms
    r"\b(?:mit einem menschen|mit einer person|mit einem mitarbeiter)\b",
    r"\b(?:parler a|parler avec) (?:un|une|quelqu)",
]
_COMPILED = [re.compile(p) for p in _PATTERNS]

# Questions about people that are not a request to reach one: "How many people can use one
# gift card?", "Can someone else pick up my order?".
_NOT_A_REQUEST = re.compile(
    r"\b(?:someone else|somebody else|another person|other people|for (?:a |another )?person|"
    r"per person|people can|persons?\b.*\b(?:order|pick|collect|use|share|gift))"
)


def _normalise(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    plain = plain.replace("’", "'")
    return re.sub(r"[^\w'?!. ]+", " ", re.sub(r"\s+", " ", plain)).strip()


def wants_human(text: str) -> bool:
    """True when the message asks to reach a person rather than the bot."""
    plain = _normalise(text)
    if not plain or len(plain) > 300:
        # A long message is a question with context, not a request for a person.
        return False
    if _NOT_A_REQUEST.search(plain):
        return False
    return any(p.search(plain) for p in _COMPILED)
