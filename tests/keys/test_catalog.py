"""The model catalog per key: a key serves its declared models, else what its test
discovered, else its provider's list; keys are tested when added; routing picks only keys
that serve the model; an upstream's "model not found" moves on without blaming the key."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import openai
import pytest
import urllib3

from gateway.jobs import housekeeping
from tests.conftest import MASTER_KEY
from tests.fake_fixtures import gemini_fake
from tests.fake_gemini import MODELS as GEMINI_MODELS
from tests.fake_upstream import Behaviour, FakeUpstream

GEMINI_KEY = "AIzaSyCatalogTestKey-aaaaaaaaaaaaaaaaaa"
OPENAI_MODELS = ["gpt-4o-mini", "gpt-4o"]


gemini = gemini_fake(GEMINI_KEY)


@pytest.fixture
def openai_fake():
    with FakeUpstream(models=OPENAI_MODELS) as fake:
        yield fake


@pytest.fixture
def mixed_pool(admin, openai_fake, gemini):
    """An OpenAI-compatible key and a Gemini key, both added without `models`."""
    # Through the API itself: no `models`, no `test` (the helper would declare them).
    first = _post(admin, "sk-catalog-openai-aaaa", openai_fake.base_url, "openai")
    second = _post(admin, GEMINI_KEY, gemini.base_url, "gemini")
    return first, second


def _post(admin, secret: str, base_url: str, provider: str, **fields) -> dict:
    """POST /api/admin/keys with only what is given (no models: they are discovered)."""
    body = {"provider": provider, "name": provider, "secret": secret, "base_url": base_url}
    response = admin.call("POST", "/keys", {**body, **fields})
    assert response.status == 201, response.data
    return response.json()


def test_keys_added_without_models_are_tested_and_serve_what_they_discovered(mixed_pool):
    first, second = mixed_pool
    assert first["test"]["result"] == second["test"]["result"] == "ok"
    assert first["models"] == second["models"] == []  # none declared
    assert first["models_source"] == second["models_source"] == "discovered"
    assert first["served_models"] == OPENAI_MODELS[::-1]  # gpt-4o, gpt-4o-mini (sorted)
    assert "gemini-2.5-flash" in second["served_models"]
    assert "gpt-4o-mini" not in second["served_models"]


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gemini-2.5-flash"])
def test_a_mixed_pool_answers_every_request_for_a_model_only_one_key_serves(
    mixed_pool, server, openai_fake, gemini, model
):
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=MASTER_KEY, max_retries=0)
    answered = 0
    for number in range(40):
        reply = sdk.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"hello {number}"}]
        )
        answered += bool(reply.choices[0].message.content)
    sdk.close()
    assert answered == 40
    to_openai = [r for r in openai_fake.requests if r.path.endswith("/chat/completions")]
    to_gemini = [r for r in gemini.requests if ":generateContent" in r.path]
    # Every request went to the one key that serves the model, none to the other.
    assert (len(to_openai), len(to_gemini)) == ((40, 0) if model.startswith("gpt") else (0, 40))


def test_models_lists_the_union_of_both_keys(mixed_pool, client):
    listed = {model.id: model.owned_by for model in client.models.list()}
    assert {"gpt-4o-mini", "gpt-4o", "gemini-2.5-flash"} <= set(listed)
    assert listed["gpt-4o-mini"] == "openai"
    assert listed["gemini-2.5-flash"] == "gemini"
    served = {m for m in GEMINI_MODELS if m != "gemini-embedding-001"}
    assert served <= set(listed)


def test_a_model_no_key_serves_is_a_404_naming_it(mixed_pool, client):
    with pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(
            model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}]
        )
    error = refused.value.body
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "'claude-sonnet-4-5'" in error["message"]


def test_an_upstream_model_not_found_moves_on_without_blame_and_is_remembered(
    admin, client, openai_fake, gemini
):
    # The Gemini key claims gpt-4o-mini (declared), its upstream has no such model.
    wrong = _post(admin, GEMINI_KEY, gemini.base_url, "gemini", models=["gpt-4o-mini"])
    admin.call("POST", f"/keys/{wrong['id']}/set-default")  # so it is tried first
    right = _post(admin, "sk-catalog-openai-bbbb", openai_fake.base_url, "openai")
    reply = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.http_response.status_code == 200
    assert len([r for r in gemini.requests if ":generateContent" in r.path]) == 1
    after = admin.key(wrong["id"])
    # No blame: still active, no failure counted, no cooldown; the model is noted.
    assert after["status"] == "active" and after["consecutive_failures"] == 0
    assert after["cooldown_until"] is None
    assert after["unserved_models"] == ["gpt-4o-mini"]
    assert "gpt-4o-mini" not in after["served_models"]
    # The next request skips the Gemini key: no second call to it.
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert len([r for r in gemini.requests if ":generateContent" in r.path]) == 1
    assert admin.key(right["id"])["status"] == "active"
    # A successful test restores what the upstream lists (its own list is the word).
    tested = admin.call("POST", f"/keys/{wrong['id']}/test").json()
    assert tested["result"] == "ok" and tested["key"]["unserved_models"] == []


def test_every_key_without_the_model_is_a_404_model_not_found(admin, client, openai_fake):
    secret = "sk-catalog-openai-cccc"
    key = _post(admin, secret, openai_fake.base_url, "openai")
    assert "gpt-4o-mini" in key["served_models"]  # its list says so; its chat says no
    missing = "The model `gpt-4o-mini` does not exist or you do not have access to it."
    openai_fake.set_behaviour(secret, Behaviour.bad_request(missing, "model_not_found", 404))
    with pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    error = refused.value.body
    assert error["code"] == "model_not_found" and "'gpt-4o-mini'" in error["message"]
    after = admin.key(key["id"])
    assert after["status"] == "active" and after["consecutive_failures"] == 0
    assert after["unserved_models"] == ["gpt-4o-mini"]


def test_a_key_whose_test_fails_is_kept_with_its_state(admin, openai_fake):
    openai_fake.set_behaviour("sk-catalog-openai-dddd", Behaviour.unauthorized())
    added = _post(admin, "sk-catalog-openai-dddd", openai_fake.base_url, "openai")
    assert added["test"]["result"] == "auth_failed"
    assert added["status"] == "auth_failed" and added["last_error_message"]
    assert added["models_source"] == "unknown" and added["served_models"] == []
    assert admin.key(added["id"])["id"] == added["id"]


def test_test_false_saves_the_key_untested(admin, openai_fake):
    added = _post(admin, "sk-catalog-openai-eeee", openai_fake.base_url, "openai", test=False)
    assert "test" not in added and added["discovered_models"] is None
    assert [r for r in openai_fake.requests if r.path.endswith("/models")] == []
    refused = admin.call(
        "POST",
        "/keys",
        {"provider": "openai", "name": "k", "secret": "sk-catalog-x-ffff", "test": "no"},
    )
    assert refused.status == 400 and refused.json()["error"]["param"] == "test"


def test_a_declared_star_serves_any_model(admin, client, openai_fake):
    added = _post(admin, "sk-catalog-openai-gggg", openai_fake.base_url, "openai", models="*")
    assert added["served_models"] == ["*"] and added["models_source"] == "declared"
    reply = client.chat.completions.create(
        model="some-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content


def test_emptied_models_fall_back_to_the_discovered_list(admin, openai_fake):
    added = _post(
        admin, "sk-catalog-openai-hhhh", openai_fake.base_url, "openai", models=["gpt-4o"]
    )
    assert added["served_models"] == ["gpt-4o"]
    changed = admin.call("PUT", f"/keys/{added['id']}", {"models": []}).json()
    assert changed["models_source"] == "discovered"
    assert changed["served_models"] == ["gpt-4o", "gpt-4o-mini"]


def test_revalidation_discovers_the_models_of_a_key_that_serves_none_yet(
    app, admin, client, openai_fake, clock
):
    added = _post(admin, "sk-catalog-openai-iiii", openai_fake.base_url, "openai", test=False)
    with pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert "serve no model yet: test them" in refused.value.body["message"]
    summary = housekeeping.revalidate_keys(app.extensions["keyrelay"], clock.now(), app.config)
    assert summary["discovered"] == [added["id"]]
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content


def test_models_is_what_the_client_key_may_use_of_the_pool(mixed_pool, admin, server):
    body = {"name": "app", "models": ["gpt-4o-mini", "gemini-2.5-flash", "claude-sonnet-4-5"]}
    created = admin.call("POST", "/client-keys", body)
    assert created.status == 201, created.data
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=created.json()["key"], max_retries=0)
    listed = sorted(model.id for model in sdk.models.list())
    sdk.close()
    # Allowed ∩ served: no key serves claude-sonnet-4-5; gpt-4o is served but not allowed.
    assert listed == ["gemini-2.5-flash", "gpt-4o-mini"]


class _Trickle:
    """A loopback upstream that answers a model list one byte at a time, each within the
    read timeout, so that only a bound on the whole test ends it."""

    def __init__(self, gap: float, count: int) -> None:
        self.gap, self.count = gap, count
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.sock.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
                conn.sendall(f"Content-Length: {self.count}\r\n\r\n".encode())
                for _ in range(self.count):
                    if self.stop.wait(self.gap):
                        return
                    conn.sendall(b" ")

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join()


@pytest.mark.parametrize("upstream", ["silent", "trickling"])
def test_a_new_keys_test_is_bounded_whatever_its_upstream_does(admin, openai_fake, upstream):
    """The settings give 1 s to connect and 1 s of silence: the whole test takes at most
    their sum (2 s), however the upstream answers; the key is kept, saying why."""
    trickle = None
    if upstream == "silent":
        openai_fake.set_behaviour("sk-catalog-slow-aaaa", Behaviour.hang())
        base_url = openai_fake.base_url
    else:  # a byte every 0.4 s: never silent for 1 s, 8 s in all
        trickle = _Trickle(0.4, 20)
        base_url = trickle.base_url
    started = time.monotonic()
    made = _post(admin, "sk-catalog-slow-aaaa", base_url, "openai")
    took = time.monotonic() - started
    if trickle is not None:
        trickle.close()
    assert took < 4.0, took
    assert made["test"]["result"] == "unreachable"
    assert "timed out" in made["test"]["message"] and "sk-catalog-slow" not in str(made)
    assert made["status"] == "active" and made["models_source"] == "unknown"
    assert "timed out" in admin.key(made["id"])["last_error"]


def test_google_model_ids_are_served_with_or_without_their_models_prefix(
    admin, client, gemini, openai_fake
):
    """Google names a model `models/gemini-…` (its OpenAI-compatible model list does too)
    and takes either spelling: so does the catalog of a Google key."""
    _post(admin, GEMINI_KEY, gemini.base_url, "gemini")
    for asked in ("gemini-2.5-flash", "models/gemini-2.5-flash"):
        reply = client.chat.completions.create(
            model=asked, messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content
    assert len(gemini.calls()) == 2
    assert client.models.retrieve("models/gemini-2.5-flash").id == "models/gemini-2.5-flash"
    assert client.models.retrieve("gemini-2.5-flash").owned_by == "gemini"

    with FakeUpstream(models=["models/gemma-3-27b-it"]) as google:
        added = _post(admin, "AIzaSyCatalogCompat-bbbbbbbbbbbbbbbb", google.base_url,
                      "google-ai-studio-openai")  # fmt: skip
        assert added["served_models"] == ["models/gemma-3-27b-it"]
        for asked in ("gemma-3-27b-it", "models/gemma-3-27b-it"):
            reply = client.chat.completions.create(
                model=asked, messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.choices[0].message.content
        sent = [r.body["model"] for r in google.requests if r.path.endswith("/completions")]
    assert sent == ["gemma-3-27b-it", "models/gemma-3-27b-it"]
    # Another kind's catalog is taken at its word.
    _post(admin, "sk-catalog-openai-gggg", openai_fake.base_url, "openai")
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="models/gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )


def test_a_route_alias_is_listed_when_any_model_of_its_chain_is_served(admin, client, openai_fake):
    _post(admin, "sk-catalog-openai-hhhh", openai_fake.base_url, "openai")
    for name, target, fallbacks in (
        ("smart", "gpt-5-not-here", ["gpt-4o-mini"]),  # served by its fallback
        ("nowhere", "gpt-5-not-here", ["o9-not-here"]),  # served by none
    ):
        body = {"name": name, "target": target, "fallbacks": fallbacks}
        assert admin.call("POST", "/routes", body).status == 201
    listed = {model.id for model in client.models.list()}
    assert "smart" in listed and "nowhere" not in listed
    assert client.models.retrieve("smart").owned_by == "keyrelay"
    reply = client.chat.completions.create(
        model="smart", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="nowhere", messages=[{"role": "user", "content": "hi"}]
        )


def test_the_dashboard_says_what_a_key_serves_and_why(admin, web, client, openai_fake, gemini):
    discovered = _post(admin, "sk-catalog-openai-iiii", openai_fake.base_url, "openai")
    declared = _post(admin, GEMINI_KEY, gemini.base_url, "gemini", models=["gpt-4o-mini", "x-1"])
    anything = _post(admin, "sk-catalog-any-jjjj", openai_fake.base_url, "openai", models="*",
                     test=False)  # fmt: skip
    untested = _post(admin, "sk-catalog-new-kkkk", openai_fake.base_url, "openai", test=False)
    admin.call("POST", f"/keys/{declared['id']}/set-default")  # tried first: its upstream
    client.chat.completions.create(  # answers "no such model", which is noted
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    expected = {
        discovered["id"]: "Serves gpt-4o, gpt-4o-mini (as its last test discovered).",
        declared["id"]: "Serves x-1 (as declared); its upstream said it has no gpt-4o-mini.",
        anything["id"]: "Serves any model (as declared).",
        untested["id"]: "Serves no model yet: test the key, or declare its models.",
    }
    for key_id, says in expected.items():
        page = web.get(f"/keys/{key_id}/edit").text
        assert says in page, (key_id, page[page.find("Models") :][:600])
        for secret in ("sk-catalog-openai-iiii", GEMINI_KEY, "sk-catalog-any-jjjj"):
            assert secret not in page and secret[-6:] not in page


def test_a_bulk_import_of_silent_keys_is_tested_at_once_not_one_by_one(
    app, admin, web, openai_fake, tmp_path
):
    """Keys whose upstream never answers: each test ends after 1 s of silence here, and
    the keys of one import are tested side by side, so eight do not take 8 s."""
    secrets = [f"sk-catalog-silent-{n:02}aaaaaaaa" for n in range(14)]
    for secret in secrets:
        openai_fake.set_behaviour(secret, Behaviour.hang())
    started = time.monotonic()
    page = web.post(
        "/keys/import",
        {"secrets": "\n".join(secrets[:8]), "provider": "openai", "base_url": openai_fake.base_url},
    ).text
    took = time.monotonic() - started
    assert took < 4.0, took
    assert page.count("upstream timed out") == 8 and secrets[0] not in page

    source = tmp_path / "keys.txt"
    source.write_text("\n".join(secrets[8:]) + "\n")
    args = ["keys", "import", str(source), "--base-url", openai_fake.base_url]
    started = time.monotonic()
    result = app.test_cli_runner().invoke(args=args)
    took = time.monotonic() - started
    assert result.exit_code == 0 and took < 4.0, (took, result.output)
    assert result.output.count("unreachable — upstream timed out") == 6
    states = {k["models_source"] for k in admin.call("GET", "/keys").json()["data"]}
    assert states == {"unknown"}  # kept, untested lists


def test_a_key_pointed_at_another_upstream_learns_its_models_again(
    admin, web, client, openai_fake, gemini
):
    made = _post(admin, "sk-catalog-moved-llll", openai_fake.base_url, "openai")
    assert made["served_models"] == ["gpt-4o", "gpt-4o-mini"]
    body = {"provider": "gemini", "base_url": gemini.base_url, "secret": GEMINI_KEY}
    moved = admin.call("PUT", f"/keys/{made['id']}", body)
    assert moved.status == 200, moved.data
    # Tested again at once: what the new upstream lists, nothing of the old one.
    assert "gemini-2.5-flash" in moved.json()["served_models"]
    assert "gpt-4o" not in moved.json()["served_models"]
    reply = client.chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    assert "gpt-4o" not in {model.id for model in client.models.list()}

    # The dashboard's form does the same.
    form = {"name": "back", "provider": "openai", "profile": "default", "models": ""}
    form |= {"base_url": openai_fake.base_url, "secret": "sk-catalog-back-mmmm"}
    saved = web.post(f"/keys/{made['id']}/edit", form)
    assert saved.status_code == 302
    assert admin.key(made["id"])["served_models"] == ["gpt-4o", "gpt-4o-mini"]
    # A change that leaves the upstream as it was is not tested again.
    asked = len(openai_fake.requests)
    renamed = admin.call("PUT", f"/keys/{made['id']}", {"name": "renamed"})
    assert renamed.status == 200 and len(openai_fake.requests) == asked


def test_a_key_update_may_skip_its_test(admin, web, openai_fake):
    """`"test": false` (the form's "Save without testing") saves a key whose upstream
    changed without asking the upstream; without it the key is tested again."""
    made = _post(admin, "sk-catalog-skip-nnnn", openai_fake.base_url, "openai")
    listed = len(_model_lists(openai_fake))
    body = {"secret": "sk-catalog-skip-oooo", "test": False}
    saved = admin.call("PUT", f"/keys/{made['id']}", body)
    assert saved.status == 200, saved.data
    assert len(_model_lists(openai_fake)) == listed  # not tested
    assert "test" not in saved.json()
    refused = admin.call("PUT", f"/keys/{made['id']}", {"test": "no"})
    assert refused.status == 400 and refused.json()["error"]["param"] == "test"

    form = {"name": "skip", "provider": "openai", "profile": "default", "models": ""}
    form |= {"base_url": openai_fake.base_url, "secret": "sk-catalog-skip-pppp"}
    page = web.get(f"/keys/{made['id']}/edit").text
    assert 'name="skip_test"' in page and "Save without testing" in page
    assert web.post(f"/keys/{made['id']}/edit", {**form, "skip_test": "on"}).status_code == 302
    assert len(_model_lists(openai_fake)) == listed
    form["secret"] = "sk-catalog-skip-qqqq"
    assert web.post(f"/keys/{made['id']}/edit", form).status_code == 302
    assert len(_model_lists(openai_fake)) == listed + 1  # unchecked: tested again
    tested = admin.call("PUT", f"/keys/{made['id']}", {"secret": "sk-catalog-skip-rrrr"})
    assert tested.status == 200 and len(_model_lists(openai_fake)) == listed + 2


def _model_lists(fake) -> list:
    """The model-list calls the fake answered (what a key test asks)."""
    return [r for r in fake.requests if r.path.endswith("/models")]


def test_models_leaves_out_the_models_of_a_key_that_cannot_serve_now(admin, client, openai_fake):
    """A key its upstream refused (auth_failed) serves nothing until it is tested again or
    an admin brings it back: its models are not offered (no other key serves them)."""
    openai_fake.set_behaviour("sk-catalog-refused-nnnn", Behaviour.unauthorized())
    refused = _post(admin, "sk-catalog-refused-nnnn", openai_fake.base_url, "deepseek",
                    models=["deepseek-chat"])  # fmt: skip
    assert refused["status"] == "auth_failed"
    _post(admin, "sk-catalog-openai-oooo", openai_fake.base_url, "openai")
    listed = {model.id for model in client.models.list()}
    assert "deepseek-chat" not in listed and "gpt-4o-mini" in listed
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("deepseek-chat")


def test_a_client_keys_models_served_by_a_star_key_are_listed(admin, server, openai_fake):
    """A key declared `*` serves any model: a client key allowed a few sees those listed
    (and each one by id), whether or not the key's test listed them."""
    _post(admin, "sk-catalog-star-pppp", openai_fake.base_url, "openai", models="*", test=False)
    body = {"name": "narrow", "models": ["gpt-4o-mini", "house-model"]}
    created = admin.call("POST", "/client-keys", body).json()["key"]
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=created, max_retries=0)
    assert sorted(model.id for model in sdk.models.list()) == ["gpt-4o-mini", "house-model"]
    assert sdk.models.retrieve("house-model").id == "house-model"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("gpt-4o")  # served, not allowed to this client key
    reply = sdk.chat.completions.create(
        model="house-model", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content
    sdk.close()


def test_a_key_asked_for_ever_new_missing_models_keeps_learning_within_a_bound(
    admin, server, openai_fake
):
    secret = "sk-catalog-openai-dddd"
    key = admin.add_key(secret, openai_fake.base_url)  # `*`: any name is worth a try
    missing = "The model does not exist or you do not have access to it."
    openai_fake.set_behaviour(secret, Behaviour.bad_request(missing, "model_not_found", 404))
    # Raw HTTP: 300 requests through the SDK cost more than the test needs.
    http = urllib3.PoolManager(retries=False)
    url, auth = f"{server.url}/v1/chat/completions", {"Authorization": f"Bearer {MASTER_KEY}"}

    def ask(model: str) -> int:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        return http.request("POST", url, json=body, headers=auth).status

    names = [f"missing-{number:03d}" for number in range(300)]
    assert {ask(name) for name in names} == {404}
    assert len(openai_fake.requests) == 300
    remembered = admin.key(key["id"])["unserved_models"]
    assert remembered == names[-256:]  # the latest, the oldest forgotten: bounded
    for name in names[-256:]:  # not asked again for any of the latest
        assert ask(name) == 404
    assert len(openai_fake.requests) == 300
    assert ask(names[0]) == 404  # forgotten: asked once more, and remembered again
    assert len(openai_fake.requests) == 301
    assert names[0] in admin.key(key["id"])["unserved_models"]
    assert len(admin.key(key["id"])["unserved_models"]) == 256
    http.clear()
