"""CLI commands: `flask init-db`, `flask keys …`, `flask users …`, `flask jobs list|run`."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select

from extensions import db
from gateway import configfiles, keyring, periods, scheduler
from models import ProviderKey

keys_cli = AppGroup("keys", help="Manage provider keys.")


@click.command("init-db")
@with_appcontext
def init_db_command() -> None:
    """Create the database (create_app does) and tell a new user where everything is."""
    config = current_app.config
    url = f"http://{config['BIND']}"
    if config.get("MASTER_KEY_SOURCE") == "env":
        source = "from KEYRELAY_MASTER_KEY"
    else:
        source = f"generated in {current_app.instance_path}/master_key: {config['MASTER_KEY']}"
    password = (
        "KEYRELAY_ADMIN_PASSWORD"
        if config.get("ADMIN_PASSWORD")
        else "printed above when the database was first created"
    )
    click.echo(
        f"KeyRelay\n"
        f"  URL:          {url}   (OpenAI/SDK base_url: {url}/v1)\n"
        f"  Dashboard:    {url}/   user '{config['ADMIN_USERNAME']}', password: {password}\n"
        f"  Master key:   {source}\n"
        f"  Database:     {config['SQLALCHEMY_DATABASE_URI']}\n"
        f"  Add a key:    curl -X POST {url}/api/admin/keys -H 'Authorization: Bearer <master key>'"
        f' -H \'Content-Type: application/json\' -d \'{{"name": "main", "provider": '
        f'"openai", "secret": "sk-…", "base_url": "https://api.openai.com/v1"}}\''
    )


def _now():
    return current_app.extensions["keyrelay"].clock.now()


@keys_cli.command("add")
@click.option("--profile", default="default", show_default=True)
@click.option("--provider", default="openai", show_default=True)
@click.option("--name", required=True)
@click.option("--secret", prompt=True, hide_input=True, help="Prompted for when not given.")
@click.option("--base-url", default=None, help="Default: the provider's public API.")
@click.option("--models", default="*", show_default=True, help="Comma-separated, or *.")
@click.option("--daily-token-limit", type=int, default=None)
def add_key(profile, provider, name, secret, base_url, models, daily_token_limit) -> None:
    """Add a provider key."""
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
        spec = keyring.parse_key_input(data, creating=True)
        key = keyring.create_key(
            db.session, current_app.extensions["keyrelay"].secrets, spec, _now()
        )
    except keyring.KeyInputError as exc:
        raise click.UsageError(str(exc)) from None
    db.session.commit()
    click.echo(f"Added key #{key.id} {key.name} ({key.secret_masked}) to profile {profile}.")


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
    db.session.delete(key)
    db.session.commit()
    current_app.extensions["keyrelay"].forget_limits(f"pk:{key_id}")
    click.echo(f"Deleted key #{key_id}.")


users_cli = AppGroup("users", help="Manage dashboard users.")


def _create_user(username: str, password: str, role: str) -> None:
    from gateway import accounts

    try:
        accounts.create_user(db.session, username, password, role, _now())
        accounts.audit(db.session, "cli", "user.create", _now(), f"user:{username}", {"role": role})
    except accounts.AccountError as exc:
        raise click.UsageError(str(exc)) from None
    db.session.commit()
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
    from gateway import accounts
    from models import User

    user = db.session.scalar(select(User).where(User.username == username))
    if user is None:
        raise click.UsageError(f"No user named '{username}'.")
    try:
        accounts.set_password(user, password)
    except accounts.AccountError as exc:
        raise click.UsageError(str(exc)) from None
    accounts.audit(db.session, "cli", "user.password", _now(), f"user:{username}")
    db.session.commit()
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
        report = configfiles.import_text(db.session, kind, source.read(), _now(), replace)
    except configfiles.ConfigFileError as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    if dry_run:
        db.session.rollback()
        click.echo(f"Would apply {kind}.yaml: {report.summary()}.")
        return
    from gateway import accounts

    accounts.audit(
        db.session, "cli", f"config.import.{kind}", _now(), None, {"summary": report.summary()}
    )
    db.session.commit()
    click.echo(f"Applied {kind}.yaml: {report.summary()}.")
    for line in report.created + report.updated + report.deleted:
        click.echo(f"  {line}")
