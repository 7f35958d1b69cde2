"""GET / DELETE /v1/responses/{id} of a response a Responses-API upstream holds, when
its key or its upstream is not there to answer: a clear error (502/503, or the upstream's
404), never the upstream's 401 or 500 as if it were the client's, never a secret."""

from __future__ import annotations

import openai
import pytest

from tests.fake_upstream import Behaviour

SECRET = "sk-held-edges-aaaaaaaaaaaaaaaaaa"


@pytest.fixture
def made(client, admin, fake):
    """A passthrough response, made by the one Responses-API key: (its id, the key's id)."""
    key = admin.add_key(SECRET, fake.base_url, responses_api=True)
    first = client.responses.create(model="gpt-4o-mini", input="Remember this.")
    assert fake.requests[-1].path == "/v1/responses"
    return first.id, key["id"]


def _asked(fake) -> list[str]:
    return [r.method for r in fake.requests if r.path.startswith("/v1/responses/")]


def test_a_disabled_keys_response_is_not_asked_for(client, admin, fake, made):
    response_id, key_id = made
    assert admin.call("POST", f"/keys/{key_id}/toggle", {"active": False}).status == 200
    for call in (client.responses.retrieve, client.responses.delete):
        with pytest.raises(openai.APIStatusError) as refused:
            call(response_id)
        assert refused.value.status_code == 503
        error = refused.value.body
        assert error["code"] == "no_available_keys" and f"#{key_id}" in error["message"]
        assert "disabled" in error["message"]
    assert _asked(fake) == []  # a disabled key is not used, not even to read


@pytest.mark.parametrize(
    ("behaviour", "says"),
    [
        (Behaviour.server_error(500), "HTTP 500"),
        (Behaviour.server_error(503), "HTTP 503"),
        (Behaviour.unauthorized(), "HTTP 401"),
        (Behaviour.hang(), "timed out"),
    ],
    ids=["500", "503", "401", "timeout"],
)
def test_an_upstream_that_cannot_answer_is_a_502(client, fake, made, behaviour, says):
    response_id, key_id = made
    fake.set_behaviour(SECRET, behaviour)
    for call in (client.responses.retrieve, client.responses.delete):
        with pytest.raises(openai.APIStatusError) as failed:
            call(response_id)
        assert failed.value.status_code == 502, failed.value.body
        error = failed.value.body
        assert error["code"] == "upstream_failed" and f"#{key_id}" in error["message"]
        assert says in error["message"] and SECRET[-8:] not in str(failed.value.response.text)
    assert _asked(fake) == ["GET", "DELETE"]


def test_a_response_its_upstream_no_longer_has_is_a_404_and_forgotten(client, fake, made):
    response_id, _ = made
    fake.set_behaviour(SECRET, Behaviour.ok())
    client.responses.delete(response_id)  # the upstream deletes it
    assert _asked(fake) == ["DELETE"]
    for call in (client.responses.retrieve, client.responses.delete):
        with pytest.raises(openai.NotFoundError):
            call(response_id)
    assert _asked(fake) == ["DELETE"]  # forgotten: the upstream is not asked again


def test_a_deleted_keys_response_is_a_404(client, admin, fake, made):
    response_id, key_id = made
    assert admin.call("DELETE", f"/keys/{key_id}").status == 204
    for call in (client.responses.retrieve, client.responses.delete):
        with pytest.raises(openai.NotFoundError) as missing:
            call(response_id)
        assert response_id in missing.value.body["message"]
    assert _asked(fake) == []
