"""Translations: every message a user reads comes from the zh-CN and English catalogues.

Catalogues are flat JSON maps from a stable key to a `str.format` template. A test holds them
to the same keys and the same placeholders, so neither language can fall behind.
"""

import json
from functools import cache
from pathlib import Path
from typing import Any

LANGUAGES = ("en", "zh-CN")
DEFAULT_LANGUAGE = "en"
_DIR = Path(__file__).parent


@cache
def catalogue(language: str) -> dict[str, str]:
    return json.loads((_DIR / f"{language}.json").read_text(encoding="utf-8"))


def translate(key: str, language: str = DEFAULT_LANGUAGE, /, **params: Any) -> str:
    """The message for `key` in `language`, falling back to English, then to the key itself."""
    template = catalogue(normalize(language)).get(key) or catalogue(DEFAULT_LANGUAGE).get(key)
    if template is None:
        return key
    try:
        return template.format(**params)
    except (KeyError, IndexError, ValueError):
        return template


def normalize(language: str | None) -> str:
    """Map a language tag to a supported one: every Chinese tag reads zh-CN, others English."""
    tag = (language or "").strip().lower().replace("_", "-")
    return "zh-CN" if tag == "zh" or tag.startswith("zh-") else DEFAULT_LANGUAGE


def negotiate(accept_language: str | None) -> str:
    """Pick the supported language the client ranks highest in an Accept-Language header."""
    best, best_q = DEFAULT_LANGUAGE, -1.0
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        if not tag or tag == "*":
            continue
        try:
            q = float(params.strip()[2:]) if params.strip().startswith("q=") else 1.0
        except ValueError:
            continue
        if tag.lower().startswith(("zh", "en")) and q > best_q:
            best, best_q = normalize(tag), q
    return best
