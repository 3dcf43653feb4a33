"""Both catalogues are complete, and every message key the code uses exists in them.

Keys built at run time (table columns, problem titles) are checked where they are shown:
the CLI tests run commands in both languages and look for untranslated keys.
"""

import re
import string
from pathlib import Path

import pytest

from suanli.i18n import LANGUAGES, catalogue, negotiate, translate

SOURCE = Path(__file__).parent.parent / "suanli"
# Literal keys in the code: "error.x", "cli.x", "validation.x", "title.x".
KEY = re.compile(r"""["']((?:error|cli|label|validation|title|event|web)\.[a-z_.-]+)["']""")


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_catalogues_have_the_same_keys_and_placeholders() -> None:
    english, chinese = catalogue("en"), catalogue("zh-CN")
    assert set(english) == set(chinese), set(english) ^ set(chinese)
    for key in english:
        assert placeholders(english[key]) == placeholders(chinese[key]), key
        assert chinese[key].strip(), key


def test_every_key_used_in_the_code_and_the_templates_is_translated() -> None:
    used = set()
    for path in [*SOURCE.rglob("*.py"), *SOURCE.rglob("templates/*.html")]:
        used |= set(KEY.findall(path.read_text(encoding="utf-8")))
    used = {key for key in used if not key.endswith(".html") and not key.endswith(".")}
    assert len(used) > 250
    for language in LANGUAGES:
        missing = sorted(k for k in used if k not in catalogue(language))
        assert not missing, (language, missing)


def test_problem_titles_exist_for_every_error_type() -> None:
    from suanli.api.problems import _STATUS_TYPES
    from suanli.core import errors

    types = {
        cls.type
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.SuanliError)
    }
    types |= set(_STATUS_TYPES.values()) | {"internal-error"}
    for language in LANGUAGES:
        for type_ in types:
            assert f"title.{type_}" in catalogue(language), (language, type_)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("en-US,en;q=0.9", "en"),
        ("en;q=0.5, zh-TW", "zh-CN"),
        ("fr-FR, de", "en"),
        ("", "en"),
        (None, "en"),
        ("zh;q=abc, en", "en"),
    ],
)
def test_negotiate(header: str | None, expected: str) -> None:
    assert negotiate(header) == expected


def test_translate_formats_and_falls_back() -> None:
    assert translate("error.locked", "zh-CN", seconds=5) == "登录失败次数过多，请在 5 秒后重试。"
    assert translate("error.locked", "fr", seconds=5).startswith("Too many")
    assert translate("no.such.key", "en") == "no.such.key"
