"""Settings come from defaults, an optional TOML file, SUANLI_* variables, then flags."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from suanli.config import Settings


def test_defaults_are_the_embedded_server(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SUANLI_CONFIG", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = Settings()
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'suanli' / 'suanli.db'}"
    assert settings.effective_public_url == "http://127.0.0.1:8686"


def test_file_then_environment_then_arguments(monkeypatch, tmp_path: Path) -> None:
    config = tmp_path / "suanli.toml"
    config.write_text('port = 9000\nhost = "0.0.0.0"\nusers_can_create_projects = true\n')
    monkeypatch.setenv("SUANLI_CONFIG", str(config))
    monkeypatch.setenv("SUANLI_PORT", "9100")
    settings = Settings()
    assert (settings.port, settings.host, settings.users_can_create_projects) == (
        9100,
        "0.0.0.0",
        True,
    )
    assert settings.effective_public_url == "http://127.0.0.1:9100"
    assert Settings(port=9200).port == 9200


def test_unknown_or_bad_settings_are_refused(monkeypatch, tmp_path: Path) -> None:
    config = tmp_path / "suanli.toml"
    config.write_text("prot = 9000\n")
    monkeypatch.setenv("SUANLI_CONFIG", str(config))
    with pytest.raises(ValidationError, match="prot"):
        Settings()
    monkeypatch.delenv("SUANLI_CONFIG")
    monkeypatch.setenv("SUANLI_LOG_LEVEL", "loud")
    with pytest.raises(ValidationError, match="log_level"):
        Settings()


def test_a_weak_first_admin_password_is_refused(monkeypatch) -> None:
    monkeypatch.delenv("SUANLI_CONFIG", raising=False)
    monkeypatch.setenv("SUANLI_ADMIN_PASSWORD", "short")
    with pytest.raises(ValidationError, match="admin_password"):
        Settings()
