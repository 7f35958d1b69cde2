"""Statistics and export (F44): global / per profile / provider key / client key / model,
by day and month, JSON and CSV; the seed's /keys/statistics and /keys/active."""

from __future__ import annotations

import csv
import io
import re

import openai
import pytest

from tests.conftest import chat

A = "sk-stats-aaaaaaaaaaaaaaaa1111"
B = "sk-stats-bbbbbbbbbbbbbbbb2222"

# Roll-ups, batched inserts and reports: the same on PostgreSQL (tests/pg.py).
pytestmark = pytest.mark.both_databases


@pytest.fixture
def traffic(admin, server, client, fake, clock):
    """Nov 30: 2 gpt-4o-mini + 1 gpt-4o on key 1 (default); Dec 1: 1 on key 2 (team) via a
    client key."""
    admin.add_key(A, fake.base_url, name="a")
    admin.add_key(B, fake.base_url, name="b", profile="team")
    admin.call("PUT", "/prices/gpt-4o-mini", {"input_per_mtok": "1000", "output_per_mtok": "0"})
    clock.current = clock.current.replace(month=11, day=30)
    client.chat.completions.create(**chat())
    client.chat.completions.create(**chat())
    client.chat.completions.create(**chat(model="gpt-4o"))
    clock.advance(days=1)
    key = admin.call(
        "POST", "/client-keys", {"name": "app", "profile": "team", "rpm_limit": None}
    ).json()
    team = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key["key"], max_retries=0)
    team.chat.completions.create(**chat())
    return admin


def stats(admin, **params) -> dict:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    answer = admin.call("GET", f"/statistics?{query}")
    assert answer.status == 200, answer.data
    return answer.json()


def test_global_by_day_and_by_month(traffic):
    days = stats(traffic, **{"from": "2026-11-29", "to": "2026-12-01"})["data"]
    assert [(d["period"], d["requests"]) for d in days] == [("2026-11-30", 3), ("2026-12-01", 1)]
    months = stats(traffic, period="month", **{"from": "2026-11-01", "to": "2026-12-31"})["data"]
    assert [(m["period"], m["requests"]) for m in months] == [("2026-11", 3), ("2026-12", 1)]
    assert sum(m["total_tokens"] for m in months) == sum(d["total_tokens"] for d in days) > 0


def test_each_grouping(traffic):
    window = {"from": "2026-11-01", "to": "2026-12-31", "period": "month"}
    profiles = stats(traffic, group="profile", **window)["data"]
    assert [(p["period"], p["profile_name"], p["requests"]) for p in profiles] == [
        ("2026-11", "default", 3),
        ("2026-12", "team", 1),
    ]
    keys = stats(traffic, group="provider_key", **window)["data"]
    assert [(k["provider_key_name"], k["requests"]) for k in keys] == [("a", 3), ("b", 1)]
    models = stats(traffic, group="model", **window)["data"]
    assert [(m["period"], m["model"], m["requests"]) for m in models] == [
        ("2026-11", "gpt-4o", 1),
        ("2026-11", "gpt-4o-mini", 2),
        ("2026-12", "gpt-4o-mini", 1),
    ]
    mini = [m for m in models if m["model"] == "gpt-4o-mini" and m["period"] == "2026-11"][0]
    assert mini["cost_usd"] == f"{mini['input_tokens'] * 1000 / 1_000_000:.6f}"
    clients = stats(traffic, group="client_key", **window)["data"]
    assert [(c["period"], c["client_key_name"], c["requests"]) for c in clients] == [
        ("2026-12", "app", 1)
    ]


def test_csv_export(traffic):
    answer = traffic.call("GET", "/statistics?group=model&format=csv&from=2026-11-01&to=2026-12-31")
    assert answer.headers["Content-Type"].startswith("text/csv")
    assert "keyrelay-model-day-2026-11-01-2026-12-31.csv" in answer.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.data.decode())))
    assert [r["model"] for r in rows] == ["gpt-4o", "gpt-4o-mini", "gpt-4o-mini"]
    assert set(rows[0]) >= {"period", "model", "requests", "total_tokens", "cost_usd"}
    empty = traffic.call("GET", "/statistics?format=csv&from=2020-01-01&to=2020-01-02")
    assert empty.data.decode().splitlines() == [
        "period,requests,successes,failures,input_tokens,output_tokens,total_tokens,cost_usd"
    ]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("group=team", "group"),
        ("period=week", "period"),
        ("format=xml", "format"),
        ("from=yesterday", "from"),
        ("from=2026-12-02&to=2026-12-01", "from"),
    ],
)
def test_bad_parameters(admin, query, param):
    answer = admin.call("GET", f"/statistics?{query}")
    assert answer.status == 400 and answer.json()["error"]["param"] == param


def test_seed_statistics_and_active_key(traffic):
    figures = traffic.call("GET", "/keys/statistics").json()
    assert (figures["totalKeys"], figures["activeKeys"]) == (2, 2)
    assert (figures["totalRequests"], figures["successfulRequests"]) == (4, 4)
    months = stats(traffic, period="month", **{"from": "2026-11-01", "to": "2026-12-31"})["data"]
    nov, dec = (int(m["cost_usd"].replace(".", "")) for m in months)
    assert figures["totalCost"] == f"{(nov + dec) / 1_000_000:.6f}"
    assert figures["monthlyCost"] == figures["dailyCost"] == f"{dec / 1_000_000:.6f}"  # Dec 1
    assert nov > 0 and dec > 0
    active = traffic.call("GET", "/keys/active?profile=team").json()
    assert (active["name"], active["secret"][-4:]) == ("b", "2222")
    traffic.call("POST", "/keys/2/toggle", {"active": False})
    gone = traffic.call("GET", "/keys/active?profile=team")
    assert gone.status == 404 and gone.json()["error"]["code"] == "no_available_keys"
    assert traffic.call("GET", "/keys/active?profile=default&model=gpt-4o").json()["name"] == "a"


def test_usage_page_links_to_the_exports_for_a_viewer(app, traffic):
    from tests.conftest import make_viewer

    viewer = make_viewer(app)
    page = viewer.get("/usage").text
    link = next(
        href.replace("&amp;", "&")
        for href in re.findall(r'href="(/api/admin/statistics[^"]+)"', page)
        if "group=model" in href and "period=day" in href
    )
    answer = viewer.get(link)
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    assert answer.text.startswith("period,model,requests")
