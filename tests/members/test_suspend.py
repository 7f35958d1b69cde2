"""Suspending a member stops their keys at once: the next proxied request with one is a
403 that says why (OpenAI- or Anthropic-shaped by endpoint); resuming lets them work."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.conftest import chat
from tests.members.conftest import member_key, new_member

SECRET = "sk-members-suspend-aaaa1111"


@pytest.fixture
def member(admin, fake):
    admin.add_key(SECRET, fake.base_url, name="pool")
    return new_member(admin)


@pytest.mark.both_databases
def test_a_suspended_members_key_is_refused_at_once_and_works_after_resume(
    app, admin, server, member
):
    key = member_key(app, member["id"])
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
    assert sdk.chat.completions.create(**chat()).choices[0].message.content
    admin.call("PATCH", f"/members/{member['id']}", {"suspended": True})
    with pytest.raises(openai.PermissionDeniedError) as refused:
        sdk.chat.completions.create(**chat())
    assert refused.value.status_code == 403
    assert refused.value.body["code"] == "member_suspended"
    assert "suspended" in refused.value.body["message"]
    claude = anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as also:
        claude.messages.create(
            model="gpt-4o-mini", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
    assert also.value.body["type"] == "error"
    assert "suspended" in also.value.body["error"]["message"]
    admin.call("PATCH", f"/members/{member['id']}", {"suspended": False})
    assert sdk.chat.completions.create(**chat()).choices[0].message.content
    sdk.close()


def test_suspension_touches_only_that_members_keys(app, admin, server, member):
    other = new_member(admin, "other@example.com")
    mine, theirs = member_key(app, member["id"]), member_key(app, other["id"], "phone")
    admin.call("PATCH", f"/members/{member['id']}", {"suspended": True})
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=theirs, max_retries=0) as sdk:
        assert sdk.chat.completions.create(**chat()).choices[0].message.content
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=mine, max_retries=0)
    with sdk, pytest.raises(openai.PermissionDeniedError):
        sdk.chat.completions.create(**chat())
