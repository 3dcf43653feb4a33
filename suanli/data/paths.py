"""The one rule for a file's path inside a version.

A path comes from users (uploads, manifests), from remote servers (imports) and from
workloads (committed outputs); it becomes a path on the server's disk when a version's tree
is built. So it must stay inside the tree whatever it says: relative, '/'-separated, no '.'
or '..' component, no empty component, no NUL, backslash or control character, and of a
length every filesystem takes.
"""

MAX_PATH = 1024
MAX_COMPONENT = 255
# The rule as a regular expression, for the API's document: parts of 1-255 characters
# without '/', backslash or control characters, none of them '.' or '..' (written without
# look-ahead, which the validators' regex dialect lacks). The byte limits, for names in
# UTF-8, are checked by `check` alone.
_ANY = r"[^/\\\x00-\x1f\x7f]"
_NOT_DOT = r"[^/\\\x00-\x1f\x7f.]"
_PART = rf"(?:{_NOT_DOT}{_ANY}{{0,254}}|\.{_NOT_DOT}{_ANY}{{0,253}}|\.\.{_ANY}{{1,253}})"
PATTERN = rf"^{_PART}(?:/{_PART})*$"


class BadPath(ValueError):
    """The path breaks the rule; the message key says how (`validation.data_path.*`)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def check(path: str) -> str:
    """The path as stored, or BadPath."""
    if not path or len(path.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise BadPath("validation.data_path.length")
    if path.startswith("/"):
        raise BadPath("validation.data_path.absolute")
    if any(ord(character) < 32 or character in "\\\x7f" for character in path):
        raise BadPath("validation.data_path.character")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BadPath("validation.data_path.component")
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT for part in parts):
        raise BadPath("validation.data_path.length")
    return path


def conflicts(paths: list[str]) -> str | None:
    """A path that is also a folder of another (`a` and `a/b`): no tree can hold both."""
    files = set(paths)
    for path in paths:
        parts = path.split("/")
        for end in range(1, len(parts)):
            if "/".join(parts[:end]) in files:
                return path
    return None
