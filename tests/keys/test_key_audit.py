"""Every change KeyRelay makes to a key by itself is in the audit log (actor `system`):
a cooldown set and ended (by an answer or by the scheduler), a limit reached and ended, a
usage sync that failed; circuits opened and closed are in tests/test_circuit_breaker.py."""

from __future__ import annotations

import openai
import pytest
from sqlalchemy import select

from extensions import db
from gateway.jobs import scheduler
from models import AuditEntry
from tests.conftest import MASTER_KEY, chat
from tests.fake_upstream import Behaviour

pytestmark = pytest.mark.both_databases

SECRET = "sk-audit-aaaaaaaaaaaa1111"


def _audit(app, prefix: str = "key.") -> list[tuple]:
    app.extensions["keyrelay"].books.flush()
    with app.app_context():
        rows = db.session.execute(
            select(AuditEntry.action, AuditEntry.actor, AuditEntry.target, AuditEntry.detail)
            .where(AuditEntry.action.like(f"{prefix}%"), AuditEntry.actor != "master key")
            .order_by(AuditEntry.id)
        ).all()
    return [tuple(r) for r in rows]


def _sdk(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=MASTER_KEY, max_retries=0)


def test_a_cooldown_set_and_ended_by_an_answer_is_audited_once_each(
    app, server, admin, fake, clock
):
    key = admin.add_key(SECRET, fake.base_url, name="busy")
    fake.script(SECRET, [Behaviour.rate_limited(retry_after=60)] * 2)
    sdk = _sdk(server)
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(**chat())
    clock.advance(seconds=61)  # over: the next request tries it, and is limited again
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(**chat())
    with pytest.raises(openai.APIStatusError):  # cooling: not even tried, not audited
        sdk.chat.completions.create(**chat())
    clock.advance(seconds=61)
    assert sdk.chat.completions.create(**chat()).choices[0].message.content
    sdk.chat.completions.create(**chat())  # a second answer ends nothing
    entries = _audit(app)
    target = f"key:{key['id']}"
    assert [(a, actor, t) for a, actor, t, _ in entries] == [
        ("key.cooldown", "system", target),
        ("key.cooldown", "system", target),
        ("key.cooldown_ended", "system", target),
    ]
    assert entries[0][3]["until"] and entries[0][3]["error"]  # until when, and why
    sdk.close()


def test_a_cooldown_the_scheduler_ends_is_audited(app, server, admin, fake, clock):
    key = admin.add_key(SECRET, fake.base_url, name="busy")
    fake.script(SECRET, [Behaviour.rate_limited(retry_after=60)])
    sdk = _sdk(server)
    with pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(**chat())
    sdk.close()
    clock.advance(seconds=61)
    outcome = scheduler.run_job(app, "daily-reset", clock.now())
    assert outcome["result"]["cooldowns_ended"] == 1
    assert admin.key(key["id"])["status"] == "active"
    scheduler.run_job(app, "daily-reset", clock.now())  # again: nothing more
    actions = [(a, actor) for a, actor, _, _ in _audit(app)]
    assert actions == [("key.cooldown", "system"), ("key.cooldown_ended", "scheduler")]


def test_a_limit_reached_and_ended_is_audited_once_per_period(app, server, admin, fake, clock):
    key = admin.add_key(SECRET, fake.base_url, name="small", daily_token_limit=5)
    sdk = _sdk(server)
    assert sdk.chat.completions.create(**chat()).choices[0].message.content  # 8 tokens: over 5
    sdk.close()
    first = scheduler.run_job(app, "budget-alerts", clock.now())
    assert first["result"]["limits_reached"] == [key["id"]]
    again = scheduler.run_job(app, "budget-alerts", clock.now())
    assert again["result"]["limits_reached"] == []  # noted once this day
    clock.advance(days=1)
    scheduler.run_job(app, "daily-reset", clock.now())
    scheduler.run_job(app, "daily-reset", clock.now())  # run twice: said once
    entries = _audit(app)
    assert [(a, actor) for a, actor, _, _ in entries] == [
        ("key.day_limit_reached", "system"),
        ("key.day_limit_ended", "scheduler"),
    ]
    assert entries[0][3]["until"]  # when the limit ends


def test_a_failed_usage_sync_is_audited_once_until_a_sync_succeeds(app, admin, fake, clock):
    secret = "sk-or-v1-auditaaaaaaaaaaaaaaaaaaaaa"
    key = admin.add_key(secret, fake.base_url, provider="openrouter", name="or")
    fake.set_behaviour(secret, Behaviour.server_error(502))
    for _ in range(2):  # down for two runs: one entry
        assert admin.call("POST", "/keys/sync").json()["keys"][0]["result"] == "error"
        clock.advance(minutes=5)
    fake.set_behaviour(secret, None)
    fake.key_info[secret] = (10.0, 1.0)
    assert admin.call("POST", "/keys/sync").json()["synced"] == 1
    clock.advance(minutes=5)
    fake.set_behaviour(secret, Behaviour.server_error(502))
    admin.call("POST", "/keys/sync")  # failing again after a good sync: noted again
    entries = _audit(app)
    assert [(a, t) for a, _, t, _ in entries] == [("key.sync_failed", f"key:{key['id']}")] * 2
    assert entries[0][3]["result"] == "error" and "502" in entries[0][3]["error"]
    assert secret not in str(entries)
