"""CLI: `flask keys add|list|delete`, `flask init-db`."""

from __future__ import annotations

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


def test_readme_documents_every_setting():
    """The README's settings table names every KEYRELAY_* variable config.py reads."""
    from pathlib import Path

    import config

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    missing = [s.name for s in config.SETTINGS if f"| `KEYRELAY_{s.name}` |" not in readme]
    assert missing == []
