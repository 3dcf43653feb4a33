"""Imports: where the files of a new dataset or model version come from.

A source is stored with the import and shown back to its users; its secrets (a password, S3
keys) are kept apart, encrypted, so `public()` and `secrets()` split them. Credentials inside
the URL (user:pass@host) are refused for that reason: they would be stored and shown in clear.
"""

import re
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

from suanli.schemas.types import Flag, RequestModel, ShortText, text

ImportKind = Literal["http", "ftp", "sftp", "git", "s3"]
# The URL schemes each kind accepts. Git never gets file://, ext:: or a local path: those
# would read the server's own disk or run a command. Hub file URLs (huggingface.co,
# modelscope.cn) are plain https for kind "http".
SCHEMES: dict[str, tuple[str, ...]] = {
    "http": ("http", "https"),
    "ftp": ("ftp",),
    "sftp": ("sftp",),
    "git": ("http", "https", "git"),
    "s3": ("http", "https"),
}
MAX_URL = 2048
MAX_SECRET = 4096
# A branch or tag: it goes on git's command line, so it may not start with '-' (an option).
REF_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._/+-]{0,254}$"
# S3 and the S3-compatible stores (MinIO, Ceph): letters, digits, '.', '-' and '_'.
BUCKET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{2,254}$"
SECRET_FIELDS = ("password", "access_key", "secret_key")
# No spaces or control characters anywhere in a URL (they would be sent as typed).
_URL_CHARACTERS = re.compile(r"^[^\x00-\x20\x7f]+$")


def _secret_text(value: SecretStr) -> SecretStr:
    """The rules of every text field, for a value that is never echoed back."""
    secret = value.get_secret_value()
    if len(secret) > MAX_SECRET:
        raise PydanticCustomError(
            "string_too_long", "at most {max_length} characters", {"max_length": MAX_SECRET}
        )
    if "\x00" in secret:
        raise PydanticCustomError("text_nul", "must not contain a NUL character")
    return value


Secret = Annotated[SecretStr, AfterValidator(_secret_text)]
# The pattern is checked by `ImportSource._ref`, with the other rules and a message that says
# what a ref is; the document states it.
Ref = Annotated[
    text(min_length=1, max_length=255),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 255, "pattern": REF_PATTERN}),
]


def split_url(url: str) -> SplitResult:
    """The URL's parts; the port is checked here (urlsplit only checks it when asked)."""
    parts = urlsplit(url)
    _ = parts.port  # raises ValueError when the port is not a number in 0-65535
    return parts


def _ref_problem(ref: str) -> bool:
    """True when git would refuse the name, or read it as something else than a ref."""
    return (
        not re.fullmatch(REF_PATTERN, ref)
        or ".." in ref
        or "//" in ref
        or ref.endswith(("/", ".", ".lock"))
        or "/." in ref
    )


class ImportSource(RequestModel):
    """One remote source: an http(s) file, an FTP or SFTP file or folder (recursive), a git
    repository (one branch or tag, without history) or an S3 bucket's keys under a prefix."""

    kind: ImportKind
    # http(s)://host/path; ftp://host[:port]/path; sftp://host[:port]/path; git: an http(s)://
    # or git:// URL; s3: the endpoint (http(s)://host:port).
    url: text(min_length=1, max_length=MAX_URL)
    # git: the branch or tag (default: the repository's default branch).
    ref: Ref | None = None
    # git: also fetch the git-lfs files (git-lfs must be installed on the server).
    lfs: Flag = False
    # ftp, sftp, http basic authentication, git over http(s).
    username: ShortText | None = Field(default=None, validate_default=True)
    password: Secret | None = None
    # s3: the bucket (required) and the key prefix to import.
    bucket: text(max_length=255) | None = Field(default=None, validate_default=True)
    prefix: text(max_length=1024) = ""
    access_key: Secret | None = None
    secret_key: Secret | None = None
    region: ShortText = "us-east-1"
    # Unpack .zip, .tar, .tar.gz and .tgz files after download (each into a folder named
    # after it, in its place).
    unpack: Flag = False

    @field_validator("url")
    @classmethod
    def _url(cls, url: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        if not _URL_CHARACTERS.match(url):
            raise PydanticCustomError("import_url", "must be a URL without spaces")
        try:
            parts = split_url(url)
        except ValueError:
            raise PydanticCustomError("import_url", "must be a URL without spaces") from None
        schemes = SCHEMES.get(kind or "", ())
        if kind and parts.scheme.lower() not in schemes:
            raise PydanticCustomError(
                "import_scheme",
                "a {kind} source needs a URL starting with {schemes}",
                {"kind": kind, "schemes": ", ".join(f"{s}://" for s in schemes)},
            )
        if "@" in parts.netloc:
            raise PydanticCustomError(
                "import_url_credentials", "put the user name and password in their own fields"
            )
        if not parts.hostname:
            raise PydanticCustomError("import_url", "must be a URL without spaces")
        return url

    @field_validator("ref")
    @classmethod
    def _ref(cls, ref: str | None) -> str | None:
        if ref is not None and _ref_problem(ref):
            raise PydanticCustomError("import_ref", "not a branch or tag name: {ref}", {"ref": ref})
        return ref

    @field_validator("username")
    @classmethod
    def _username(cls, username: str | None, info: ValidationInfo) -> str | None:
        # Without one, SSH would log in as the server's own account name.
        if info.data.get("kind") == "sftp" and not username:
            raise PydanticCustomError("import_username_missing", "an sftp source needs a user name")
        return username

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, bucket: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("kind") == "s3" and not bucket:
            raise PydanticCustomError("import_bucket_missing", "an s3 source needs a bucket")
        if bucket is not None and not re.fullmatch(BUCKET_PATTERN, bucket):
            raise PydanticCustomError(
                "import_bucket", "not a bucket name: {bucket}", {"bucket": bucket}
            )
        return bucket

    def secrets(self) -> dict[str, str]:
        """The secret fields that are set, in clear: for the caller to store encrypted."""
        values = {name: getattr(self, name) for name in SECRET_FIELDS}
        return {name: value.get_secret_value() for name, value in values.items() if value}

    def public(self) -> dict[str, Any]:
        """Everything but the secrets: what may be stored in clear and shown to users.
        `ImportSource(**source.public(), **source.secrets())` is the same source."""
        return self.model_dump(exclude=set(SECRET_FIELDS))
