"""User commands: bad input names its field, no one removes themselves, each change is
audited once (never with the password)."""

from __future__ import annotations

import pytest

from gateway.admin import users
from gateway.admin.errors import InputError
from tests.admin.conftest import audits


@pytest.mark.parametrize(
    ("username", "password", "role", "field"),
    [
        ("has space", "long-enough-1", "viewer", "username"),
        ("vera", "short", "viewer", "password"),
        ("vera", "long-enough-1", "owner", "role"),
        ("admin", "long-enough-1", "viewer", "username"),  # taken: the first admin
    ],
)
def test_a_user_that_cannot_be_saved_names_the_field(admin_ctx, username, password, role, field):
    with pytest.raises(InputError) as refused:
        users.create(admin_ctx, username, password, role)
    assert refused.value.field == field
    admin_ctx.session.rollback()
    assert audits(admin_ctx, "user.create") == []


def test_create_password_and_delete_are_audited_once_each(admin_ctx):
    vera = users.create(admin_ctx, "vera", "long-enough-1", "viewer")
    users.set_password(admin_ctx, vera, "another-pass-2")
    with pytest.raises(InputError) as refused:
        users.delete(admin_ctx, vera, by=vera)
    assert refused.value.field == "user"
    users.delete(admin_ctx, vera)
    [made] = audits(admin_ctx, "user.create")
    assert made.target == "user:vera" and made.detail == {"role": "viewer"}
    assert [e.detail for e in audits(admin_ctx, "user.password")] == [None]
    assert len(audits(admin_ctx, "user.delete")) == 1
