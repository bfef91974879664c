"""The cache guard's hand-written rules: what each question says, and look-alikes that differ.

A cosine threshold alone serves wrong answers on look-alike questions ("can I" / "can't I",
"3 days" / "5 days", "first" / "last"). The rules here are pure Python and sub-millisecond:
`question_features` reads a question once (content stems, negation, numbers, dates, names,
question kind, extreme words) and `vetoes` lists the rule families on which two questions
disagree: negation, numbers/amounts, dates, named entities, opposites (listed pairs, particles
such as on/off, up/down, in/out, their inflected forms, and a word against the same word with
a negating prefix: lock/unlock, members/non-members), the kind of question (why / when / where
/ who / how many ...; "which" is a "what"), extremes (both ask for an extreme, not the same
one: "highest" / "lowest", "cheapest" / "most expensive") and qualifiers (one question is the
other word for word with content words inserted: "... a joint account" / "... a joint account
online", "... mortgages" / "... buy-to-let mortgages") and swaps (word for word the same but
for one or two content words: "increase" / "reduce", "debit card" / "credit card").

The decision itself is learned (retrieval/pair_model.py): its model file names which of these
families still veto outright, chosen by measurement on the public pairs' fit half.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

STOP_WORDS = frozenset(
    """
    a an the and or but if of at by for with about to from in on into onto over under up down
    out off is am are was were be been being do does did doing have has had having i me my mine
    myself we us our ours you your yours he him his she her hers it its they them their theirs
    this that these those there here what which who whom whose when where why how can could
    would should will shall may might must so than too very just also as any some such own same
    then once again further all both each few more most other only s t get got getting one ones
    please tell know want like way really thing things someone somebody anyone something
    anything let lets make much many does doesn
    """.split()
)

NEGATIONS = frozenset(
    {"not", "no", "never", "none", "nothing", "nobody", "without", "neither", "nor"}
)

# Pairs of opposites: a cached answer for one is wrong for the other.
OPPOSITES = [
    ("first", "last"),
    ("most", "least"),
    ("start", "end"),
    ("begin", "end"),
    ("before", "after"),
    ("buy", "sell"),
    ("increase", "decrease"),
    ("add", "remove"),
    ("open", "close"),
    ("enable", "disable"),
    ("activate", "deactivate"),
    ("subscribe", "unsubscribe"),
    ("cheap", "expensive"),
    ("cheapest", "dearest"),
    ("cheapest", "expensive"),
    ("fast", "slow"),
    ("fastest", "slowest"),
    ("best", "worst"),
    ("good", "bad"),
    ("better", "worse"),
    ("high", "low"),
    ("higher", "lower"),
    ("highest", "lowest"),
    ("max", "min"),
    ("maximum", "minimum"),
    ("long", "short"),
    ("longest", "shortest"),
    ("large", "small"),
    ("big", "small"),
    ("largest", "smallest"),
    ("biggest", "smallest"),
    ("early", "late"),
    ("earliest", "latest"),
    ("in", "out"),
    ("inside", "outside"),
    ("import", "export"),
    ("upload", "download"),
    ("login", "logout"),
    ("accept", "reject"),
    ("allow", "forbid"),
    ("include", "exclude"),
    ("included", "excluded"),
    ("free", "paid"),
    ("pros", "cons"),
    ("advantage", "disadvantage"),
    ("positive", "negative"),
    ("true", "false"),
    ("win", "lose"),
    ("male", "female"),
    ("men", "women"),
    ("man", "woman"),
    ("boy", "girl"),
    ("old", "new"),
    ("older", "newer"),
    ("oldest", "newest"),
    ("send", "receive"),
    ("give", "take"),
    ("lend", "borrow"),
    ("domestic", "international"),
    ("inbound", "outbound"),
    ("online", "offline"),
    ("online", "store"),
    ("refund", "exchange"),
    ("with", "without"),
    ("more", "less"),
    ("more", "fewer"),
    # Particles and verbs of direction or state: "turn on" / "turn off", "sign in" / "sign out".
    ("on", "off"),
    ("up", "down"),
    ("over", "under"),
    ("above", "below"),
    ("top", "bottom"),
    ("upper", "lower"),
    ("front", "back"),
    ("left", "right"),
    ("push", "pull"),
    ("pick", "drop"),  # "pick up a parcel" / "drop off a parcel"
    ("start", "stop"),
    ("pause", "resume"),
    ("show", "hide"),
    ("lock", "unlock"),
    ("connect", "disconnect"),
    ("install", "uninstall"),
    ("upgrade", "downgrade"),
    ("attach", "detach"),
    ("join", "leave"),
    ("arrive", "leave"),
    ("arrival", "departure"),
    ("entry", "exit"),
    ("enter", "exit"),
    ("input", "output"),
    ("plus", "minus"),
    ("approve", "deny"),
    ("approve", "reject"),
    ("approve", "decline"),
    ("accept", "decline"),
    ("allow", "block"),
    ("pass", "fail"),
    ("success", "failure"),
    ("north", "south"),
    ("east", "west"),
    ("same", "different"),
    ("easy", "hard"),
    ("easy", "difficult"),
    ("easiest", "hardest"),
    ("strong", "weak"),
    ("hot", "cold"),
    ("wet", "dry"),
    ("rich", "poor"),
    ("heavy", "light"),
    ("full", "empty"),
    ("public", "private"),
    ("legal", "illegal"),
    ("possible", "impossible"),
    ("valid", "invalid"),
    ("visible", "invisible"),
    ("available", "unavailable"),
    ("safe", "unsafe"),
    ("happy", "sad"),
    ("love", "hate"),
    ("like", "dislike"),
    ("agree", "disagree"),
    ("past", "future"),
    ("minimum", "maximum"),
]
# A word and the same word with a negating prefix: "install" / "uninstall", "Indian" /
# "non-Indian", "activate" / "deactivate", "agree" / "disagree".
NEGATING_PREFIXES = ("un", "non", "dis", "de", "anti", "in", "im", "il", "ir")
_OPPOSITE_OF: dict[str, set[str]] = {}

NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "fifteen": "15", "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50",
    "sixty": "60", "hundred": "100", "thousand": "1000", "million": "1000000",
    "second": "2nd", "third": "3rd", "fourth": "4th", "fifth": "5th",
    "twice": "2", "once": "1", "single": "1", "double": "2", "half": "0.5", "dozen": "12",
}  # fmt: skip
DATE_WORDS = frozenset(
    """january february march april may june july august september october november december
    jan feb mar apr jun jul aug sep sept oct nov dec monday tuesday wednesday thursday friday
    saturday sunday weekend weekday today tomorrow yesterday tonight morning evening night
    weekly monthly yearly daily annually christmas easter""".split()
) - {"may", "march"}  # "may" and "march" are mostly verbs in questions
CURRENCIES = {"$": "usd", "€": "eur", "£": "gbp", "¥": "jpy", "₹": "inr"}
CURRENCY_WORDS = {
    "dollar": "usd", "dollars": "usd", "usd": "usd", "euro": "eur", "euros": "eur",
    "eur": "eur", "pound": "gbp", "pounds": "gbp", "gbp": "gbp", "rupee": "inr",
    "rupees": "inr", "inr": "inr", "rs": "inr", "yen": "jpy",
}  # fmt: skip
UNIT_WORDS = frozenset(
    "day days week weeks month months year years hour hours minute minutes kg g cm km gb mb".split()
)

# The kind of answer a question wants: "why" and "how many" are never answered by a "what".
QUESTION_KINDS = [
    # "How many days" asks how long: checked first, so it is not also a "count".
    (r"how many (?:working |business )?(?:days|weeks|months|years|hours|minutes)", "duration"),
    (r"how many(?! (?:working |business )?(?:days|weeks|months|years|hours|minutes))", "count"),
    ("how much time", "duration"),
    (r"how much(?! time)", "amount"),
    # "What does shipping cost?" asks "how much".
    (r"what (?:\w+ ){0,5}(?:cost|costs|price)", "amount"),
    ("how long", "duration"),
    ("how often", "frequency"),
    ("how old", "age"),
    ("how far", "distance"),
    ("why", "reason"),
    ("when", "time"),
    ("where", "place"),
    ("who", "person"),
    ("whom", "person"),
]

# Words that ask for an extreme: two questions asking for different extremes ("highest" /
# "lowest", "cheapest" / "most expensive", "earliest" / "latest") want different answers. Any
# "-iest" word counts too (easiest, earliest, heaviest).
EXTREME_WORDS = frozenset(
    """most least max min maximum minimum first last best worst top bottom highest lowest
    largest smallest biggest longest shortest earliest latest cheapest dearest fastest slowest
    oldest newest youngest hardest strongest weakest greatest nearest closest furthest farthest
    quickest safest richest poorest lightest deepest widest tallest""".split()
)

_CONTRACTIONS = [
    (re.compile(r"\bcan'?t\b"), "can not"),
    (re.compile(r"\bcannot\b"), "can not"),
    (re.compile(r"\bwon'?t\b"), "will not"),
    (re.compile(r"\bshan'?t\b"), "shall not"),
    (re.compile(r"n't\b"), " not"),
    (re.compile(r"\b(do|does|did|is|are|was|were|has|have|had|could|should|would)nt\b"), r"\1 not"),
    (re.compile(r"'(s|re|ve|ll|d|m)\b"), ""),
]
_TOKEN = re.compile(r"[$€£¥₹]?\d+(?:[.,:/]\d+)*(?:st|nd|rd|th|%|k|m)?|[a-z][a-z\-]*")
_CAPITALISED = re.compile(r"\b([A-Z][a-zA-Z0-9]+|[A-Z]{2,}[0-9]*)\b")


def _normalise(text: str) -> str:
    text = text.lower().replace("’", "'").replace("‘", "'")
    for pattern, repl in _CONTRACTIONS:
        text = pattern.sub(repl, text)
    return text


def stem(word: str) -> str:
    """A light suffix stripper: enough to match returns/returned/returning, answer/answers."""
    word = word.replace("-", "")
    if word.endswith("ies") and len(word) > 4:
        word = word[:-3] + "y"
    elif word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        word = word[:-1]
    for suffix in ("ational", "ization", "ation", "ities", "ness", "ment", "ing", "ed", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]  # make/making, write/writing
    elif word.endswith(("y", "i")) and len(word) > 4 and word[-2] not in "aeiou":
        word = word[:-1]  # delivery/deliver, happily/happy
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]  # stopp -> stop
    return word


for _a, _b in OPPOSITES:
    # Words and their stems, so "closed" / "opened" and "turns on" / "turned off" count too.
    for _x, _y in ((_a, _b), (stem(_a), stem(_b))):
        _OPPOSITE_OF.setdefault(_x, set()).add(_y)
        _OPPOSITE_OF.setdefault(_y, set()).add(_x)
# The shortest base a negating prefix may stand on ("in" + "put" is no opposite of "put").
_PREFIX_MIN_BASE = {"in": 5, "im": 5, "il": 5, "ir": 5}


@dataclass(frozen=True)
class QuestionFeatures:
    """What the guard compares, computed once per question (cache entries can store it)."""

    tokens: tuple[str, ...]
    content: frozenset[str]
    negated: bool
    numbers: frozenset[str]
    dates: frozenset[str]
    entities: frozenset[str]
    entity_order: tuple[str, ...]
    kinds: frozenset[str]
    words: frozenset[str] = field(default_factory=frozenset)
    # Tokens, their hyphen-split parts and their stems: what opposites and entities look up.
    forms: frozenset[str] = field(default_factory=frozenset)
    # Content words as written (lower case).
    content_words: tuple[str, ...] = ()
    extremes: frozenset[str] = field(default_factory=frozenset)


def question_features(text: str) -> QuestionFeatures:
    """Tokens, content stems, negation, numbers, dates, entities and question kind of a question."""
    norm = _normalise(text)
    tokens = tuple(_TOKEN.findall(norm))
    numbers: set[str] = set()
    for i, tok in enumerate(tokens):
        if tok[0] in CURRENCIES or tok[0].isdigit():
            value = tok.lstrip("$€£¥₹").replace(",", "")
            numbers.add(value)
            if tok[0] in CURRENCIES:
                numbers.add(CURRENCIES[tok[0]])
        elif tok in NUMBER_WORDS and not (
            tok == "one"
            and i + 1 < len(tokens)
            and tokens[i + 1] in {"of", "can", "should", "need"}
        ):
            if tok == "second" and (i == 0 or tokens[i - 1] not in {"the", "a"}):
                continue  # "a second" / "second-hand": time or adjective, not an ordinal
            numbers.add(NUMBER_WORDS[tok])
        elif tok in CURRENCY_WORDS:
            numbers.add(CURRENCY_WORDS[tok])
    # "Saturdays" is "Saturday": plural dates are the same date.
    dates = frozenset(
        t if t in DATE_WORDS else t[:-1]
        for t in tokens
        if t in DATE_WORDS or (t.endswith("s") and t[:-1] in DATE_WORDS)
    )
    negated = sum(1 for t in tokens if t in NEGATIONS) % 2 == 1
    words = frozenset(tokens)
    forms = set(words)
    for t in tokens:
        if "-" in t and t.split("-")[0] not in NEGATING_PREFIXES:
            forms.update(part for part in t.split("-") if part)  # "non-Indian" is no "Indian"
        forms.add(stem(t))
    # Capitalised words that are not the first word of the question: names, brands, places.
    entities: list[str] = []
    first_word = re.match(r"\W*(\w+)", text)
    first = first_word.group(1) if first_word else ""
    for match in _CAPITALISED.finditer(text):
        word = match.group(1)
        if match.start() == (first_word.start(1) if first_word else -1) and word == first:
            continue
        if word.lower() in STOP_WORDS or word == "I":
            continue
        if word.lower() not in entities:
            entities.append(word.lower())
    kinds: set[str] = set()
    for phrase, kind in QUESTION_KINDS:
        # Only where a question (or a clause) begins: "what happens when I refuse" is a "what".
        if re.search(rf"(?:^\W*|[,.;:?!]\s*|\b(?:and|or|but|so)\s+){phrase}\b", norm):
            kinds.add(kind)
    content_words = tuple(
        dict.fromkeys(
            t
            for t in tokens
            if t not in STOP_WORDS
            and t not in NEGATIONS
            and not t[0].isdigit()
            and t[0] not in CURRENCIES
        )
    )
    content = frozenset(stem(t) for t in content_words)
    return QuestionFeatures(
        tokens=tokens,
        content=content,
        negated=negated,
        numbers=frozenset(numbers),
        dates=dates,
        entities=frozenset(entities),
        entity_order=tuple(entities),
        kinds=frozenset(kinds),
        words=words,
        forms=frozenset(forms),
        content_words=content_words,
        extremes=frozenset(
            t for t in tokens if t in EXTREME_WORDS or (t.endswith("iest") and len(t) > 6)
        ),
    )


def _entities_missing(a: QuestionFeatures, b: QuestionFeatures) -> bool:
    """Whether a name of question a is missing from question b (in any case or number)."""
    return any(e not in b.forms and stem(e) not in b.forms for e in a.entities)


def _opposite(a: QuestionFeatures, b: QuestionFeatures) -> bool:
    """Whether a word of question a has its opposite (listed, or by a negating prefix) only in b."""
    for word in a.forms - b.forms:
        if any(o in b.forms and o not in a.forms for o in _OPPOSITE_OF.get(word, ())):
            return True
        for prefix in NEGATING_PREFIXES:
            base = word[len(prefix) :].lstrip("-")
            if (
                word.startswith(prefix)
                and len(base) >= _PREFIX_MIN_BASE.get(prefix, 4)
                and base in b.forms
                and base not in a.forms
            ):
                return True
    return False


# Words that come and go in rewording without changing what is asked.
_FILLER = frozenset("a an the my your our their his her its some any this that".split())


def _frame(features: QuestionFeatures) -> list[tuple[str, str]]:
    return [(stem(t), t) for t in features.tokens if t not in _FILLER]


def _narrowed(a: QuestionFeatures, b: QuestionFeatures) -> bool:
    """Whether b is a word for word with content words inserted: "... a joint account online"."""
    short, long_ = _frame(a), _frame(b)
    if len(short) < 3 or len(long_) <= len(short):
        return False
    inserted, i = [], 0
    for word, raw in long_:
        if i < len(short) and word == short[i][0]:
            i += 1
        else:
            inserted.append(raw)
    return i == len(short) and any(w not in STOP_WORDS and w not in NEGATIONS for w in inserted)


# Words of the question-kind phrases ("how long", "how many days", "how much time", ...).
_KIND_WORDS = frozenset(
    stem(w)
    for w in "long many much time days weeks months years hours minutes often old far working "
    "business".split()
)


def _swapped(a: QuestionFeatures, b: QuestionFeatures) -> bool:
    """Whether a and b are word for word the same but for one or two content words swapped.

    "How can I increase my overdraft limit?" / "... reduce ...", "a debit card" / "a credit
    card", "pick up my parcel" / "drop off my parcel": one edit in an otherwise verbatim question
    is far more often another question than a rewording.
    """
    x, y = [w for w, _ in _frame(a)], [w for w, _ in _frame(b)]
    start = 0
    while start < min(len(x), len(y)) and x[start] == y[start]:
        start += 1
    end = 0
    while end < min(len(x), len(y)) - start and x[-1 - end] == y[-1 - end]:
        end += 1
    old, new = x[start : len(x) - end], y[start : len(y) - end]
    if not old or not new or len(old) > 2 or len(new) > 2 or len(x) - len(old) < 3:
        return False
    if a.kinds and a.kinds == b.kinds and set(old) | set(new) <= _KIND_WORDS:
        return False  # "how long" / "how many days": the same kind of question, worded two ways
    return any(w in a.content for w in old) and any(w in b.content for w in new)


def vetoes(a: QuestionFeatures, b: QuestionFeatures) -> list[str]:
    """The reasons two questions must not share an answer (empty: no veto)."""
    reasons = []
    if a.negated != b.negated:
        reasons.append("negation")
    if a.numbers != b.numbers:
        reasons.append("number")
    if a.dates != b.dates:
        reasons.append("date")
    # An entity of one question must appear (in any case) in the other.
    if _entities_missing(a, b) or _entities_missing(b, a):
        reasons.append("entity")
    elif (
        len(a.entity_order) > 1
        and a.entity_order != b.entity_order
        and set(a.entity_order) == set(b.entity_order)
    ):
        # "Denver think of Seattle" / "Seattle think of Denver": same names, roles swapped.
        reasons.append("entity_order")
    if _opposite(a, b) or _opposite(b, a):
        reasons.append("opposite")
    if a.kinds != b.kinds:
        reasons.append("question_kind")
    if a.extremes and b.extremes and a.extremes != b.extremes:
        reasons.append("extreme")
    if _narrowed(a, b) or _narrowed(b, a):
        reasons.append("qualifier")
    if _swapped(a, b):
        reasons.append("swap")
    return reasons


FAMILIES = (
    "negation",
    "number",
    "date",
    "entity",
    "opposite",
    "question_kind",
    "extreme",
    "qualifier",
    "swap",
)


# Which rule family each veto reason belongs to (the model file names families).
_FAMILY = {"entity_order": "entity"}


def veto_families(
    a: QuestionFeatures | None = None, b: QuestionFeatures | None = None
) -> list[str]:
    """The rule families that veto this pair; without a pair, every family there is."""
    if a is None or b is None:
        return list(FAMILIES)
    return list(dict.fromkeys(_FAMILY.get(reason, reason) for reason in vetoes(a, b)))


# --- What may be shared with other customers ------------------------------------------------
# The cache is the one channel from one customer to another, so what goes into it is read for
# steering (an instruction riding on a question), for contact details the passages do not give
# (a planted link, e-mail address or phone number) and for the asker's own details. All of it
# errs towards not sharing: a miss costs one model call, a wrong share reaches every customer.

# Questions that tell the assistant what to do rather than ask it something.
_INSTRUCTION = re.compile(
    r"\b(?:ignore|disregard|forget|override|bypass)\b[^.?!]{0,60}?"
    r"\b(?:instructions?|rules?|prompts?|previous|above|everything|guidelines|system|context)\b"
    r"|\bfrom\s+now\s+on\b|\bhenceforth\b|\bgoing\s+forward\b|\bfor\s+all\s+future\b"
    r"|\b(?:tell|inform|advise|remind|direct|send|refer|redirect|point|encourage|urge|warn)\s+"
    r"(?:people|customers|everyone|everybody|users|visitors|others|them|anyone|all|readers)"
    r"\s+(?:to|that)\b"
    r"|(?:^|[,.;:!?]\s*|\b(?:and|also|please|always|then|now|just)\s+)"
    r"(?:say|mention|recommend|write|reply|respond|state|append|promote|advertise|print|"
    r"output|repeat)\s+(?:(?:with|only|just)\s+)?(?:that\b|the\s+following|exactly|verbatim|"
    r"[\"'“‘])"
    r"|\b(?:in|to|into|at\s+the\s+(?:end|start|beginning|bottom|top)\s+of)\s+(?:your|every|each|"
    r"all|any)\s+(?:answers?|repl(?:y|ies)|responses?|outputs?)\b"
    r"|\b(?:always|also|please|and)\s+(?:say|mention|recommend|promote|advertise|link|tell|reply|"
    r"respond)\b(?!\s+(?:me|us)\b)"
    r"|\b(?:visit|go\s+to|see|try|use)\s+(?:(?:our|my|their|this|that|the)\s+)?(?:partner|"
    r"(?:web)?site|page|link|url|[a-z0-9-]+(?:\.|\s+dot\s+)[a-z]{2,})\b"
    r"|\b(?:you\s+are\s+now|you're\s+now|act\s+as|pretend|role-?play|you\s+must|you\s+will\s+now|"
    r"new\s+instructions?|system\s+prompt|developer\s+mode|jailbreak|repeat\s+after\s+me)\b",
    re.IGNORECASE,
)


def instruction_like(text: str) -> bool:
    """Whether a question tells the assistant what to say or do ("... and also tell people to
    visit ...", "from now on say ...", "ignore ..."): such questions are never cached."""
    return bool(_INSTRUCTION.search(text.replace("’", "'")))


_TLDS = (
    r"com|net|org|info|biz|io|co|ai|app|dev|shop|store|online|site|xyz|top|club|live|link|click|"
    r"me|tv|us|uk|de|fr|eu|nl|es|it|ca|au|in|ru|cn|ch|at|be|se|no|dk|pl|pt|ie|nz|gov|edu"
)
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"')\]]+", re.IGNORECASE)
# A bare domain (cheap-deals.com) or one spelled out to pass filters (cheap-deals dot com).
_DOMAIN = re.compile(
    rf"(?<![@\w.-])((?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\s*(?:\.|\(dot\)|\[dot\]|\s+dot\s+)\s*))+"
    rf"(?:{_TLDS}))\b(?!\.\w)",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# "alice at example dot com", "alice (at) example (dot) com".
_SPELLED_EMAIL = re.compile(
    rf"\b([\w.+-]+)\s*(?:\(at\)|\[at\]|\s+at\s+)\s*([a-z0-9-]+(?:\s*(?:\.|\(dot\)|\[dot\]|\s+dot\s+)"
    rf"\s*[a-z0-9-]+)*\s*(?:\.|\(dot\)|\[dot\]|\s+dot\s+)\s*(?:{_TLDS}))\b",
    re.IGNORECASE,
)
_DOT = re.compile(r"\s*(?:\(dot\)|\[dot\]|\s+dot\s+|\.)\s*", re.IGNORECASE)


def _host(text: str) -> str:
    text = _DOT.sub(".", text.strip().lower())
    text = re.sub(r"^(?:https?://)?(?:www\.)?", "", text)
    return text.rstrip(".,;:!?")


def contact_details(text: str, *, region: str) -> set[str]:
    """Links, e-mail addresses and phone numbers in a text, normalised for comparison: hosts and
    paths without scheme or www, e-mail addresses in lower case, phone numbers in E.164 (found by
    Google's libphonenumber; `region` reads numbers written without a country code)."""
    import phonenumbers  # a large module: loaded on first use, not at startup

    found: set[str] = set()
    for match in _EMAIL.finditer(text):
        found.add("mailto:" + match.group().lower().rstrip("."))
    for match in _SPELLED_EMAIL.finditer(text):
        found.add(f"mailto:{match.group(1).lower()}@{_host(match.group(2))}")
    emails = " ".join(m.group() for m in _EMAIL.finditer(text))
    for match in _URL.finditer(text):
        found.add(_host(match.group()))
    for match in _DOMAIN.finditer(text):
        if match.group(1) not in emails:
            found.add(_host(match.group(1)))
    for match in phonenumbers.PhoneNumberMatcher(
        text, region or None, leniency=phonenumbers.Leniency.POSSIBLE
    ):
        found.add(
            "tel:" + phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
        )
    return found


def contact_details_unsupported(answer: str, passages: list[str], *, region: str) -> set[str]:
    """The links, e-mail addresses and phone numbers of an answer that none of its passages
    gives (a link counts as given when the passages name its host and path, or a longer one)."""
    given = contact_details("\n".join(passages), region=region)
    return {
        item
        for item in contact_details(answer, region=region)
        if not any(g == item or g.startswith(item + "/") for g in given)
    }


# Seven or more digits in one run of digits, spaces and punctuation: a phone number written in a
# way no region's rules read ("0207 946 0958" read as American), or an account number.
_PHONE_LIKE = re.compile(r"\+?\d[\d\s().-]{6,}\d")
# Numbers that identify one customer's things: "order 4711", "#4711", "card ending 1234".
_ORDER_NUMBER = re.compile(
    r"#\s?\d{3,}"
    r"|\b(?:order|invoice|ticket|case|reference|ref|tracking|account|customer|member|card|"
    r"parcel|package|shipment|booking|reservation|confirmation|receipt|transaction|claim|"
    r"policy|serial|rma)s?\s*(?:(?:no\.?|number|num|nr\.?|id|code|#|:)\s*[:#]?\s*[a-z]{0,4}-?\d{2,}"
    r"|[a-z]{0,4}-?\d{4,})"
    r"|\b(?:ending|ends)\s+(?:in\s+|with\s+)?\d{3,4}\b|\blast\s+(?:four|4)\s+digits\b"
    r"|(?-i:\b[A-Z]{1,4}-?\d{4,}\b)|\b\d{5,}\b",
    re.IGNORECASE,
)
# House number, one to three words and a street word. The words that are also everyday words
# ("1 TB hard drive", "walk 1 minute", "from close distance") count only in Title Case.
_STREET = re.compile(
    r"\b\d{1,5}[a-z]?,?\s+(?:[a-z][a-z'-]*\s+){1,3}(?:street|st|avenue|ave|road|rd|lane|ln|"
    r"boulevard|blvd|terrace|crescent|parkway|pkwy|highway|hwy|mews|strasse|straße)\b"
    r"|(?-i:\b\d{1,5}[A-Za-z]?,?\s+(?:[A-Z][a-z'-]*\s+){1,3}(?:Drive|Dr|Way|Court|Ct|Place|Pl|"
    r"Close|Square|Sq|Walk|Row|Gardens|Grove|Hill|Park)\b)"
    r"|\bp\.?\s?o\.?\s+box\s+\d+"
    r"|(?-i:\b[A-Z]{1,2}\d[A-Z\d]?\s+\d[A-Z]{2}\b)",  # a UK postcode
    re.IGNORECASE,
)
# Words that follow "I'm" / "this is" without being a name.
_NOT_NAMES = STOP_WORDS | frozenset(
    """
    sorry new confused sure unsure ok okay fine back curious interested wondering trying looking
    still ready stuck lost happy unhappy disappointed annoyed upset angry worried afraid glad
    going planning thinking hoping calling writing asking done about urgent important correct
    right wrong true false possible available free open closed late early here there not quite
    pretty
    """.split()
)
_NAME = r"([a-z][a-z'-]+)"
_OWN_NAME = re.compile(
    rf"\b(?:my\s+name\s+is|my\s+name's|name\s+is|i\s+am\s+called|i'm\s+called|call\s+me)"
    rf"[\s,:-]+{_NAME}"
    # A signature at the very end: "thanks, carol".
    rf"|\b(?:signed|sincerely|regards|cheers|thanks|thank\s+you|best)[\s,:-]+{_NAME}[\s.!]*$"
    rf"|\b(?:i\s+am|i'm|im|this\s+is|it's)\s+{_NAME}(?=\s*(?:[,.!;:\-]|\s+[a-z][a-z'-]+\s*[,.!;:\-]|"
    rf"\s+here\b|$))"
    rf"|(?:^|[,.!;:]\s*)(?:hi|hello|hey|dear|good\s+(?:morning|afternoon|evening))?[\s,!.]*"
    rf"{_NAME}(?:\s+{_NAME})?\s+here(?=\s*[,.!;:\-…]|\s*$)",
    re.IGNORECASE,
)
# First-person accounts of what happened to the customer's own things.
_STORY_EVENT = re.compile(
    r"\b(?:i|we)\s+(?:have\s+|had\s+|'ve\s+|just\s+|already\s+|recently\s+)*(?:ordered|bought|"
    r"paid|purchased|received|sent|returned|got|was\s+charged|were\s+charged|placed|booked|"
    r"signed\s+up|subscribed|moved|called|emailed|e-mailed|spoke|complained|cancell?ed|lost|"
    r"broke|tried)\b",
    re.IGNORECASE,
)
_STORY_DETAIL = re.compile(
    r"\d|\bago\b|\blast\s+(?:week|month|year|night|time|monday|tuesday|wednesday|"
    r"thursday|friday|saturday|sunday)\b|\b(?:monday|tuesday|wednesday|thursday|friday|saturday|"
    r"sunday)\b|[.!;]\s+\w",
    re.IGNORECASE,
)
_RELATIVES = re.compile(
    r"\bmy\s+(?:wife|husband|son|daughter|mother|mum|mom|father|dad|friend|partner|neighbou?r|"
    r"boss|kids?|child|children|brother|sister)\b",
    re.IGNORECASE,
)


def _personal_matches(text: str, *, region: str) -> list[tuple[str, str]]:
    """(kind, the text matched) of every personal detail in a text."""
    import phonenumbers

    text = text.replace("’", "'")
    found: list[tuple[str, str]] = []
    for pattern in (_EMAIL, _SPELLED_EMAIL):
        found += [("email", m.group()) for m in pattern.finditer(text)]
    found += [
        ("phone", m.group())
        for m in _PHONE_LIKE.finditer(text)
        if sum(c.isdigit() for c in m.group()) >= 7
    ]
    found += [
        ("phone", m.raw_string)
        for m in phonenumbers.PhoneNumberMatcher(
            text, region or None, leniency=phonenumbers.Leniency.POSSIBLE
        )
    ]
    found += [("number", m.group()) for m in _ORDER_NUMBER.finditer(text)]
    found += [("address", m.group()) for m in _STREET.finditer(text)]
    for match in _OWN_NAME.finditer(text):
        names = [g for g in match.groups() if g]
        if any(
            name.lower().removesuffix("'s") not in _NOT_NAMES
            and not name.lower().endswith(("ing", "ed", "ly"))
            for name in names
        ):
            found.append(("name", match.group()))
    found += [("story", m.group()) for m in _RELATIVES.finditer(text)]
    event = _STORY_EVENT.search(text)
    if event and _STORY_DETAIL.search(text):
        found.append(("story", event.group()))
    return found


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def personal_details(text: str, *, region: str, given: str = "") -> list[str]:
    """What in a text is about one customer: an e-mail address (also spelled out), a phone number,
    an order, card or account number, a street address, the customer's own name (in any case:
    "alice here", "my name is alice") or a first-person account of their own things ("I ordered
    ... last week", "my husband ..."). The kinds found, in order, without those whose words
    `given` holds too (a passage's own support number or shop address is not the customer's)."""
    given = _squeeze(given)
    kinds: list[str] = []
    for kind, matched in _personal_matches(text, region=region):
        if kind not in kinds and not (given and _squeeze(matched) in given):
            kinds.append(kind)
    return kinds


def personal_tokens(text: str, *, region: str) -> set[str]:
    """The e-mail addresses and numbers of a text, in lower case: what must not reappear in an
    answer shared with others."""
    return {
        _squeeze(matched).strip(" .,;:")
        for kind, matched in _personal_matches(text, region=region)
        if kind in {"email", "phone", "number"} and matched.strip()
    }


def content_support(answer: str, passages: list[str]) -> float:
    """The share of an answer's content words (stems) found in the passages (0 when it has none)."""
    words = question_features(answer).content
    if not words:
        return 0.0
    given: set[str] = set()
    for text in passages:
        given |= question_features(text).content
    return len(words & given) / len(words)


def answers_agree(a: str, b: str, *, min_overlap: float = 0.5) -> bool:
    """Whether two answers say the same thing: the same numbers and, of their content words
    (stems), at least `min_overlap` in common (Jaccard)."""
    fa, fb = question_features(a), question_features(b)
    if fa.numbers != fb.numbers or fa.negated != fb.negated:
        return False
    union = fa.content | fb.content
    return bool(union) and len(fa.content & fb.content) / len(union) >= min_overlap
