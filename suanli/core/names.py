"""The one naming rule for users and projects.

A lowercase DNS label that starts with a letter: it is safe in URLs, hostnames, file paths and
as a Unix user name, which later backends map users to.
"""

import re

NAME_PATTERN = r"^[a-z]([a-z0-9-]{0,30}[a-z0-9])?$"
NAME_RULE = "1-32 characters: lowercase letters, digits and '-', starting with a letter"
_NAME_RE = re.compile(NAME_PATTERN)


def is_valid_name(name: str) -> bool:
    # fullmatch: in Python, "$" would also accept a trailing newline.
    return bool(_NAME_RE.fullmatch(name))
