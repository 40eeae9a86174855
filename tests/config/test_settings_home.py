from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from config.settings import Settings, get_settings
from tests.conftest import EXAMPLES
from worker.cli import main
from worker.staff.services import default_services
from worker.store.phi import reset_vault


def embedded(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """The embedded default as a new user has it: no database URL and no keys set."""
    for name in ("DATABASE_URL", "ADMITFLOW_ENCRYPTION_KEYS", "ADMITFLOW_BLIND_INDEX_KEY", "ADMITFLOW_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ADMITFLOW_HOME", str(home))
    get_settings.cache_clear()
    default_services.cache_clear()
    reset_vault()


def test_local_state_lives_in_admitflow_home_whatever_the_current_directory(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedded(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///admitflow.db")  # an old .env's relative path
    monkeypatch.setenv("ADMITFLOW_KEY_FILE", ".admitflow-keys.json")
    monkeypatch.chdir(tmp_path)

    loaded = Settings()

    assert loaded.database_url == f"sqlite:///{tmp_path / 'home' / 'admitflow.db'}"
    assert loaded.key_file == tmp_path / "home" / ".admitflow-keys.json"


def test_the_default_home_is_the_per_user_data_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    from platformdirs import user_data_path

    monkeypatch.delenv("ADMITFLOW_HOME", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)

    loaded = Settings()

    assert loaded.data_dir == user_data_path("admitflow", appauthor=False)
    assert loaded.database_url == f"sqlite:///{loaded.data_dir / 'admitflow.db'}"


def test_commands_run_from_two_directories_share_one_database_and_one_key_file(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    args = ["ingest", "--form", str(EXAMPLES / "form.json"), str(EXAMPLES / "entries.json")]
    for directory in ("first", "second"):
        (tmp_path / directory).mkdir()
        monkeypatch.chdir(tmp_path / directory)
        embedded(monkeypatch, home)
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output

    assert "already seen 5" in result.stdout
    assert sorted(path.name for path in home.iterdir() if not path.name.startswith("admitflow.db-")) == [
        "admitflow.db", "phi-keys.json"]
    assert not list((tmp_path / "first").iterdir()) and not list((tmp_path / "second").iterdir())
    listing = CliRunner().invoke(main, ["submissions", "list"])
    assert listing.exit_code == 0 and listing.stdout.count("processed") == 3


def test_a_key_file_left_in_the_current_directory_by_an_older_version_is_not_replaced(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".admitflow-keys.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    embedded(monkeypatch, tmp_path / "home")

    result = CliRunner().invoke(main, ["submissions", "list"])

    assert result.exit_code == 2
    assert "found .admitflow-keys.json in the current directory" in result.output
    assert f"move it to {tmp_path / 'home' / 'phi-keys.json'}" in result.output
    assert "Traceback" not in result.output


def test_a_blank_variable_means_the_settings_default_as_compose_passes_one_an_old_env_lacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("ADMITFLOW_HEARTBEAT_SECONDS", "ADMITFLOW_MAX_BODY_BYTES", "ADMITFLOW_SITE", "CALLBACK_CADENCE"):
        monkeypatch.setenv(name, "")

    settings = Settings()

    assert settings.heartbeat_seconds == Settings.model_fields["heartbeat_seconds"].default
    assert (settings.max_body_bytes, settings.site, settings.callback_cadence) == (256 * 1024, "main", "15m,2h,morning")


def test_call_back_retries_are_turned_off_with_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLBACK_CADENCE", "none")

    assert Settings().callback_cadence == ""
