"""Configuration as files (F58): models.yaml (routes) and limits.yaml (profiles' settings,
provider keys' limits), exported and imported through the CLI and the dashboard."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import chat

SECRET = "sk-config-aaaaaaaaaaaaaaaa1111"

MODELS_YAML = """
routes:
  - name: smart
    target: gpt-4o
    fallbacks: [gpt-4o-mini]
  - name: openrouter/*
    target: "*"
  - name: gpt-4o
    paid: true
"""


def test_models_yaml_round_trips_through_the_cli(app, admin, fake, client, tmp_path):
    admin.add_key(SECRET, fake.base_url)
    source = tmp_path / "models.yaml"
    source.write_text(MODELS_YAML)
    runner = app.test_cli_runner()
    checked = runner.invoke(args=["config", "import", "models", str(source), "--dry-run"])
    assert checked.exit_code == 0 and "3 created" in checked.output, checked.output
    assert admin.call("GET", "/routes").json()["data"] == []  # a dry run changes nothing
    applied = runner.invoke(args=["config", "import", "models", str(source)])
    assert applied.exit_code == 0, applied.output
    names = [r["name"] for r in admin.call("GET", "/routes").json()["data"]]
    assert names == ["gpt-4o", "openrouter/*", "smart"]
    client.chat.completions.create(**chat(model="openrouter/gpt-4o-mini"))
    assert fake.requests[-1].body["model"] == "gpt-4o-mini"  # the pattern route works
    exported = runner.invoke(args=["config", "export", "models"])
    data = yaml.safe_load(exported.output)
    assert data["routes"][2] == {
        "name": "smart",
        "target": "gpt-4o",
        "fallbacks": ["gpt-4o-mini"],
        "paid": False,
    }
    # --replace deletes what the file leaves out; without it routes are only added/updated.
    source.write_text("routes:\n  - name: smart\n    target: gpt-4o-mini\n")
    runner.invoke(args=["config", "import", "models", str(source), "--replace"])
    routes = admin.call("GET", "/routes").json()["data"]
    assert [(r["name"], r["target"]) for r in routes] == [("smart", "gpt-4o-mini")]


@pytest.mark.both_databases
def test_a_bad_entry_changes_nothing_and_is_named(app, admin, tmp_path):
    source = tmp_path / "models.yaml"
    runner = app.test_cli_runner()
    for text, where in [
        ("routes:\n  - name: ok\n  - name: bad name\n", "routes[1].name"),
        ("routes:\n  - name: a\n  - name: a\n", "routes[1].name"),
        ("routes: [unclosed\n", "line 2"),
        ("servers: []\n", "the file must be a mapping"),
    ]:
        source.write_text(text)
        result = runner.invoke(args=["config", "import", "models", str(source)])
        assert result.exit_code != 0 and where in result.output, (text, result.output)
    assert admin.call("GET", "/routes").json()["data"] == []


@pytest.mark.both_databases
def test_limits_yaml_sets_limits_and_profiles(app, admin, fake, tmp_path):
    key = admin.add_key(SECRET, fake.base_url, name="main", rpm_limit=10)
    runner = app.test_cli_runner()
    exported = yaml.safe_load(runner.invoke(args=["config", "export", "limits"]).output)
    assert exported["keys"][0]["rpm_limit"] == 10 and SECRET not in str(exported)
    assert exported["profiles"]["default"]["wait_for_key_seconds"] is None
    entry = exported["keys"][0]
    entry.update(rpm_limit=20, daily_cost_limit="2.5", model_limits={"gpt-4o": {"tpm": 900}})
    exported["profiles"]["team-b"] = {"wait_for_key_seconds": 15, "use_paid_models": False}
    source = tmp_path / "limits.yaml"
    source.write_text(yaml.safe_dump(exported))
    result = runner.invoke(args=["config", "import", "limits", str(source)])
    assert result.exit_code == 0, result.output
    shown = admin.key(key["id"])
    assert (shown["rpm_limit"], shown["daily_cost_limit"]) == (20, "2.500000")
    assert shown["model_limits"] == {"gpt-4o": {"tpm": 900}}
    profiles = {p["name"]: p for p in admin.call("GET", "/profiles").json()["data"]}
    assert profiles["team-b"]["wait_for_key_seconds"] == 15
    # A key that is not the one named, or a bad limit, fails the whole file.
    for change, where in [
        ({"name": "other"}, "keys[0].name"),
        ({"id": 99}, "keys[0].id"),
        ({"tpm_limit": -1}, "keys[0].tpm_limit"),
        ({"speed": 3}, "keys[0].speed"),
    ]:
        bad = {**exported, "keys": [{**entry, "rpm_limit": 30, **change}]}
        source.write_text(yaml.safe_dump(bad))
        failed = runner.invoke(args=["config", "import", "limits", str(source)])
        assert failed.exit_code != 0 and where in failed.output, (change, failed.output)
    assert admin.key(key["id"])["rpm_limit"] == 20


@pytest.mark.both_databases
def test_dashboard_exports_checks_and_imports(web, admin, fake):
    admin.add_key(SECRET, fake.base_url)
    page = web.get("/routes").text
    assert "No routes" in page and "models.yaml" in page
    data = {"kind": "models", "text": MODELS_YAML, "action": "check"}
    checked = web.post("/config/import", data)
    assert checked.status_code == 200 and "create route smart" in checked.text
    assert admin.call("GET", "/routes").json()["data"] == []
    assert web.post("/config/import", {**data, "action": "apply"}).status_code == 302
    assert len(admin.call("GET", "/routes").json()["data"]) == 3
    download = web.get("/config/models.yaml")
    assert download.headers["Content-Disposition"] == 'attachment; filename="models.yaml"'
    assert yaml.safe_load(download.text)["routes"][0]["name"] == "gpt-4o"
    assert SECRET not in web.get("/config/limits.yaml").text
    bad = web.post("/config/import", {**data, "text": "routes:\n  - name: 'x y'\n"})
    assert bad.status_code == 422 and "routes[0].name" in bad.text
    assert "x y" in bad.text  # the pasted text is kept
    added = web.post("/routes", {"name": "fast", "target": "gpt-4o-mini", "fallbacks": ""})
    assert added.status_code == 302
    refused = web.post("/routes", {"name": "fast"})
    assert refused.status_code == 422 and "exists" in refused.text
    route_id = [r for r in admin.call("GET", "/routes").json()["data"] if r["name"] == "fast"]
    assert web.post(f"/routes/{route_id[0]['id']}/delete").status_code == 302
    assert "fast" not in [r["name"] for r in admin.call("GET", "/routes").json()["data"]]


def test_route_strategy_and_overflow_round_trip(app, admin, tmp_path):
    body = {
        "name": "long",
        "target": "gpt-4o-mini",
        "fallbacks": ["gpt-4o"],
        "strategy": "least-busy",
        "on_context_overflow": "prune",
        "context_window": 8192,
    }
    assert admin.call("POST", "/routes", body).status == 201
    assert admin.call("POST", "/routes", {"name": "plain"}).status == 201
    runner = app.test_cli_runner()
    data = yaml.safe_load(runner.invoke(args=["config", "export", "models"]).output)
    assert data["routes"][0] == {**body, "paid": False}
    assert data["routes"][1] == {"name": "plain", "target": None, "fallbacks": [], "paid": False}
    source = tmp_path / "models.yaml"
    source.write_text(yaml.safe_dump(data))
    admin.call("PUT", "/routes/1", {"strategy": None, "on_context_overflow": "error"})
    applied = runner.invoke(args=["config", "import", "models", str(source)])
    assert applied.exit_code == 0, applied.output
    route = admin.call("GET", "/routes/1").json()
    assert {k: route[k] for k in ("strategy", "on_context_overflow", "context_window")} == {
        "strategy": "least-busy",
        "on_context_overflow": "prune",
        "context_window": 8192,
    }
    # A bad value is named, and a fallback without fallbacks too; nothing changes.
    for text, where in [
        ("routes:\n  - name: long\n    strategy: fastest\n", "routes[0].strategy"),
        (
            "routes:\n  - name: x\n    on_context_overflow: fallback\n",
            "routes[0].on_context_overflow",
        ),
    ]:
        source.write_text(text)
        refused = runner.invoke(args=["config", "import", "models", str(source)])
        assert refused.exit_code != 0 and where in refused.output, refused.output
    assert admin.call("GET", "/routes/1").json() == route
    assert len(admin.call("GET", "/routes").json()["data"]) == 2
