"""The YAML import command: a bad file changes nothing, a check changes nothing, an import
is audited once and the next request resolves through it."""

from __future__ import annotations

import openai
import pytest

from gateway.admin import config, configfiles, provider_keys
from gateway.keys import provider_keys as keyring
from tests.admin.conftest import audits
from tests.conftest import chat

MODELS = "routes:\n  - name: smart\n    target: gpt-4o\n"


def test_a_bad_kind_or_entry_changes_nothing(admin_ctx):
    with pytest.raises(configfiles.ConfigFileError) as refused:
        config.import_file(admin_ctx, "prices", MODELS, replace=False)
    assert refused.value.where == "kind"
    with pytest.raises(configfiles.ConfigFileError):
        config.import_file(admin_ctx, "models", "routes: [{name: 'no spaces allowed'}]", False)
    assert audits(admin_ctx, "config.import.models") == []


def test_a_check_changes_nothing_and_an_import_serves_the_next_request(admin_ctx, fake, client):
    body = {"provider": "openai", "name": "up", "secret": "sk-up", "base_url": fake.base_url}
    models = "gpt-4o-mini,gpt-4o"
    provider_keys.create(admin_ctx, keyring.parse_key_input({**body, "models": models}, True))
    with pytest.raises(openai.NotFoundError):  # the caches now hold "no such route"
        client.chat.completions.create(**chat(model="smart"))
    checked = config.import_file(admin_ctx, "models", MODELS, False, dry_run=True)
    assert checked.created and audits(admin_ctx, "config.import.models") == []
    applied = config.import_file(admin_ctx, "models", MODELS, False)
    assert applied.created
    assert client.chat.completions.create(**chat(model="smart")).choices
    assert fake.requests[-1].body["model"] == "gpt-4o"
    assert len(audits(admin_ctx, "config.import.models")) == 1
