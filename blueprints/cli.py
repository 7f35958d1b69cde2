"""CLI commands (`./kr …`, or `keyrelay …` when installed): `init-db`, `master-key`,
`keys …`, `client-keys …`, `users …`, `jobs list|run`, `config …`, `backup create|restore`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select

from extensions import db
from gateway import periods
from gateway.admin import client_keys, configfiles, provider_keys, users
from gateway.admin import config as config_commands
from gateway.admin.context import Admin
from gateway.admin.errors import InputError
from gateway.jobs import backup, scheduler
from gateway.keys import provider_keys as keyring
from gateway.keys.secrets import mask
from models import ClientKey, ProviderKey

keys_cli = AppGroup("keys", help="Manage provider keys.")


CLI_HELP = """KeyRelay's command line (run from any folder as ./kr, or `keyrelay` when installed).

Settings come from KEYRELAY_* variables and the .env file beside app.py."""


def main() -> None:
    """`./kr …` / `keyrelay …`: the app's commands, no FLASK_APP or active venv needed."""
    from flask.cli import FlaskGroup

    verbose = click.Option(
        ["-v", "--verbose"],
        is_flag=True,
        is_eager=True,
        expose_value=False,
        callback=_verbose,
        help="Debug logging, the database migrations' own lines included.",
    )
    group = FlaskGroup(
        help=CLI_HELP,
        create_app=_create_app,
        add_default_commands=False,
        load_dotenv=False,  # config.py reads the .env beside app.py, not the shell's folder's
        set_debug_flag=False,
        add_version_option=False,
        params=[verbose],
    )
    # Flask's --app/--env-file/--debug mean nothing here: the app and its .env are fixed.
    group.params = [p for p in group.params if p.name not in ("app", "env_file", "debug")]
    called = Path(sys.argv[0]).name  # `keyrelay` installed; `-c` from the ./kr wrapper
    group.main(prog_name="kr" if called in ("-c", "") else called)


def _verbose(_context, _param, value: bool) -> None:
    if value:
        os.environ["KEYRELAY_LOG_LEVEL"] = "DEBUG"


def _create_app():
    from app import create_app

    return create_app()


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Create or upgrade the database, then say where everything is (start.sh runs it)."""
    config = current_app.config
    url = f"http://{config['BIND']}"
    click.echo(
        f"KeyRelay\n"
        f"  URL:          {url}   (OpenAI SDK base_url: {url}/v1; Anthropic SDK: {url})\n"
        f"  Dashboard:    {url}/   user '{config['ADMIN_USERNAME']}', password: "
        f"{_password_line(config)}\n"
        f"  Master key:   {_master_key_line(config)}\n"
        f"  Database:     {config['SQLALCHEMY_DATABASE_URI']}\n"
        f"  Add a key:    ./kr keys add --name main --base-url https://api.openai.com/v1\n"
        f"  Client key:   ./kr client-keys create --name my-app   (what your apps send)\n"
        f"  Help:         ./kr --help"
    )


def _master_key_line(config) -> str:
    """The master key in full only when this run created it; else masked, with where it is."""
    if config.get("MASTER_KEY_SOURCE") == "env":
        return f"{mask(config['MASTER_KEY'])} (from KEYRELAY_MASTER_KEY)"
    path = Path(current_app.instance_path) / "master_key"
    if config.get("MASTER_KEY_CREATED"):
        return f"{config['MASTER_KEY']}\n                (new; kept in {path})"
    return f"{mask(config['MASTER_KEY'])} (in {path}; print it: ./kr master-key)"


def _password_line(config) -> str:
    """Where the first admin's password comes from, true on every start."""
    if config.get("ADMIN_PASSWORD_GENERATED"):
        return "printed above (shown this once)"
    if config.get("ADMIN_PASSWORD"):
        return "KEYRELAY_ADMIN_PASSWORD"
    username = config["ADMIN_USERNAME"]
    return f"the one shown at the first start (forgot it? ./kr users set-password {username})"


@click.command("master-key")
@with_appcontext
def master_key_command() -> None:
    """Print the master key (the admin bearer key for /v1 and /api/admin)."""
    click.echo(current_app.config["MASTER_KEY"])


MODELS_HELP = (
    "Comma-separated, or * for any. Default: the models the key's test discovers "
    "(else the provider's list)."
)
TEST_HELP = "Test each new key at once (its model list is discovered)."


def _now():
    return current_app.extensions["keyrelay"].clock.now()


def _admin() -> Admin:
    """The context of an admin command run from the command line (actor `cli`)."""
    return Admin(db.session, current_app.extensions["keyrelay"], "cli")


@keys_cli.command("add")
@click.option("--profile", default="default", show_default=True)
@click.option("--provider", default="openai", show_default=True)
@click.option("--name", required=True)
@click.option("--secret", prompt=True, hide_input=True, help="Prompted for when not given.")
@click.option("--base-url", default=None, help="Default: the provider's public API.")
@click.option("--models", default=None, help=MODELS_HELP)
@click.option("--daily-token-limit", type=int, default=None)
@click.option("--test/--no-test", default=True, show_default=True, help=TEST_HELP)
def add_key(profile, provider, name, secret, base_url, models, daily_token_limit, test) -> None:
    """Add a provider key, then test it."""
    if not base_url:
        _default_upstream(provider)
    data = {
        "profile": profile,
        "provider": provider,
        "name": name,
        "secret": secret,
        "base_url": base_url,
        "models": models,
        "daily_token_limit": daily_token_limit,
    }
    try:
        key = provider_keys.create(_admin(), keyring.parse_key_input(data, creating=True))
    except InputError as exc:
        db.session.rollback()
        raise click.UsageError(str(exc)) from None
    click.echo(f"Added key #{key.id} {key.name} ({key.secret_masked}) to profile {profile}.")
    if test:
        _test_new_keys([key.id])


def _default_upstream(provider: str) -> dict:
    """Say which upstream keys added without --base-url will call (no surprise later)."""
    default = keyring.DEFAULT_BASE_URLS.get(provider) or ""
    if default.startswith("http"):
        click.echo(
            f"No --base-url: these keys will call {default} ({provider}'s default). "
            "For another OpenAI-compatible API, give --base-url URL.",
            err=True,
        )
    return {}


def _test_new_keys(key_ids: list[int]) -> None:
    """Test keys just added and say how each went; a key whose test failed is kept."""
    tested = current_app.extensions["keyrelay"].tester.test_many(key_ids)
    for key_id, result in tested.items():
        if result["result"] == "ok":
            models = result.get("models")
            found = f"{len(models)} models" if models is not None else "no model list"
            click.echo(f"  tested   #{key_id}: ok, {found}")
        else:
            outcome = result["result"].replace("_", " ")
            click.echo(f"  tested   #{key_id}: {outcome} — {result['message']}")


@keys_cli.command("list")
def list_keys() -> None:
    """List provider keys, secrets masked."""
    now = _now()
    used = keyring.key_usage(db.session, periods.local_day(now))
    for key in db.session.scalars(select(ProviderKey).order_by(ProviderKey.id)):
        info = keyring.describe(key, used.get(key.id), now)
        click.echo(
            f"#{info['id']:<4} {info['profile']:<12} {info['provider']:<8} {info['name']:<20} "
            f"{info['secret']:<24} {info['status']:<14} used today {info['used_today']}"
        )


@keys_cli.command("delete")
@click.argument("key_id", type=int)
def delete_key(key_id: int) -> None:
    """Delete a provider key by id."""
    key = db.session.get(ProviderKey, key_id)
    if key is None:
        raise click.UsageError(f"No provider key with id {key_id}.")
    provider_keys.delete(_admin(), key)
    click.echo(f"Deleted key #{key_id}.")


@keys_cli.command("import")
@click.argument("source", type=click.File("r"))
@click.option("--profile", default="default", show_default=True)
@click.option("--provider", default="openai", show_default=True)
@click.option("--base-url", default=None, help="Default: the provider's public API.")
@click.option("--models", default=None, help=MODELS_HELP)
@click.option("--daily-token-limit", type=int, default=None)
@click.option("--prefix", default="imported", show_default=True, help="Name prefix.")
@click.option("--test/--no-test", default=True, show_default=True, help=TEST_HELP)
def import_keys(
    source, profile, provider, base_url, models, daily_token_limit, prefix, test
) -> None:
    """Add many keys from a file: one secret a line (# comments), as the dashboard's bulk
    import; duplicates and bad lines are reported, the rest added, then tested."""
    shared = {"profile": profile, "provider": provider}
    shared |= {"models": models} if models is not None else {}
    shared |= {"base_url": base_url} if base_url else _default_upstream(provider)
    shared |= {"daily_token_limit": daily_token_limit} if daily_token_limit else {}
    if not keyring.PROFILE_NAME.match(prefix):
        raise click.UsageError("--prefix: use letters, digits, '_', '.', '-'.")
    try:
        report = provider_keys.import_many(_admin(), source.read(), shared, prefix)
    except InputError as exc:
        db.session.rollback()
        raise click.UsageError(str(exc)) from None
    click.echo(
        f"Added {len(report.added)}, duplicates {len(report.duplicates)}, "
        f"rejected {len(report.rejected)}."
    )
    for entry in report.added:
        click.echo(f"  added    line {entry['line']}: #{entry['id']} {entry['name']}")
    for kind, entries in (("duplicate", report.duplicates), ("rejected", report.rejected)):
        for entry in entries:
            click.echo(f"  {kind:<8} line {entry['line']}: {entry['secret']} ({entry['reason']})")
    if test:
        _test_new_keys([entry["id"] for entry in report.added])


@keys_cli.command("reset")
@click.argument("key_id", type=int, required=False)
@click.option("--all", "every", is_flag=True, help="Every provider key.")
def reset_keys(key_id: int | None, every: bool) -> None:
    """Clear a key's cooldown, failure streak and rate windows; a cooling-down,
    auth-failed or auto-disabled key is active again (an admin's disable stays)."""
    if (key_id is None) == (not every):
        raise click.UsageError("Give a key id or --all (not both).")
    query = select(ProviderKey).order_by(ProviderKey.id)
    keys = list(db.session.scalars(query if every else query.where(ProviderKey.id == key_id)))
    if not keys:
        raise click.UsageError(f"No provider key with id {key_id}." if not every else "No keys.")
    for key, was in provider_keys.reset(_admin(), keys):
        click.echo(f"Reset key #{key.id} {key.name}: {was} -> {key.status}.")


# -- client keys ------------------------------------------------------------------------

client_keys_cli = AppGroup("client-keys", help="Manage client keys (the keys apps use).")


def _client_key(key_id: int) -> ClientKey:
    row = db.session.get(ClientKey, key_id)
    if row is None:
        raise click.UsageError(f"No client key with id {key_id}.")
    return row


@client_keys_cli.command("list")
@click.option("--profile", default=None, help="Only this profile's keys.")
def list_client_keys(profile: str | None) -> None:
    """List client keys (their hint, never the key)."""
    now = _now()
    for row in db.session.scalars(select(ClientKey).order_by(ClientKey.id)):
        info = row.to_dict(now)
        if profile and info["profile"] != profile:
            continue
        budget = info["max_budget"] or "-"
        click.echo(
            f"#{info['id']:<4} {info['profile']:<12} {info['name']:<20} {info['key_hint']:<14} "
            f"{info['status']:<8} rpm {info['rpm_limit'] or '-'} budget {budget}"
        )


@client_keys_cli.command("create")
@click.option("--name", required=True)
@click.option("--profile", default="default", show_default=True)
@click.option("--models", default=None, help="Comma-separated; default: every model.")
@click.option("--rpm-limit", default=None, help="Requests per minute (default: the setting).")
@click.option("--tpm-limit", default=None, help="Tokens per minute (default: the setting).")
@click.option("--max-budget", default=None, help="USD, e.g. 10.00.")
@click.option("--budget-duration", default=None, help="e.g. 30d, 1mo; default: for ever.")
@click.option("--expires-at", default=None, help="ISO 8601 time.")
def create_client_key(name, profile, models, **limits) -> None:
    """Create a client key; the key is printed this once (only its hash is stored)."""
    from blueprints.common import client_key_defaults
    from gateway.keys import client_keys as clientkeys

    data = {"name": name, "profile": profile, "models": models}
    data |= {field: value for field, value in limits.items() if value is not None}
    try:
        spec = clientkeys.parse(data, creating=True)
        row, key = client_keys.create(_admin(), spec, defaults=client_key_defaults())
    except InputError as exc:
        db.session.rollback()
        raise click.UsageError(str(exc)) from None
    click.echo(f"Created client key #{row.id} {row.name} in profile {profile}:\n{key}")
    click.echo("It is shown this once; store it now.", err=True)


@client_keys_cli.command("revoke")
@click.argument("key_id", type=int)
def revoke_client_key(key_id: int) -> None:
    """Revoke a client key for good (it answers 401 from now on)."""
    row = _client_key(key_id)
    client_keys.revoke(_admin(), row)
    click.echo(f"Revoked client key #{row.id} {row.name}.")


@client_keys_cli.command("top-up")
@click.argument("key_id", type=int)
@click.argument("amount")
def top_up_client_key(key_id: int, amount: str) -> None:
    """Add AMOUNT USD (e.g. 5.00) to a client key's budget."""
    from models.types import usd

    row = _client_key(key_id)
    try:
        micros = client_keys.top_up(_admin(), row, amount)
    except InputError as exc:
        db.session.rollback()
        raise click.UsageError(str(exc)) from None
    budget = row.to_dict(_now())["max_budget"]
    click.echo(f"Topped up client key #{row.id} by {usd(micros)} USD: budget {budget}.")


users_cli = AppGroup("users", help="Manage dashboard users.")


def _create_user(username: str, password: str, role: str) -> None:
    try:
        users.create(_admin(), username, password, role)
    except InputError as exc:
        db.session.rollback()
        raise click.UsageError(str(exc)) from None
    click.echo(f"Created {role} '{username}'.")


@users_cli.command("create-admin")
@click.argument("username")
@click.password_option(help="Prompted for (twice) when not given.")
def create_admin(username: str, password: str) -> None:
    """Create a dashboard admin."""
    _create_user(username, password, "admin")


@users_cli.command("create")
@click.argument("username")
@click.option("--role", type=click.Choice(["admin", "viewer"]), default="viewer", show_default=True)
@click.password_option(help="Prompted for (twice) when not given.")
def create_user(username: str, role: str, password: str) -> None:
    """Create a dashboard user (a viewer reads only)."""
    _create_user(username, password, role)


@users_cli.command("set-password")
@click.argument("username")
@click.password_option(help="Prompted for (twice) when not given.")
def set_password(username: str, password: str) -> None:
    """Change a user's password (ends their open sessions)."""
    from models import User

    user = db.session.scalar(select(User).where(User.username == username))
    if user is None:
        raise click.UsageError(f"No user named '{username}'.")
    try:
        users.set_password(_admin(), user, password)
    except InputError as exc:
        db.session.rollback()
        raise click.UsageError(str(exc)) from None
    click.echo(f"Changed the password of '{username}'.")


@users_cli.command("list")
def list_users() -> None:
    """List dashboard users and their roles."""
    from models import User

    for user in db.session.scalars(select(User).order_by(User.username)):
        click.echo(f"{user.username:<24} {user.role}")


jobs_cli = AppGroup("jobs", help="Scheduled jobs: list them, or run one now.")


@jobs_cli.command("list")
def list_jobs() -> None:
    """Each scheduled job: when it runs, when it last ran and how that went."""
    for job in scheduler.describe(current_app)["data"]:
        outcome = "failed" if job["last_error"] else "ok" if job["last_run_at"] else "never run"
        click.echo(
            f"{job['name']:<18} {job['schedule']:<34} last run {job['last_run_at'] or '-'} "
            f"({outcome})"
        )


@jobs_cli.command("run")
@click.argument("name", type=click.Choice([job.name for job in scheduler.JOBS]))
def run_job(name: str) -> None:
    """Run a scheduled job now, in this process, and print what it did (jobs are
    idempotent: running one by hand never counts anything twice)."""
    from flask import json

    outcome = scheduler.run_job(current_app._get_current_object(), name)
    click.echo(json.dumps(outcome, indent=2))
    if outcome["error"]:
        raise SystemExit(1)


# -- configuration files (F58) ---------------------------------------------------------

config_cli = AppGroup("config", help="Export and import models.yaml / limits.yaml.")


@config_cli.command("export")
@click.argument("kind", type=click.Choice(configfiles.KINDS))
@click.option("-o", "--output", type=click.File("w"), default="-", help="File (default: stdout).")
def export_config(kind: str, output) -> None:
    """Write routes (models) or limits (limits) as YAML."""
    output.write(configfiles.export(db.session, kind))


@config_cli.command("import")
@click.argument("kind", type=click.Choice(configfiles.KINDS))
@click.argument("source", type=click.File("r"))
@click.option("--replace", is_flag=True, help="models: delete routes the file leaves out.")
@click.option("--dry-run", is_flag=True, help="Check the file and say what would change.")
def import_config(kind: str, source, replace: bool, dry_run: bool) -> None:
    """Apply a models.yaml or limits.yaml; a bad entry changes nothing and is named."""
    try:
        report = config_commands.import_file(_admin(), kind, source.read(), replace, dry_run)
    except configfiles.ConfigFileError as exc:
        raise click.ClickException(str(exc)) from None
    if dry_run:
        click.echo(f"Would apply {kind}.yaml: {report.summary()}.")
        return
    click.echo(f"Applied {kind}.yaml: {report.summary()}.")
    for line in report.created + report.updated + report.deleted:
        click.echo(f"  {line}")


# -- backup and restore -----------------------------------------------------------------

backup_cli = AppGroup("backup", help="Back up the database and key files, or restore them.")


@backup_cli.command("create")
@click.argument("path", type=click.Path(path_type=Path), required=False)
def create_backup(path: Path | None) -> None:
    """Write a backup archive to PATH (a .tar.gz file or a folder; default:
    KEYRELAY_BACKUP_DIR). Safe while KeyRelay serves."""
    config = current_app.config
    try:
        made = backup.create(
            Path(current_app.instance_path),
            config["SQLALCHEMY_DATABASE_URI"],
            db.engine,
            path or backup.backup_dir(config),
            _now(),
        )
    except backup.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    secrets = [entry["name"] for entry in made["entries"] if entry["secret"]]
    click.echo(f"Backup written to {made['path']} (mode 0600).")
    click.echo(
        f"  database {made['engine']} {made['database_id']}; secret files: "
        f"{', '.join(secrets) or 'none (keys from the environment: keep them)'}"
    )


@backup_cli.command("restore")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def restore_backup(path: Path) -> None:
    """Replace this instance's database and key files with a backup's; KeyRelay must be
    stopped. The replaced files are kept in instance/pre-restore-<time>/."""
    instance = Path(current_app.instance_path)
    known = {t.name: {c.name for c in t.columns} for t in db.metadata.sorted_tables}
    try:
        with backup.nothing_serving(instance):
            # This process's own connections close before the files change under them.
            current_app.extensions["keyrelay"].close()
            db.session.remove()
            db.engine.dispose()
            done = backup.restore(
                instance, current_app.config["SQLALCHEMY_DATABASE_URI"], path, known, _now()
            )
    except backup.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Restored {', '.join(done['restored'])} (database {done['database_id']}).")
    click.echo(f"  the replaced files are in {done['aside']}")
