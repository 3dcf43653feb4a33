"""The CLI's own file: server URL, user name and token, readable by its owner only (0600)."""

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8686"


def config_path() -> Path:
    explicit = os.environ.get("SUANLI_CLI_CONFIG")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "suanli" / "config.toml"


@dataclass
class CliConfig:
    url: str = DEFAULT_URL
    username: str = ""
    token: str = ""


class BadConfigFile(Exception):
    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


def load_file() -> CliConfig:
    """What `suanli login` saved, without the environment's overrides."""
    path = config_path()
    if not path.exists():
        return CliConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise BadConfigFile(path, str(error)) from error
    return CliConfig(
        url=str(data.get("url") or DEFAULT_URL),
        username=str(data.get("username", "")),
        token=str(data.get("token", "")),
    )


def load() -> CliConfig:
    """The saved login, overridden by SUANLI_URL and SUANLI_TOKEN (for scripts and CI)."""
    config = load_file()
    config.url = os.environ.get("SUANLI_URL") or config.url
    config.token = os.environ.get("SUANLI_TOKEN") or config.token
    return config


def save(config: CliConfig) -> Path:
    """Write the file atomically with mode 0600, in a directory only its owner can enter."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)  # also when the directory was there before
    text = "".join(
        f"{key} = {json.dumps(value)}\n"
        for key, value in (
            ("url", config.url),
            ("username", config.username),
            ("token", config.token),
        )
    )
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)
    return path


def forget() -> None:
    """Remove the saved token but keep the server URL and user name for the next login."""
    config = load_file()
    if config_path().exists():
        save(CliConfig(url=config.url, username=config.username, token=""))
