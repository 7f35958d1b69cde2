"""RovoDev account commands: errors name the guide's camelCase fields; the test and sync
commands are audited once each."""

from __future__ import annotations

import pytest

from gateway.admin import rovodev
from gateway.admin.errors import InputError
from gateway.keys import rovodev_accounts
from tests.admin.conftest import audits
from tests.fake_rovodev import Account, FakeRovoDev

TOKEN = "ATATT3xFfGF0rovodev-token-aaaaaaaaaaaa"
EMAIL = "dev@atlassian.com"
CLOUD = "a436116f-02ce-4520-8fbb-7301462a1674"


@pytest.fixture
def rovo():
    with FakeRovoDev({TOKEN: Account(EMAIL, CLOUD)}) as fake:
        yield fake


def _account(rovo, **fields):
    body = {"email": EMAIL, "apiToken": TOKEN, "cloudId": CLOUD, "baseUrl": rovo.base_url}
    return rovodev_accounts.account_input({**body, **fields})


def test_a_duplicate_token_names_api_token(admin_ctx, rovo):
    rovodev.create_account(admin_ctx, _account(rovo))
    with pytest.raises(InputError) as refused:
        rovodev.create_account(admin_ctx, _account(rovo, name="again"))
    assert refused.value.field == "apiToken" and refused.value.status == 409
    assert len(audits(admin_ctx, "key.create")) == 1


@pytest.mark.parametrize("cloud", ["site-name", CLOUD.replace("-", "")])
def test_a_cloud_id_that_is_not_a_uuid_names_cloud_id(rovo, cloud):
    with pytest.raises(InputError) as refused:
        _account(rovo, cloudId=cloud)
    assert refused.value.field == "cloudId" and "Atlassian cloud id" in str(refused.value)


def test_test_and_sync_are_audited_once_each(admin_ctx, rovo):
    key = rovodev.create_account(admin_ctx, _account(rovo))
    key_id = key.id
    assert rovodev.test_account(admin_ctx, key_id)["result"] == "ok"
    done = rovodev.sync(admin_ctx, None)
    assert done["synced"] == 1
    assert [e.target for e in audits(admin_ctx, "key.test")] == [f"key:{key_id}"]
    [synced] = audits(admin_ctx, "keys.sync")
    assert synced.detail == {"provider": "rovodev"}
