"""Tokens counted with a model's own tokenizer, for engines that report no usage (a stream
without its usage chunk, llama.cpp's server): a request is never metered as zero. Without a
tokenizer (a user's own command), four characters count as one token."""

import functools
import logging
import math
from pathlib import Path

from tokenizers import Tokenizer

log = logging.getLogger("suanli.serving.tokens")


@functools.lru_cache(maxsize=32)
def _load(path: Path) -> Tokenizer | None:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as error:  # a file the tokenizers library cannot read: estimate instead
        log.warning("tokenizer %s could not be loaded: %s", path, error)
        return None


def count(text: str, tokenizer: Path | None) -> int:
    """Tokens of `text` (blocking: the first call per model reads its tokenizer)."""
    if not text:
        return 0
    loaded = _load(tokenizer) if tokenizer is not None and tokenizer.is_file() else None
    if loaded is None:
        return math.ceil(len(text) / 4)
    return len(loaded.encode(text, add_special_tokens=False).ids)
