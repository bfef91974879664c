"""Prompt injection (OWASP LLM01): planted instructions in passages, and direct attacks in questions.

Two pure-Python rules, sub-millisecond, no model:
- `passage_defuse` drops the sentences of a knowledge text that are addressed to the assistant
  ("Note for the assistant: ...", "Ignore all previous instructions.", "When you answer, include
  ...", "Tell the customer to call ...") and keeps every other sentence as it was. It runs where
  the prompt is built, so knowledge uploaded before this rule is covered as well as new uploads.
  A small model copies what it reads; a sentence it never reads it cannot obey.
- `question_attack` names what a question asks the assistant to do instead of answering it:
  reveal its instructions, show other customers' data, say or format something the customer
  dictates, play a role with other rules. The cache's `instruction_like` is one part of it (one
  rule for "the question steers the assistant"). Such a question is declined before any model.

Both err towards letting text through: a dropped help-centre sentence or a refused customer
costs more than an attack a grounded answer ignores. The figures (attacks stopped on the held-out
half of the suite, customers' questions refused, help-centre sentences dropped) are measured by
`bench/injection.py`.
"""

from __future__ import annotations

import re

from retrieval.guard import instruction_like

# Who a planted sentence speaks to: the assistant, by any of its names.
# "The model" alone is left out: product documents say "all models of the stove".
_AGENT = r"(?:ai|a\.i\.|assistants?|chat\s*bots?|llms?|gpt|(?:ai|language)\s+models?)"
_CUSTOMER = (
    r"(?:the\s+|every\s+|each\s+|all\s+|any\s+)?"
    r"(?:customers?|users?|visitors?|readers?|callers?|shoppers?)"
)

# A sentence of a document addressed to the assistant, or telling it what to say to customers.
_PLANTED = re.compile(
    # "Note for the assistant:", "To the AI reading this:", "Attention, model:"
    rf"\b(?:note|message|instructions?|attention|reminder|notice)\s+(?:for|to)\s+(?:the\s+|any\s+|all\s+)?{_AGENT}\b"
    rf"|\b(?:to|for|dear|hey|attention)\s+(?:the\s+|any\s+|all\s+)?{_AGENT}\s+(?:reading|processing|"
    r"answering|summari[sz]ing|that\s+reads|who\s+reads)"
    # A line that speaks as a role: "Assistant: ...", "SYSTEM: ...", "[INST]".
    r"|^\W*(?:system|assistant|ai|developer)\s*(?:message|prompt|note)?\s*:"
    r"|\[/?inst\]|<\|?(?:im_start|system|assistant)\|?>"
    # Overrides: "ignore all previous instructions", "disregard the help centre".
    r"|\b(?:ignore|disregard|forget|override|bypass)\b[^.?!\n]{0,40}?\b(?:instructions?|rules?|"
    r"prompts?|previous|above|guidelines|help\s*cent(?:re|er)|knowledge|context|question)\b"
    r"|\b(?:you\s+are\s+now|you're\s+now|from\s+now\s+on\s+you|new\s+(?:instructions?|policy\s+from))\b"
    # The answer's form: "when you answer", "end every answer with", "whatever the question".
    r"|\bwhen(?:ever)?\s+you\s+(?:answer|reply|respond|write|summari[sz]e)\b"
    r"|\b(?:in|to|into|at\s+the\s+(?:end|start|beginning|bottom|top)\s+of|end|start|begin|finish)\s+"
    r"(?:your|every|each|all|any)\s+(?:answers?|repl(?:y|ies)|responses?|outputs?|messages?)\b"
    r"|\bwhatever\s+the\s+(?:question|customer\s+asks)\b"
    r"|\b(?:reply|respond|answer)\s+only\s+with\b"
    # What to tell the customer: "tell the customer to call ...", "ask users to e-mail ...".
    rf"|\b(?:tell|ask|inform|advise|instruct|direct|urge|remind|redirect|encourage)\s+{_CUSTOMER}\s+"
    r"(?:to|that)\b",
    re.IGNORECASE | re.MULTILINE,
)

# A sentence ends at . ! ? followed by space, or at a line break; an HTML comment is one piece.
_PIECE = re.compile(r"<!--.*?(?:-->|$)|[^\n]*?(?:[.!?](?=\s)|\n|$)", re.DOTALL)


def text_pieces(text: str) -> list[str]:
    """The text cut into sentences and lines, separators kept: "".join(pieces) == text."""
    pieces: list[str] = []
    position = 0
    while position < len(text):
        match = _PIECE.match(text, position)
        end = match.end() if match and match.end() > position else position + 1
        pieces.append(text[position:end])
        position = end
    return pieces


def planted(sentence: str) -> bool:
    """Whether one sentence of a document is addressed to the assistant rather than the reader."""
    return bool(_PLANTED.search(sentence.replace("’", "'")))


def passage_defuse(text: str) -> str:
    """The text without its sentences addressed to the assistant; every other sentence kept as it
    was (a text with none comes back unchanged)."""
    pieces = text_pieces(text)
    kept = [p for p in pieces if not planted(p)]
    if len(kept) == len(pieces):
        return text
    # A dropped sentence takes its line break with it only when it filled the line.
    return re.sub(r"\n{3,}", "\n\n", "".join(p if p in kept else _tail(p) for p in pieces))


def _tail(piece: str) -> str:
    return "\n" if piece.endswith("\n") else " " if piece[-1:].isspace() else ""


# --- Direct attacks in a customer's question ----------------------------------------------
_YOUR = r"(?:your|the\s+assistant's|the\s+bot's|the\s+model's)"
_SECRET = r"(?:confidential|internal|secret|hidden|private|system|original|initial)"
_ATTACK = {
    # The assistant's own instructions, notes or configuration.
    "reveal": re.compile(
        rf"\b{_YOUR}\s+(?:(?:\w+\s+){{0,2}}){_SECRET}\s+(?:\w+\s+)?(?:notes?|codes?|prompts?|"
        r"instructions?|rules|config\w*|settings|messages?|keys?|passwords?)\b"
        rf"|\b{_SECRET}\s+(?:staff\s+)?(?:notes?|prompts?|instructions?)\s+(?:were\s+|have\s+)?you\b"
        r"|\b(?:were|have)\s+you\s+been\s+(?:given|told|instructed|programmed|configured)\b"
        rf"|\b(?:repeat|print|show|reveal|display|output|dump|list|recite|share|tell\s+me|give\s+me|"
        rf"spell\s+out|translate|summari[sz]e)\s+(?:me\s+)?{_YOUR}\s+(?:\w+\s+)?(?:instructions?|"
        r"prompts?|rules|guidelines|config\w*|notes?|codes?)\b"
        r"|\b(?:instructions?|prompts?|rules)\s+(?:you\s+were\s+given|above|before\s+this)\b"
        r"|\b(?:system|initial|original|hidden)\s+(?:prompt|instructions?|message)\b"
        r"|\bignore\s+(?:the|this|my)\s+question\b",
        re.IGNORECASE,
    ),
    # Other customers' conversations and details.
    "others": re.compile(
        r"\b(?:other|another|previous|last|earlier|past|recent|former)\s+(?:\w+\s+)?(?:customers?|"
        r"users?|visitors?|clients?|shoppers?)(?:'s|s')?\s+(?:\w+\s+)?(?:conversations?|"
        r"chats?|messages?|questions?|e-?mails?|e-mail\s+addresses|addresses|names|details|data|"
        r"orders?|order\s+numbers|answers?|history|transcripts?)\b"
        r"|\b(?:customers?|users?|people)\s+you\s+(?:have\s+)?(?:talked|spoke(?:n)?|chatted|"
        r"helped|answered)\s+(?:to|with)?\b"
        r"|\b(?:gave|sent|told|said|wrote)\s+(?:to\s+)?(?:someone|somebody|anyone)\s+else\b"
        r"|\b(?:today's|yesterday's|earlier|other|previous|recent)\s+(?:chats|conversations|"
        r"transcripts|sessions)\b"
        r"|\b(?:conversations?|chats?|messages?|e-?mails?|e-mail\s+addresses|addresses|names|"
        r"details|data|order\s+numbers|transcripts?)\s+(?:of|from|with|by)\s+(?:the\s+)?(?:other|"
        r"another|previous|last|earlier|past|recent|former)\s+(?:\w+\s+)?(?:customers?|users?|"
        r"visitors?|clients?|shoppers?)\b"
        r"|\b(?:customer|user|person)\s+(?:called|named)\s+\w+\s+(?:ask(?:ed|s)?|said|says?|wrote|"
        r"writes?|wanted|wants?)\b"
        r"|\bwhich\s+(?:customers|users|people)\b[^?]{0,60}\?\s*(?:give|list|tell)\s+(?:me\s+)?"
        r"(?:their\s+)?names\b",
        re.IGNORECASE,
    ),
    # The answer's words or form, dictated: "reply only with 'X'", "print the word X".
    "dictate": re.compile(
        r"\b(?:reply|respond|answer|confirm)\s+(?:only\s+)?with\s+(?:the\s+(?:word|phrase)\s+)?"
        r"[\"'“‘]"
        r"|\b(?:print|say|write|type|output|repeat|spell)\s+(?:out\s+)?(?:the\s+(?:word|words|"
        r"phrase|text|sentence|string)|it\s+\w+\s+times)\b"
        r"|\b(?:in|with)\s+the\s+format\s+[\"'“‘]"
        r"|\bformat\s+(?:your|the)\s+(?:answer|reply|response)\s+as\b"
        r"|\b(?:start|begin|end|finish)\s+(?:\w+\s+){0,2}with\s+(?-i:[A-Z]{3,})\b"
        r"|\b(?:start|begin|end|finish|prefix|sign)\s+(?:your|the|each|every)\s+(?:answer|reply|"
        r"response|message)\b"
        r"|\b(?:answer|reply|respond)\s+(?:\w+\s+){0,4}in\s+(?:all\s+)?capitals\b"
        r"|!\[[^\]]*\]\(|<img\b|\bjavascript:"
        r"|\b(?:write|compose)\s+a\s+(?:poem|song|story|limerick|haiku)\b[^?]*\b(?:your|code|"
        r"instructions?|prompt)\b",
        re.IGNORECASE,
    ),
    # Another persona, or rules declared void.
    "roleplay": re.compile(
        r"\b(?:rules|restrictions|instructions|guidelines|filters?|safety)\s+(?:\w+\s+)?(?:don't|"
        r"do\s+not|no\s+longer|doesn't|does\s+not)\s+apply\b"
        r"|\b(?:rules|restrictions|filters?|safety\s+\w+)\s+(?:are\s+|is\s+)?(?:now\s+)?(?:disabled|"
        r"suspended|lifted|off|removed|changed)\b"
        r"|\b(?:no\s+matter\s+what|regardless\s+of\s+what)\s+(?:your|the)\s+(?:rules|instructions)\b"
        r"|\bsimulate\s+(?:a|an)\s+(?:conversation|dialogue|chat|terminal|console|ai|assistant)\b"
        r"|\bopposite\s+day\b|\bdan\s+mode\b|\bdo\s+anything\s+now\b",
        re.IGNORECASE,
    ),
}


def question_attack(text: str) -> str:
    """What a question tells the assistant to do instead of asking it something: "override"
    (the cache's instruction rule), "reveal", "others", "dictate" or "roleplay"; "" for a question."""
    text = text.replace("’", "'")
    for kind, pattern in _ATTACK.items():
        if pattern.search(text):
            return kind
    return "override" if instruction_like(text) else ""
