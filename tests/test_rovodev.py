"""Provider kind `rovodev` (Atlassian RovoDev: an account of email + API token): the
integration guide's admin endpoints with their camelCase fields, every client dialect
reaching an account with RovoDev's headers (per key auth scheme), the guide's error
messages in the OpenAI error shape, `owned_by`, and usage sync (RovoDev's credits check,
OpenRouter's key info) steering selection. The upstream is a fake RovoDev gateway that
checks the headers and 401s otherwise."""

from __future__ import annotations

import html
import logging
from decimal import Decimal

import anthropic
import openai
import pytest

from extensions import db
from gateway.jobs import scheduler
from gateway.keys.secrets import mask
from models import ProviderKey
from tests.conftest import MASTER_KEY, chat, make_viewer
from tests.fake_rovodev import Account, FakeRovoDev

TOKEN = "ATATT3xFfGF0rovodev-token-aaaaaaaaaaaa"
SPARE = "ATATT3xFfGF0rovodev-token-bbbbbbbbbbbb"
EMAIL = "dev@atlassian.com"
OTHER = "ext@example.com"
CLOUD = "a436116f-02ce-4520-8fbb-7301462a1674"
SONNET = "claude-sonnet-4"
# The fake's counts for chat(): "Say hello" is 9 // 4 + 1 = 3 prompt tokens, the answer
# "Hello from the fake upstream" 5 completion tokens.
TOKENS_PER_CHAT = 8
LIMIT = "dailyTokenLimit"


@pytest.fixture
def rovo():
    accounts = {TOKEN: Account(EMAIL, CLOUD), SPARE: Account(OTHER)}
    with FakeRovoDev(accounts) as fake:
        yield fake


def add(admin, rovo, token=TOKEN, email=EMAIL, cloud=CLOUD, **fields) -> dict:
    """Add an account, untested unless `test` is given (its test counts upstream calls)."""
    fields.setdefault("test", False)
    body = {"email": email, "apiToken": token, "baseUrl": rovo.base_url, **fields}
    if cloud:
        body["cloudId"] = cloud
    response = admin.call("POST", "/rovodev-keys", body)
    assert response.status == 201, response.data
    return response.json()


def logged(server, admin) -> list[dict]:
    server.app.extensions["keyrelay"].books.flush()
    return admin.logs()


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) >= {"message", "type", "code", "param"}
    return body["error"]


# -- the guide's admin endpoints ------------------------------------------------------------


@pytest.mark.both_databases
def test_accounts_round_trip_with_camel_case_fields_and_the_token_masked(admin, rovo):
    made = admin.call(
        "POST",
        "/rovodev-keys",
        {"profile": "team-a", "email": EMAIL, "apiToken": TOKEN, "cloudId": CLOUD,
         "dailyTokenLimit": 30_000_000, "baseUrl": rovo.base_url},
    )  # fmt: skip
    assert made.status == 201
    assert TOKEN.encode() not in made.data and TOKEN[-12:].encode() not in made.data
    account = made.json()
    assert account["email"] == EMAIL and account["cloudId"] == CLOUD
    assert account["profile"] == "team-a" and account["isInternal"] is True
    assert account["dailyTokenLimit"] == 30_000_000 and account["dailyTokensUsed"] == 0
    assert account["apiToken"].startswith(TOKEN[:4]) and "…" in account["apiToken"]
    assert account["authScheme"] == "bearer" and sorted(account["models"]) == sorted(
        [
            "claude-sonnet-4",
            "claude-3-7-sonnet",
            "claude-3-5-sonnet-v2",
            "claude-3-5-sonnet-20241022",
        ]
    )

    plain = add(admin, rovo, SPARE, OTHER, cloud=None)
    assert plain["dailyTokenLimit"] == 20_000_000  # the guide's default
    assert plain["isInternal"] is False and plain["cloudId"] is None

    listed = admin.call("GET", "/rovodev-keys")
    assert TOKEN.encode() not in listed.data and SPARE.encode() not in listed.data
    assert [a["id"] for a in listed.json()["data"]] == [account["id"], plain["id"]]
    team = admin.call("GET", "/rovodev-keys?profile=team-a").json()["data"]
    assert [a["email"] for a in team] == [EMAIL]

    changed = admin.call(
        "PUT", f"/rovodev-keys/{account['id']}", {"email": OTHER, "dailyTokenLimit": 50_000_000}
    )
    assert changed.status == 200 and TOKEN.encode() not in changed.data
    assert changed.json()["email"] == OTHER and changed.json()["isInternal"] is False
    assert changed.json()["name"] == OTHER  # named by its email: the name follows
    assert changed.json()["dailyTokenLimit"] == 50_000_000
    assert changed.json()["cloudId"] == CLOUD  # options not given stay

    generic = admin.key(account["id"])  # the same key in the general keys API
    assert generic["provider"] == "rovodev" and generic["options"]["email"] == OTHER
    assert TOKEN not in str(generic)

    assert admin.call("DELETE", f"/rovodev-keys/{account['id']}").status == 204
    assert [a["id"] for a in admin.call("GET", "/rovodev-keys").json()["data"]] == [plain["id"]]
    gone = admin.call("PUT", f"/rovodev-keys/{account['id']}", {"email": EMAIL})
    assert gone.status == 404 and error_of(gone)["code"] == "key_not_found"


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"apiToken": TOKEN}, "email", "'email'"),
        ({"apiToken": TOKEN, "email": "not-an-address"}, "email", "'email'"),
        ({"email": EMAIL}, "apiToken", "'apiToken'"),
        ({"email": EMAIL, "apiToken": TOKEN, "dailyTokenLimit": -5}, LIMIT, f"'{LIMIT}'"),
        ({"email": EMAIL, "apiToken": TOKEN, "dailyTokenLimit": "many"}, LIMIT, "positive"),
        ({"email": EMAIL, "apiToken": TOKEN, "authScheme": "oauth"}, "authScheme", "'authScheme'"),
        ({"email": EMAIL, "apiToken": TOKEN, "cloudId": 7}, "cloudId", "'cloudId'"),
        ({"email": EMAIL, "apiToken": TOKEN, "isAdmin": True}, "isAdmin", "Unknown field"),
        ({"email": EMAIL, "apiToken": "two words"}, "apiToken", "'apiToken'"),
        ({"email": EMAIL, "apiToken": TOKEN, "profile": "no spaces"}, "profile", "'profile'"),
    ],
)  # fmt: skip
def test_bad_accounts_are_refused_naming_the_field(admin, body, field, says):
    response = admin.call("POST", "/rovodev-keys", body)
    assert response.status == 400
    error = error_of(response)
    assert error["param"] == field and says in error["message"]
    assert TOKEN not in error["message"]
    assert admin.call("GET", "/rovodev-keys").json()["data"] == []


@pytest.mark.both_databases
def test_a_duplicate_token_is_refused(admin, rovo):
    add(admin, rovo)
    again = admin.call("POST", "/rovodev-keys", {"email": EMAIL, "apiToken": TOKEN})
    assert again.status == 409 and error_of(again)["param"] == "apiToken"


@pytest.mark.both_databases
def test_a_new_account_is_tested_against_its_upstream(admin, rovo):
    made = add(admin, rovo, test=True)
    assert rovo.credit_checks == [TOKEN]  # the test's call: RovoDev's credits check
    assert made["test"] == {"success": True, "result": "ok", "statusCode": 200, "error": None}
    assert made["status"] == "active"

    wrong = admin.call(
        "POST",
        "/rovodev-keys",
        {"email": "someone-else@example.com", "apiToken": SPARE, "baseUrl": rovo.base_url},
    )
    assert wrong.status == 201  # kept, its status saying why
    assert SPARE.encode() not in wrong.data and SPARE[-12:].encode() not in wrong.data
    account = wrong.json()
    assert account["test"]["success"] is False and account["test"]["statusCode"] == 401
    assert account["test"]["error"].startswith("RovoDev authentication failed")
    assert account["status"] == "auth_failed" and len(rovo.refused) == 1

    untested = add(admin, rovo, SPARE, OTHER, cloud=None, profile="other", test=False)
    assert "test" not in untested and len(rovo.refused) == 1  # nothing was called
    assert admin.call("GET", "/rovodev-keys").json()["data"][-1]["id"] == untested["id"]


def test_an_account_whose_token_changed_is_tested_again_unless_asked_not_to(admin, rovo):
    made = add(admin, rovo)
    skipped = admin.call("PUT", f"/rovodev-keys/{made['id']}", {"apiToken": SPARE, "test": False})
    assert skipped.status == 200, skipped.data
    assert rovo.credit_checks == []  # saved untested
    tested = admin.call("PUT", f"/rovodev-keys/{made['id']}", {"apiToken": TOKEN})
    assert tested.status == 200 and rovo.credit_checks == [TOKEN]
    bad = admin.call("PUT", f"/rovodev-keys/{made['id']}", {"test": 1})
    assert bad.status == 400 and error_of(bad)["param"] == "test"


def test_the_test_endpoint_checks_the_account(admin, rovo):
    good = add(admin, rovo)
    result = admin.call("POST", f"/rovodev-keys/test/{good['id']}").json()
    assert result["success"] is True and result["result"] == "ok"
    assert rovo.credit_checks == [TOKEN]  # the credits check is the test's call

    wrong = add(admin, rovo, SPARE, "someone-else@example.com", cloud=None)
    result = admin.call("POST", f"/rovodev-keys/test/{wrong['id']}").json()
    assert result["success"] is False and result["statusCode"] == 401
    assert result["error"].startswith("RovoDev authentication failed")
    assert result["key"]["status"] == "auth_failed"
    assert admin.call("POST", "/rovodev-keys/test/999").status == 404


@pytest.mark.both_databases
def test_profile_stats_add_up_the_accounts(admin, rovo, client):
    add(admin, rovo, dailyTokenLimit=1000)
    add(admin, rovo, SPARE, OTHER, cloud=None)
    client.chat.completions.create(**chat(model=SONNET))
    stats = admin.call("GET", "/rovodev-keys/stats/default").json()
    assert stats["totalKeys"] == 2 and stats["activeKeys"] == 2 and stats["internalKeys"] == 1
    assert stats["dailyTokenLimit"] == 1000 + 20_000_000
    assert stats["dailyTokensUsed"] == TOKENS_PER_CHAT and stats["requestCount"] == 1
    assert stats["remainingTokens"] == 1000 + 20_000_000 - TOKENS_PER_CHAT
    missing = admin.call("GET", "/rovodev-keys/stats/nobody")
    assert missing.status == 404 and error_of(missing)["code"] == "profile_not_found"


# -- requests through every dialect ----------------------------------------------------------


def test_openai_sdk_reaches_an_account_with_rovodevs_headers(admin, rovo, client, server):
    add(admin, rovo)
    completion = client.chat.completions.create(**chat(model=SONNET))
    assert completion.choices[0].message.content == "Hello from the fake upstream"
    (sent,) = rovo.requests
    assert sent.path == "/v1/chat/completions" and sent.body["model"] == SONNET
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["x-user-email"] == EMAIL and sent.headers["x-cloud-id"] == CLOUD

    streamed = client.chat.completions.create(**chat(model=SONNET), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == (
        "Hello from the fake upstream"
    )
    rows = logged(server, admin)
    reported = rovo.usage_reported
    assert [r["total_tokens"] for r in rows] == [u["total_tokens"] for u in reversed(reported)]
    assert all(r["provider"] == "rovodev" and not r["usage_estimated"] for r in rows)
    assert all(Decimal(r["cost_usd"]) > 0 for r in rows)  # priced as Anthropic's Sonnet
    assert rovo.refused == []


def test_anthropic_sdk_and_responses_api_reach_an_account(admin, rovo, server):
    add(admin, rovo)
    claude = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
    message = claude.messages.create(
        model=SONNET, max_tokens=100, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert message.content[0].text == "Hello from the fake upstream"
    assert message.usage.output_tokens == 5
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=MASTER_KEY, max_retries=0)
    response = sdk.responses.create(model=SONNET, input="Say hello")
    assert response.output_text == "Hello from the fake upstream"
    sent = rovo.requests
    assert [r.path for r in sent] == ["/v1/chat/completions", "/v1/chat/completions"]
    assert all(r.headers["x-user-email"] == EMAIL for r in sent)
    rows = logged(server, admin)
    assert sorted(r["endpoint"] for r in rows) == sorted({r["endpoint"] for r in rows})
    assert sum(r["total_tokens"] for r in rows) == sum(
        u["total_tokens"] for u in rovo.usage_reported
    )
    claude.close()
    sdk.close()


def test_the_auth_scheme_is_chosen_per_key(admin, rovo, client):
    add(admin, rovo, SPARE, OTHER, cloud=None, authScheme="basic")
    client.chat.completions.create(**chat(model=SONNET))
    (sent,) = rovo.requests
    assert sent.headers["authorization"].startswith("Basic ")
    assert "x-user-email" not in sent.headers and "x-cloud-id" not in sent.headers


def test_models_are_owned_by_atlassian_rovodev(admin, rovo, client):
    add(admin, rovo)
    listed = {m.id: m.owned_by for m in client.models.list().data}
    assert listed == {
        "claude-sonnet-4": "atlassian-rovodev",
        "claude-3-7-sonnet": "atlassian-rovodev",
        "claude-3-5-sonnet-v2": "atlassian-rovodev",
        "claude-3-5-sonnet-20241022": "atlassian-rovodev",
    }


# -- the guide's errors, OpenAI-shaped ---------------------------------------------------------


def test_a_refused_account_is_rovodev_authentication_failed(admin, rovo, client, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = add(admin, rovo, SPARE, "someone-else@example.com", cloud=None)
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(**chat(model=SONNET))
    assert refused.value.status_code == 502
    error = refused.value.body
    assert error["message"].startswith("RovoDev authentication failed")
    assert error["code"] == "upstream_failed" and error["type"] == "upstream_error"
    assert admin.key(wrong["id"])["status"] == "auth_failed"
    assert len(rovo.refused) == 1

    with pytest.raises(openai.APIStatusError) as none_left:
        client.chat.completions.create(**chat(model=SONNET))
    assert none_left.value.status_code == 503
    assert none_left.value.body["message"].startswith(
        "No available RovoDev keys for this profile (default): 1 key auth_failed"
    )
    assert none_left.value.body["code"] == "no_available_keys"
    assert SPARE not in caplog.text


@pytest.mark.both_databases
def test_accounts_at_their_daily_limit_are_rovodev_limit_exceeded(admin, rovo, client):
    add(admin, rovo, dailyTokenLimit=TOKENS_PER_CHAT)
    add(admin, rovo, SPARE, OTHER, cloud=None, dailyTokenLimit=TOKENS_PER_CHAT)
    client.chat.completions.create(**chat(model=SONNET))
    client.chat.completions.create(**chat(model=SONNET))
    with pytest.raises(openai.APIStatusError) as limited:
        client.chat.completions.create(**chat(model=SONNET))
    assert limited.value.status_code == 503
    message = limited.value.body["message"]
    assert message.startswith("Daily token limit exceeded for RovoDev (default): 2 keys at a limit")
    assert "daily limits reset at 00:00" in message
    assert limited.value.response.headers["Retry-After"]
    assert len(rovo.requests) == 2


def test_a_profile_without_accounts_gets_no_available_rovodev_keys(admin, rovo, client):
    add(admin, rovo)
    assert admin.call("PUT", "/profiles/team-a", {}).status == 200
    team = client.with_options(default_headers={"X-Profile": "team-a"})
    with pytest.raises(openai.NotFoundError) as missing:
        team.chat.completions.create(**chat(model=SONNET))
    assert missing.value.body["message"].startswith("No available RovoDev keys for this profile")
    assert "'team-a'" in missing.value.body["message"]
    assert missing.value.body["code"] == "model_not_found"


# -- usage sync ------------------------------------------------------------------------------


def served_by(rovo) -> str:
    return (
        rovo.requests[-1].headers["x-user-email"]
        if rovo.requests[-1].headers.get("x-user-email")
        else "?"
    )


@pytest.mark.both_databases
def test_sync_on_demand_and_by_the_job_steers_selection(admin, rovo, client, app):
    first = add(admin, rovo)
    second = add(admin, rovo, SPARE, OTHER, cloud=None)
    client.chat.completions.create(**chat(model=SONNET))
    assert served_by(rovo) == EMAIL  # equal room: the older key
    client.chat.completions.create(**chat(model=SONNET))  # most-remaining: now the other
    assert served_by(rovo) == OTHER

    rovo.accounts[TOKEN].daily_used = 20_000_000 - 1_000  # RovoDev says: 1,000 left
    rovo.accounts[SPARE].daily_used = 1_000_000
    synced = admin.call("POST", "/rovodev-keys/sync", {"profile": "default"}).json()
    assert synced["synced"] == 2 and synced["failed"] == 0
    assert {k["id"]: k["remainingTokens"] for k in synced["keys"]} == {
        first["id"]: 1_000,
        second["id"]: 19_000_000,
    }
    for _ in range(2):
        client.chat.completions.create(**chat(model=SONNET))
        assert served_by(rovo) == OTHER
    account = admin.call("GET", "/rovodev-keys").json()["data"][0]
    assert account["syncedRemainingTokens"] == 1_000 and account["syncedAt"]

    rovo.accounts[TOKEN].daily_used = 0  # the other way round, found by the scheduled job
    rovo.accounts[SPARE].daily_used = 20_000_000
    outcome = scheduler.run_job(app, "credits-sync")
    assert outcome["error"] is None and outcome["result"]["synced"] == 2
    client.chat.completions.create(**chat(model=SONNET))
    assert served_by(rovo) == EMAIL
    spent = admin.call("GET", "/rovodev-keys?profile=default").json()["data"][1]
    assert spent["status"] == "limit_reached" and spent["limitReached"] == "credits exhausted"
    assert admin.key(second["id"])["limit_reached"] == "credits exhausted"


@pytest.mark.both_databases
def test_usage_booked_after_a_sync_counts_against_its_figure(admin, rovo, client):
    add(admin, rovo)
    add(admin, rovo, SPARE, OTHER, cloud=None)
    rovo.accounts[TOKEN].daily_used = 20_000_000 - 30
    rovo.accounts[SPARE].daily_used = 20_000_000 - 25
    admin.call("POST", "/rovodev-keys/sync")
    client.chat.completions.create(**chat(model=SONNET))
    assert served_by(rovo) == EMAIL  # 30 left against 25
    client.chat.completions.create(**chat(model=SONNET))
    assert served_by(rovo) == OTHER  # 30 - 8 booked since = 22 against 25
    listed = admin.call("GET", "/rovodev-keys").json()["data"]
    assert [a["syncedRemainingTokens"] for a in listed] == [22, 17]


def test_an_exhausted_account_leaves_the_pool_until_a_sync_says_more(admin, rovo, client):
    account = add(admin, rovo)
    rovo.accounts[TOKEN].daily_used = 20_000_000
    admin.call("POST", "/rovodev-keys/sync")
    described = admin.key(account["id"])
    assert described["status"] == "limit_reached"
    assert "reported nothing left on the account" in described["status_reason"]
    with pytest.raises(openai.APIStatusError) as out:
        client.chat.completions.create(**chat(model=SONNET))
    assert out.value.status_code == 503
    assert "1 key at a limit (credits exhausted)" in out.value.body["message"]
    assert rovo.requests == []
    rovo.accounts[TOKEN].daily_used = 0
    admin.call("POST", "/keys/sync")  # the general sync covers RovoDev too
    client.chat.completions.create(**chat(model=SONNET))
    assert len(rovo.requests) == 1


def test_a_sync_with_a_refused_token_marks_the_account_auth_failed(admin, rovo):
    wrong = add(admin, rovo, SPARE, "someone-else@example.com", cloud=None)
    result = admin.call("POST", "/rovodev-keys/sync").json()
    assert result["synced"] == 0 and result["keys"][0]["result"] == "auth_failed"
    assert SPARE not in str(result)
    assert admin.key(wrong["id"])["status"] == "auth_failed"


@pytest.mark.both_databases
def test_openrouter_key_info_is_synced_as_credit(admin, fake, client):
    secret = "sk-or-v1-aaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    key = admin.add_key(secret, fake.base_url, provider="openrouter", name="or")
    plain = admin.add_key("sk-plain-openai-aaaaaaaaaaaa", fake.base_url, name="plain")
    fake.key_info[secret] = (10.0, 9.25)
    result = admin.call("POST", "/keys/sync").json()
    assert [(k["id"], k["remaining_credit"]) for k in result["keys"]] == [(key["id"], "0.750000")]
    assert admin.key(key["id"])["remaining_credit"] == "0.750000"
    assert admin.key(plain["id"])["synced_at"] is None  # openai does not report credits

    fake.key_info[secret] = (10.0, 10.0)
    assert admin.call("POST", "/keys/sync?provider=openrouter").json()["synced"] == 1
    assert admin.key(key["id"])["limit_reached"] == "credits exhausted"
    client.chat.completions.create(**chat())
    assert fake.requests[-1].secret == "sk-plain-openai-aaaaaaaaaaaa"
    assert admin.call("POST", "/keys/sync?profile=nobody").json()["keys"] == []


@pytest.mark.parametrize(
    "cloud", ["my-site", "a436116f02ce45208fbb7301462a1674", CLOUD[:-1], CLOUD + "0", "x" * 36]
)
def test_a_cloud_id_that_is_not_an_atlassian_uuid_is_refused_naming_it(admin, web, rovo, cloud):
    body = {"email": EMAIL, "apiToken": TOKEN, "cloudId": cloud, "test": False}
    created = admin.call("POST", "/rovodev-keys", body)
    assert created.status == 400
    error = error_of(created)
    assert error["param"] == "cloudId" and "Atlassian cloud id" in error["message"]
    page = web.post("/rovodev", form(rovo, cloudId=cloud))
    assert page.status_code == 422 and 'id="cloudId-error"' in page.text
    assert "Atlassian cloud id" in page.text and TOKEN not in page.text

    account = add(admin, rovo, cloud=f" {CLOUD.upper()} ")  # the form's case and spaces
    changed = admin.call("PUT", f"/rovodev-keys/{account['id']}", {"cloudId": cloud})
    assert changed.status == 400 and error_of(changed)["param"] == "cloudId"
    [kept] = admin.call("GET", "/rovodev-keys").json()["data"]
    assert kept["cloudId"] == CLOUD.upper()


# -- the dashboard's RovoDev page ----------------------------------------------------------


def form(rovo, **fields) -> dict:
    return {"profile": "default", "email": EMAIL, "apiToken": TOKEN, "cloudId": CLOUD,
            "dailyTokenLimit": "20000000", "authScheme": "bearer", "baseUrl": rovo.base_url,
            **fields}  # fmt: skip


@pytest.mark.both_databases
def test_the_page_adds_an_account_tests_it_and_lists_it_masked(web, rovo, app):
    added = web.post("/rovodev", form(rovo), follow_redirects=True)
    assert added.status_code == 200
    page = added.text
    assert "Added RovoDev account" in page and "Test passed" in page
    assert TOKEN not in page and mask(TOKEN) in page
    assert EMAIL in page and CLOUD in page and "internal" in page
    assert 'max="20000000"' in page  # the usage bar against the daily limit
    assert "not synced yet" in page
    assert rovo.credit_checks == [TOKEN]


def test_a_bad_form_says_which_field_and_never_echoes_the_token(web, rovo):
    refused = web.post("/rovodev", form(rovo, email="nobody", dailyTokenLimit="12"))
    assert refused.status_code == 422
    assert 'id="email-error"' in refused.text and "email address" in refused.text
    assert TOKEN not in refused.text and 'value="nobody"' in refused.text
    limit = web.post("/rovodev", form(rovo, dailyTokenLimit="-3"))
    assert limit.status_code == 422 and 'id="dailyTokenLimit-error"' in limit.text
    missing = web.post("/rovodev", form(rovo, apiToken=""))
    assert missing.status_code == 422 and 'id="apiToken-error"' in missing.text
    assert "No RovoDev accounts yet" in web.get("/rovodev").text


def test_sync_and_test_buttons_report_on_the_page(web, admin, rovo):
    add(admin, rovo)
    wrong = add(admin, rovo, SPARE, "someone-else@example.com", cloud=None)
    rovo.accounts[TOKEN].daily_used = 19_000_000
    synced = web.post("/rovodev/sync", {}, follow_redirects=True).text
    assert "Synced 1 of 2 RovoDev account(s)" in synced
    assert "1,000,000 tokens" in synced
    tested = web.post(f"/rovodev/{wrong['id']}/test", {}, follow_redirects=True).text
    assert "RovoDev authentication failed" in tested
    assert SPARE not in tested and TOKEN not in tested
    assert web.post("/rovodev/999/test", {}).status_code == 404


def test_viewers_see_the_page_but_change_nothing(app, admin, rovo):
    add(admin, rovo)
    viewer = make_viewer(app)
    page = viewer.get("/rovodev").text
    assert EMAIL in page and "Add a RovoDev account" not in page
    assert viewer.post("/rovodev/sync", {}).status_code == 403
    assert viewer.post("/rovodev", form(rovo, apiToken=SPARE)).status_code == 403
    assert len(admin.call("GET", "/rovodev-keys").json()["data"]) == 1


def test_the_general_key_form_says_where_rovodev_accounts_are_added(web):
    values = {"name": "r", "provider": "rovodev", "profile": "default", "secret": TOKEN}
    refused = web.post("/keys", values)
    assert refused.status_code == 422
    assert "'email' must be the account's email address." in html.unescape(refused.text)
    assert 'href="/rovodev"' in refused.text and TOKEN not in refused.text


def test_a_setting_that_cannot_be_sent_is_a_502_that_leaves_the_key_alone(admin, rovo, client, app):
    """A header of the key's settings (here the cloud id, outside Latin-1) that cannot be
    sent is not the secret's fault: the key is not marked, and the client gets a 502. (Every
    front end refuses such a cloud id at save; a key saved before that rule can hold one.)"""
    bad = {"email": EMAIL, "cloud_id": "cloud-\u20ac"}
    body = {"provider": "rovodev", "name": EMAIL, "secret": TOKEN, "base_url": rovo.base_url,
            "options": bad, "test": False}  # fmt: skip
    refused_at_save = admin.call("POST", "/keys", body)
    assert refused_at_save.status == 400
    assert error_of(refused_at_save)["param"] == "options.cloud_id"
    body["options"] = {"email": EMAIL, "cloud_id": CLOUD}
    account = admin.call("POST", "/keys", body).json()
    with app.app_context():  # the setting as a key saved before the rule holds it
        db.session.get(ProviderKey, account["id"]).options = bad
        db.session.commit()
    app.extensions["keyrelay"].keys.forget()
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(**chat(model=SONNET))
    assert refused.value.status_code == 502
    error = refused.value.body
    assert error["code"] == "upstream_header_unsendable" and "'X-Cloud-ID'" in error["message"]
    key = admin.key(account["id"])
    assert key["status"] == "active" and key["consecutive_failures"] == 0
    assert not key["last_error"] and rovo.requests == []
    tested = admin.call("POST", f"/rovodev-keys/test/{account['id']}")
    assert tested.status == 200, tested.data
    result = tested.json()
    assert result["success"] is False and "'X-Cloud-ID'" in result["error"]
    assert result["key"]["status"] == "active" and rovo.credit_checks == []
