"""Provider key commands: each validates (InputError naming the field), audits once, and
the next proxied request sees the change."""

from __future__ import annotations

import openai
import pytest

from gateway.admin import provider_keys
from gateway.admin.errors import InputError
from gateway.keys import provider_keys as keyring
from models import ProviderKey
from tests.admin.conftest import audits
from tests.conftest import chat


def _data(fake, secret="sk-one", **fields) -> keyring.KeyInput:
    body = {"provider": "openai", "name": "main", "secret": secret, "base_url": fake.base_url}
    return keyring.parse_key_input({**body, "models": "*", **fields}, creating=True)


def _refused(client) -> int:
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(**chat())
    return refused.value.status_code


def test_create_is_served_by_the_next_request_and_audited_once(admin_ctx, fake, client):
    assert _refused(client) in (404, 503)  # no key yet: the caches hold "none"
    key = provider_keys.create(admin_ctx, _data(fake))
    assert client.chat.completions.create(**chat()).choices[0].message.content
    [entry] = audits(admin_ctx, "key.create")
    assert entry.target == f"key:{key.id}" and entry.actor == "tester"
    assert entry.detail == {"name": "main", "profile": "default"}


def test_a_duplicate_secret_names_the_field_and_changes_nothing(admin_ctx, fake):
    provider_keys.create(admin_ctx, _data(fake))
    with pytest.raises(InputError) as refused:
        provider_keys.create(admin_ctx, _data(fake, name="again"))
    assert refused.value.field == "secret" and refused.value.status == 409
    admin_ctx.session.rollback()
    assert admin_ctx.session.query(ProviderKey).count() == 1
    assert len(audits(admin_ctx, "key.create")) == 1


def test_disable_takes_the_key_out_of_the_next_request(admin_ctx, fake, client):
    key = provider_keys.create(admin_ctx, _data(fake))
    assert client.chat.completions.create(**chat()).choices
    provider_keys.set_enabled(admin_ctx, key, False)
    assert _refused(client) in (404, 503)
    assert [e.target for e in audits(admin_ctx, "key.disable")] == [f"key:{key.id}"]
    provider_keys.set_enabled(admin_ctx, admin_ctx.session.get(ProviderKey, key.id), True)
    assert client.chat.completions.create(**chat()).choices
    assert len(audits(admin_ctx, "key.enable")) == 1


@pytest.mark.parametrize("status", ["expired", "secret_unreadable"])
def test_enable_refuses_a_key_its_state_keeps_out_naming_what_brings_it_back(
    admin_ctx, fake, status
):
    key = provider_keys.create(admin_ctx, _data(fake))
    key.status = status  # as the expiry job or the start-up secret check leave it
    admin_ctx.session.commit()
    with pytest.raises(InputError) as refused:
        provider_keys.set_enabled(admin_ctx, admin_ctx.session.get(ProviderKey, key.id), True)
    assert (refused.value.field, refused.value.status) == ("active", 409)
    assert ("expires_at" if status == "expired" else "secret") in str(refused.value)
    assert admin_ctx.session.get(ProviderKey, key.id).status == status
    assert audits(admin_ctx, "key.enable") == []


def test_delete_takes_the_key_out_of_the_next_request(admin_ctx, fake, client):
    key = provider_keys.create(admin_ctx, _data(fake))
    assert client.chat.completions.create(**chat()).choices
    provider_keys.delete(admin_ctx, key)
    assert _refused(client) in (404, 503)
    [entry] = audits(admin_ctx, "key.delete")
    assert entry.detail == {"name": "main"}


def test_update_reports_a_move_and_audits_the_fields(admin_ctx, fake):
    key = provider_keys.create(admin_ctx, _data(fake))
    same = keyring.parse_key_input({"name": "renamed"}, creating=False)
    assert provider_keys.update(admin_ctx, key, same, ["name"]) is False
    moved = keyring.parse_key_input({"secret": "sk-two"}, creating=False)
    assert provider_keys.update(admin_ctx, key, moved, []) is True
    details = [e.detail for e in audits(admin_ctx, "key.update")]
    assert details == [
        {"fields": ["name"], "secret_replaced": False},
        {"fields": [], "secret_replaced": True},
    ]


def test_import_adds_the_new_lines_and_audits_once(admin_ctx, fake, client):
    shared = {"provider": "openai", "base_url": fake.base_url, "models": "*"}
    report = provider_keys.import_many(admin_ctx, "sk-a\nsk-a\nsk-b\n", shared, "bulk")
    assert len(report.added) == 2 and len(report.duplicates) == 1
    [entry] = audits(admin_ctx, "key.import")
    assert entry.detail["duplicates"] == 1 and len(entry.detail["added"]) == 2
    assert client.chat.completions.create(**chat()).choices
