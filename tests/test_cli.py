"""CLI: `./kr keys add|list|delete|import`, `./kr init-db` (the start banner), `./kr master-key`."""

from __future__ import annotations

from pathlib import Path

from app import create_app
from extensions import db
from gateway.keys.secrets import mask
from tests.conftest import MASTER_KEY


def test_keys_add_list_delete(app):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=[
            "keys",
            "add",
            "--name",
            "cli",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--models",
            "gpt-4o,gpt-4o-mini",
            "--daily-token-limit",
            "500",
        ],
        input="sk-cli-secret-00000000000001\n",
    )
    assert result.exit_code == 0, result.output
    assert "Added key #1" in result.output
    listing = runner.invoke(args=["keys", "list"]).output
    assert "cli" in listing and "sk-cli-secret-…01" in listing
    assert "sk-cli-secret-00000000000001" not in listing
    assert runner.invoke(args=["keys", "delete", "1"]).exit_code == 0
    assert "cli" not in runner.invoke(args=["keys", "list"]).output
    missing = runner.invoke(args=["keys", "delete", "1"])
    assert missing.exit_code != 0 and "No provider key" in missing.output


def test_keys_add_rejects_bad_input(app):
    result = app.test_cli_runner().invoke(
        args=["keys", "add", "--name", "x", "--provider", "nope", "--secret", "s"]
    )
    assert result.exit_code != 0
    assert "Unknown provider" in result.output


def test_init_db_prints_url_and_master_key_source(app):
    output = app.test_cli_runner().invoke(args=["init-db"]).output
    assert "http://127.0.0.1:8080/v1" in output
    assert "KEYRELAY_MASTER_KEY" in output
    assert MASTER_KEY not in output


def test_keys_import_without_base_url_says_which_upstream_it_will_call(app, tmp_path):
    secrets_file = tmp_path / "keys.txt"
    secrets_file.write_text("sk-import-secret-000000000001\n")
    runner = app.test_cli_runner()
    plain = runner.invoke(args=["keys", "import", str(secrets_file), "--no-test"])
    assert plain.exit_code == 0, plain.output
    assert "No --base-url: these keys will call https://api.openai.com/v1" in plain.stderr
    assert "give --base-url URL" in plain.stderr
    secrets_file.write_text("sk-import-secret-000000000002\n")
    given = ["--base-url", "http://127.0.0.1:9/v1", "--no-test"]
    pointed = runner.invoke(args=["keys", "import", str(secrets_file), *given])
    assert pointed.exit_code == 0, pointed.output
    assert "Added 1" in pointed.stdout and "--base-url" not in pointed.stderr


def test_keys_add_without_base_url_names_the_default_upstream(app):
    args = ["keys", "add", "--name", "a", "--secret", "sk-add-secret-0000000001", "--no-test"]
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    assert "will call https://api.openai.com/v1 (openai's default)" in result.stderr


def _banner(settings: dict) -> tuple[str, str]:
    """init-db's banner (stdout) from an app on these settings, and its own stderr."""
    app = create_app(settings)
    try:
        result = app.test_cli_runner().invoke(args=["init-db"])
        assert result.exit_code == 0, result.output
        return result.stdout, app.config["MASTER_KEY"]
    finally:
        app.extensions["keyrelay"].close()
        with app.app_context():
            db.engine.dispose()


def test_the_banner_shows_the_master_key_in_full_only_when_it_is_made(settings):
    settings |= {"MASTER_KEY": None, "ADMIN_PASSWORD": None}
    path = Path(settings["INSTANCE_PATH"]) / "master_key"
    first, master = _banner(settings)
    assert master in first and str(path) in first
    assert "password: printed above (shown this once)" in first
    again, same = _banner(settings)
    assert same == master and master not in again
    assert f"{mask(master)} (in {path}; print it: ./kr master-key)" in again
    assert "printed above" not in again
    assert "./kr users set-password admin" in again


def test_the_banner_masks_a_master_key_from_the_environment(app):
    output = app.test_cli_runner().invoke(args=["init-db"]).stdout
    assert f"{mask(MASTER_KEY)} (from KEYRELAY_MASTER_KEY)" in output
    assert "password: KEYRELAY_ADMIN_PASSWORD" in output


def test_master_key_prints_the_key(app):
    assert app.test_cli_runner().invoke(args=["master-key"]).stdout == MASTER_KEY + "\n"
