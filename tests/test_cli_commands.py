"""CLI completeness: `flask keys import|reset`, `flask client-keys list|create|revoke|top-up`,
checked against the gateway serving over HTTP."""

from __future__ import annotations

import openai
import pytest
from sqlalchemy import select

from extensions import db
from models import AuditEntry, ProviderKey
from tests.conftest import chat
from tests.fake_upstream import Behaviour

pytestmark = pytest.mark.both_databases

A, B, C = (f"sk-cli-{n}-0000000000000000{n}" for n in "ABC")


def _audit(app, action: str) -> list[AuditEntry]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEntry).where(AuditEntry.action == action)))


def test_keys_import_from_a_file_reports_each_line(app, admin, fake, tmp_path):
    admin.add_key(C, fake.base_url, name="existing")
    source = tmp_path / "keys.txt"
    source.write_text(f"# team keys\n{A}\n\n{B}\n{A}\nsk-has space\n{C}\n")
    runner = app.test_cli_runner()
    args = ["keys", "import", str(source), "--base-url", fake.base_url, "--prefix", "team"]
    result = runner.invoke(args=args)
    assert result.exit_code == 0, result.output
    assert "Added 2, duplicates 2, rejected 1." in result.output
    assert "line 5" in result.output and "twice in paste" in result.output
    assert "line 6" in result.output and "must not contain spaces" in result.output
    assert "line 7" in result.output  # already in the profile
    # Each new key was tested: it serves the models its upstream listed.
    assert result.output.count(": ok, 2 models") == 2
    for secret in (A, B, C):
        assert secret not in result.output
    names = [k["name"] for k in admin.call("GET", "/keys").json()["data"]]
    assert sorted(names) == ["existing", f"team-{A[-4:]}", f"team-{B[-4:]}"]
    [entry] = _audit(app, "key.import")
    assert entry.actor == "cli" and entry.detail["duplicates"] == 2
    # The imported keys serve.
    response = admin.http.request(
        "POST",
        f"{admin.base}/v1/chat/completions",
        json=chat(),
        headers={"Authorization": "Bearer kr-test-master-key"},
    )
    assert response.status == 200
    bad = runner.invoke(args=["keys", "import", str(source), "--provider", "nope"])
    assert bad.exit_code == 2 and "Unknown provider" in bad.output
    missing = runner.invoke(args=["keys", "import", str(tmp_path / "none.txt")])
    assert missing.exit_code == 2 and "No such file" in missing.output


def test_keys_add_and_import_test_new_keys_unless_told_not_to(app, admin, fake, tmp_path):
    runner = app.test_cli_runner()
    base = ["--base-url", fake.base_url]
    added = runner.invoke(args=["keys", "add", "--name", "main", "--secret", A, *base])
    assert added.exit_code == 0, added.output
    assert ": ok, 2 models" in added.output
    [key] = admin.call("GET", "/keys").json()["data"]
    assert key["models_source"] == "discovered"
    assert key["served_models"] == ["gpt-4o", "gpt-4o-mini"]
    source = tmp_path / "keys.txt"
    source.write_text(f"{B}\n")
    quiet = runner.invoke(args=["keys", "import", str(source), *base, "--no-test"])
    assert quiet.exit_code == 0 and "tested" not in quiet.output
    untested = [k for k in admin.call("GET", "/keys").json()["data"] if k["id"] != key["id"]]
    assert untested[0]["models_source"] == "unknown" and untested[0]["served_models"] == []
    assert [r.path for r in fake.requests_for(B)] == []  # nothing was asked of it
    # A failing test keeps the key, with the reason.
    fake.set_behaviour(C, Behaviour.unauthorized())
    failed = runner.invoke(args=["keys", "add", "--name", "bad", "--secret", C, *base])
    assert failed.exit_code == 0 and "auth failed" in failed.output
    statuses = {k["name"]: k["status"] for k in admin.call("GET", "/keys").json()["data"]}
    assert statuses["bad"] == "auth_failed"


def test_keys_reset_brings_back_a_cooling_down_key_but_not_an_admins_disable(
    app, admin, client, fake
):
    a = admin.add_key(A, fake.base_url, name="a", priority=1)
    b = admin.add_key(B, fake.base_url, name="b", priority=2)
    off = admin.add_key(C, fake.base_url, name="off")
    assert admin.call("POST", f"/keys/{off['id']}/toggle", {"active": False}).status == 200
    fake.script(A, [Behaviour.rate_limited(retry_after=600)])
    fake.script(B, [Behaviour.unauthorized()])
    with pytest.raises(openai.APIStatusError):  # A: 429 and cools down; B: 401; C is off
        client.chat.completions.create(**chat())
    assert admin.key(a["id"])["status"] == "cooling_down"
    assert admin.key(b["id"])["status"] == "auth_failed"
    runner = app.test_cli_runner()
    result = runner.invoke(args=["keys", "reset", str(a["id"])])
    assert result.exit_code == 0, result.output
    assert "cooling_down -> active" in result.output
    assert admin.key(a["id"])["status"] == "active"
    seen = len(fake.requests_for(A))
    client.chat.completions.create(**chat())
    assert len(fake.requests_for(A)) == seen + 1  # back in the pool at once
    result = runner.invoke(args=["keys", "reset", "--all"])
    assert result.exit_code == 0, result.output
    assert "auth_failed -> active" in result.output and "disabled -> disabled" in result.output
    assert admin.key(b["id"])["status"] == "active"
    assert admin.key(off["id"])["status"] == "disabled"
    with app.app_context():
        assert db.session.get(ProviderKey, b["id"]).consecutive_failures == 0
    resets = _audit(app, "key.reset")
    assert [(e.target, e.detail["was"]) for e in resets][:2] == [
        (f"key:{a['id']}", "cooling_down"),
        (f"key:{a['id']}", "active"),
    ]
    assert all(e.actor == "cli" for e in resets)
    for args, message in (
        (["keys", "reset"], "Give a key id or --all"),
        (["keys", "reset", "1", "--all"], "Give a key id or --all"),
        (["keys", "reset", "99"], "No provider key with id 99"),
    ):
        bad = runner.invoke(args=args)
        assert bad.exit_code == 2 and message in bad.output


def test_client_keys_create_list_top_up_revoke(app, admin, fake, http, server):
    admin.add_key(A, fake.base_url, name="a")
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["client-keys", "create", "--name", "ci", "--rpm-limit", "60", "--max-budget", "1.00"]
    )
    assert result.exit_code == 0, result.output
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("kr-") and "shown this once" in result.output
    answer = http.request(
        "POST",
        f"{server.url}/v1/chat/completions",
        json=chat(),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status == 200, answer.data
    listing = runner.invoke(args=["client-keys", "list"]).output
    assert "ci" in listing and key[:7] in listing and key not in listing
    assert "rpm 60" in listing and "budget 1.000000" in listing
    [row] = admin.call("GET", "/client-keys").json()["data"]
    topped = runner.invoke(args=["client-keys", "top-up", str(row["id"]), "2.50"])
    assert topped.exit_code == 0, topped.output
    assert admin.call("GET", f"/client-keys/{row['id']}").json()["max_budget"] == "3.500000"
    revoked = runner.invoke(args=["client-keys", "revoke", str(row["id"])])
    assert revoked.exit_code == 0 and "Revoked client key" in revoked.output
    answer = http.request(
        "POST",
        f"{server.url}/v1/chat/completions",
        json=chat(),
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status == 401
    actions = [e.action for e in _audit(app, "client_key.create") + _audit(app, "client_key.topup")]
    assert actions == ["client_key.create", "client_key.topup"]
    no_budget = runner.invoke(args=["client-keys", "create", "--name", "free"])
    free_id = no_budget.stdout.strip().splitlines()[0].split()[3].lstrip("#")
    for args, message in (
        (["client-keys", "top-up", free_id, "5"], "no budget to top up"),
        (["client-keys", "top-up", str(row["id"]), "lots"], "must be an amount in USD"),
        (["client-keys", "top-up", str(row["id"]), "0"], "positive amount"),
        (["client-keys", "revoke", "99"], "No client key with id 99"),
        (["client-keys", "create", "--name", "x", "--rpm-limit", "-1"], "positive integer"),
        (["client-keys", "create", "--name", "x", "--profile", "nope"], "does not exist"),
    ):
        bad = runner.invoke(args=args)
        assert bad.exit_code == 2 and message in bad.output, (args, bad.output)
