"""Conversation pins under hostile conditions: pins do not grow without end (pruned when
idle even if the request log is kept for ever), a response held by a deleted key is a
clear error naming it, and a session is never pinned to a key that no longer serves its
model."""

from __future__ import annotations

import openai
import pytest
from sqlalchemy import func, select

from gateway.jobs import scheduler
from models import ConversationPin
from tests.conftest import MASTER_KEY, live_app

SECRET = "sk-pins-edges-aaaaaaaaaaaaaaaaaa"
OTHER = "sk-pins-edges-bbbbbbbbbbbbbbbbbb"


@pytest.fixture
def settings(settings):
    settings["LOG_RETENTION_DAYS"] = 0  # the request log kept for ever
    return settings


@pytest.fixture
def two_keys(admin, fake) -> dict[str, int]:
    assert admin.call("PUT", "/profiles/default", {"strategy": "round-robin"}).status == 200
    made = [
        admin.add_key(secret, fake.base_url, name=name, responses_api=True)
        for secret, name in ((SECRET, "a"), (OTHER, "b"))
    ]
    return {SECRET: made[0]["id"], OTHER: made[1]["id"]}


def _pins(app) -> int:
    with app.extensions["keyrelay"].engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(ConversationPin))


@pytest.mark.both_databases
def test_idle_pins_are_pruned_when_the_log_is_kept_for_ever(app, client, clock, two_keys):
    for number in range(3):
        clock.advance(seconds=1)
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"prompt_cache_key": f"old-session-{number}"},
        )
    client.responses.create(model="gpt-4o-mini", input="an old conversation")
    assert _pins(app) == 4
    clock.advance(days=31)
    client.responses.create(model="gpt-4o-mini", input="a recent one")
    outcome = scheduler.run_job(app, "log-retention")
    assert outcome["error"] is None and _pins(app) == 1


def test_a_response_held_by_a_deleted_key_is_a_clear_error(client, admin, fake, clock, two_keys):
    first = client.responses.create(model="gpt-4o-mini", input="Remember this.")
    holder = two_keys[fake.requests[-1].secret]
    assert admin.call("DELETE", f"/keys/{holder}").status == 204
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="gpt-4o-mini", input="go on", previous_response_id=first.id)
    error = refused.value.body
    assert error["param"] == "previous_response_id" and error["code"] == "previous_response_gone"
    assert f"#{holder}" in error["message"] and "deleted" in error["message"]
    assert len(fake.requests) == 1  # the other key was never sent a response it lacks


def test_a_session_is_not_pinned_to_a_key_that_no_longer_serves_its_model(
    client, admin, fake, clock, two_keys
):
    asked = {
        "messages": [{"role": "user", "content": "hi"}],
        "extra_body": {"prompt_cache_key": "s"},
    }
    client.chat.completions.create(model="gpt-4o-mini", **asked)
    pinned = fake.requests[-1].secret
    changed = admin.call("PUT", f"/keys/{two_keys[pinned]}", {"models": ["gpt-4o"]})
    assert changed.status == 200
    for _ in range(3):
        clock.advance(seconds=1)
        reply = client.chat.completions.create(model="gpt-4o-mini", **asked)
        assert reply.choices[0].message.content
        assert fake.requests[-1].secret != pinned
    assert len(fake.requests) == 4  # each request once: none to the key that lacks it


@pytest.mark.both_databases
def test_pins_survive_a_restart(settings, app, client, fake, clock, two_keys):
    asked = {"messages": [{"role": "user", "content": "hi"}]}
    clock.advance(seconds=1)
    client.chat.completions.create(model="gpt-4o-mini", **asked)  # round robin: first key
    unpinned = fake.requests[-1].secret  # what a new process picks first, without pins
    clock.advance(seconds=1)
    client.chat.completions.create(
        model="gpt-4o-mini", extra_body={"prompt_cache_key": "kept"}, **asked
    )
    pinned = fake.requests[-1].secret
    assert pinned != unpinned
    first = client.responses.create(model="gpt-4o-mini", input="Remember this.")
    holder = fake.requests[-1].secret
    with live_app(settings) as (_, live):  # another process on the same database
        again = openai.OpenAI(base_url=f"{live.url}/v1", api_key=MASTER_KEY, max_retries=0)
        for _ in range(2):
            clock.advance(seconds=1)
            again.chat.completions.create(
                model="gpt-4o-mini", extra_body={"prompt_cache_key": "kept"}, **asked
            )
            assert fake.requests[-1].secret == pinned
            again.responses.create(
                model="gpt-4o-mini", input="go on", previous_response_id=first.id
            )
            assert fake.requests[-1].secret == holder
        again.close()
