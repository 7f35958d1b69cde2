"""Secrets at start: key files written atomically (many workers at once), provider secrets
this instance cannot decrypt (or that an empty key encrypted) marked and passed over with
failover, and keyed fingerprints of provider secrets."""

from __future__ import annotations

import hashlib
import html
import logging
import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path

import openai
import pytest
from cryptography.fernet import Fernet

import app as app_module
from app import create_app
from gateway.keys import secrets
from gateway.keys.secrets import SecretBox, load_or_create_key_file, mask
from models.provider_keys import STATUS_SENTENCES
from tests.conftest import Admin, live_app

BAD = "sk-bad-aaaaaaaaaaaaaaaa1111"
GOOD = "sk-good-bbbbbbbbbbbbbbbb2222"
WEAK = "sk-weak-cccccccccccccccc3333"
UNREADABLE = STATUS_SENTENCES["secret_unreadable"]
INSECURE = STATUS_SENTENCES["secret_insecure"]

PROCESSES = 20
TRIALS = 300

# These tests read and write the SQLite file itself (_db).
pytestmark = pytest.mark.sqlite_only


# -- key files: the race ----------------------------------------------------------------


def _secret_key_file(folder: Path, trial: int) -> str:
    return load_or_create_key_file(folder / f"{trial}.key")


def _master_key_file(folder: Path, trial: int) -> str:
    return app_module._instance_master_key(folder / str(trial))


def _racer(load, folder, trials, barrier, results) -> None:
    """One 'worker': at each trial, wait for all the others, then load the same new file."""
    keys = []
    for trial in range(trials):
        barrier.wait(timeout=30)
        try:
            keys.append(load(folder, trial))
        except SystemExit as exc:
            keys.append(f"SystemExit: {exc}")
    results.put(keys)


def _race(load, folder: Path) -> list[list[str]]:
    """PROCESSES processes load the same new key file at once, TRIALS times: the keys
    each trial gave, one list per trial."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    racers = [
        ctx.Process(target=_racer, args=(load, folder, TRIALS, barrier, results))
        for _ in range(PROCESSES)
    ]
    for racer in racers:
        racer.start()
    try:
        per_racer = [results.get(timeout=60) for _ in racers]
    finally:
        for racer in racers:
            racer.join(10)
            if racer.is_alive():
                racer.kill()
    return [[keys[trial] for keys in per_racer] for trial in range(TRIALS)]


def test_workers_starting_at_once_all_read_the_same_whole_secret_key(tmp_path):
    trials = _race(_secret_key_file, tmp_path)
    for trial, keys in enumerate(trials):
        assert len(set(keys)) == 1, (trial, sorted(set(keys)))
        key = keys[0]
        assert key and key == (tmp_path / f"{trial}.key").read_text().strip(), (trial, key)
        Fernet(key.encode())  # a whole Fernet key, not an empty or cut-short one
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_workers_starting_at_once_all_read_the_same_whole_master_key(tmp_path):
    for trial in range(TRIALS):
        (tmp_path / str(trial)).mkdir()
    trials = _race(_master_key_file, tmp_path)
    for trial, keys in enumerate(trials):
        assert len(set(keys)) == 1, (trial, sorted(set(keys)))
        key = keys[0]
        assert key == (tmp_path / str(trial) / "master_key").read_text().strip()
        assert key.startswith("kr-master-") and len(key) == len("kr-master-") + 43, key


# -- key files: empty or malformed -------------------------------------------------------


@pytest.fixture
def short_wait(monkeypatch):
    monkeypatch.setattr(secrets, "KEY_FILE_WAIT", 0.3)
    return 0.3


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "is empty"),
        ("\n", "is empty"),
        ("mdOKcTbUeBqmMj2yTw\n", "does not hold a Fernet key"),  # cut short
        ("not a key at all\n", "does not hold a Fernet key"),
    ],
)
def test_a_broken_secret_key_file_stops_the_start_with_a_clear_message(
    tmp_path, short_wait, content, problem
):
    path = tmp_path / "secret.key"
    path.write_text(content)
    started = time.monotonic()
    with pytest.raises(SystemExit) as exc:
        load_or_create_key_file(path)
    assert time.monotonic() - started >= short_wait  # it waited for a writer first
    message = str(exc.value)
    assert str(path) in message and problem in message and "KEYRELAY_SECRET_KEY" in message
    assert path.read_text() == content  # never replaced


def test_a_key_file_being_written_is_waited_for(tmp_path):
    path = tmp_path / "secret.key"
    path.write_text("")
    key = Fernet.generate_key().decode()
    writer = threading.Timer(0.3, lambda: path.write_text(key + "\n"))
    writer.start()
    try:
        assert load_or_create_key_file(path) == key
    finally:
        writer.join()


@pytest.mark.parametrize(
    ("file", "content", "problem"),
    [
        ("secret.key", "", "is empty"),
        ("secret.key", "hunter2\n", "does not hold a Fernet key"),
        ("master_key", "", "is empty"),
        ("master_key", "kr-master-abc\n", "cut-short"),
    ],
)
def test_create_app_refuses_to_start_on_a_broken_key_file(
    settings, short_wait, file, content, problem
):
    instance = Path(settings["INSTANCE_PATH"])
    instance.mkdir(parents=True)
    (instance / file).write_text(content)
    with pytest.raises(SystemExit) as exc:
        create_app({**settings, "SECRET_KEY": None, "MASTER_KEY": None})
    assert str(instance / file) in str(exc.value) and problem in str(exc.value)


@pytest.mark.parametrize("blank", ["", " ", "  \t"])
def test_a_blank_secret_key_is_never_an_empty_passphrase(settings, blank):
    with pytest.raises(ValueError, match="empty"):
        SecretBox(blank)
    if blank:  # an empty environment variable is "unset" (the key file); blanks refuse
        with pytest.raises(SystemExit, match="KEYRELAY_SECRET_KEY is set but blank"):
            create_app({**settings, "SECRET_KEY": blank})


# -- provider secrets that cannot be decrypted ------------------------------------------


def _db(settings) -> sqlite3.Connection:
    return sqlite3.connect(Path(settings["INSTANCE_PATH"]) / "keyrelay.db")


def _set_column(settings, key_id: int, column: str, value) -> None:
    with _db(settings) as conn:
        conn.execute(f"UPDATE provider_keys SET {column} = ? WHERE id = ?", (value, key_id))


def _column(settings, key_id: int, column: str):
    with _db(settings) as conn:
        query = f"SELECT {column} FROM provider_keys WHERE id = ?"
        return conn.execute(query, (key_id,)).fetchone()[0]


def _ask(client, **extra):
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], **extra
    )


def _used(fake) -> list[str]:
    """The secrets of the upstream's requests that served (a re-entered secret's key is
    tested first: its model list is not counted)."""
    return [r.secret for r in fake.requests if not r.path.endswith("/models")]


def _page(web, path: str) -> str:
    response = web.get(path)
    assert response.status_code == 200
    return html.unescape(response.text)


def _first_app(settings, request, *secrets_to_add, fake) -> list[dict]:
    """Keys added through an app that is then closed (a first run of the instance)."""
    http = request.getfixturevalue("http")
    with live_app(settings) as (_, live):
        admin = Admin(live.url, http)
        return [admin.add_key(s, fake.base_url, name=s.split("-")[1]) for s in secrets_to_add]


def test_keys_saved_under_another_secret_key_are_passed_over_and_shown(settings, fake, request):
    (old,) = _first_app(settings, request, BAD, fake=fake)
    # A row from before keyed fingerprints: its plain SHA-256 cannot be recomputed now.
    _set_column(settings, old["id"], "secret_fingerprint", hashlib.sha256(BAD.encode()).hexdigest())
    settings["SECRET_KEY"] = Fernet.generate_key().decode()  # restarted with another key
    admin, client, web = (request.getfixturevalue(n) for n in ("admin", "client", "web"))
    good = admin.add_key(GOOD, fake.base_url, name="good")

    key = admin.key(old["id"])
    assert (key["status"], key["last_error"]) == ("secret_unreadable", UNREADABLE)
    assert key["secret"] == mask(BAD)
    listed = {k["id"]: k["status"] for k in admin.call("GET", "/keys").json()["data"]}
    assert listed == {old["id"]: "secret_unreadable", good["id"]: "active"}
    assert _column(settings, old["id"], "secret_fingerprint") == ""  # the plain hash is gone

    raw = _ask(client)
    assert raw.http_response.status_code == 200 and raw.parse().choices[0].message.content
    assert _used(fake) == [GOOD]

    keys_page, overview = _page(web, "/keys"), _page(web, "/")
    for page in (keys_page, overview):
        assert "secret_unreadable" in page and UNREADABLE in page and BAD not in page

    tested = admin.call("POST", f"/keys/{old['id']}/test")
    assert tested.status == 200
    assert (tested.json()["result"], tested.json()["error"]) == ("secret_unreadable", UNREADABLE)
    assert tested.json()["key"]["status"] == "secret_unreadable"
    flashed = web.post(f"/keys/{old['id']}/test", htmx=True)
    assert flashed.status_code == 200 and UNREADABLE in html.unescape(flashed.text)

    # Only unreadable keys left: the usual 503, saying why.
    admin.call("POST", f"/keys/{good['id']}/toggle", {"active": False})
    fake.reset()
    with pytest.raises(openai.APIStatusError) as err:
        _ask(client)
    assert err.value.status_code == 503
    body = err.value.response.json()["error"]
    assert body["code"] == "no_available_keys"
    assert "1 key secret_unreadable" in body["message"]
    assert "cannot be decrypted" in body["message"] and "re-enter" in body["message"]
    assert _used(fake) == []

    # Re-entering the secret brings the key back.
    updated = admin.call("PUT", f"/keys/{old['id']}", {"secret": BAD})
    assert updated.status == 200, updated.data
    key = admin.key(old["id"])
    assert (key["status"], key["last_error"]) == ("active", None)
    assert _ask(client).http_response.status_code == 200
    assert _used(fake) == [BAD]


@pytest.mark.parametrize("stream", [False, True])
def test_a_secret_that_stops_decrypting_while_serving_fails_over(
    settings, admin, client, fake, stream
):
    bad, good = (admin.add_key(s, fake.base_url, name=n) for s, n in ((BAD, "a"), (GOOD, "b")))
    # What a worker with another secret key would have saved (the key tried first).
    foreign = Fernet(Fernet.generate_key()).encrypt(BAD.encode())
    _set_column(settings, bad["id"], "secret_encrypted", foreign)

    raw = _ask(client, stream=stream)
    assert raw.http_response.status_code == 200
    if stream:
        assert [chunk for chunk in raw.parse()]
    assert raw.headers["x-keyrelay-attempts"] == "1"
    assert _used(fake) == [GOOD]
    key = admin.key(bad["id"])
    assert (key["status"], key["last_error"]) == ("secret_unreadable", UNREADABLE)
    assert admin.key(good["id"])["status"] == "active"


def test_only_keys_that_stop_decrypting_while_serving_answer_503(settings, admin, client, fake):
    bad = admin.add_key(BAD, fake.base_url, name="a")
    _set_column(
        settings, bad["id"], "secret_encrypted", Fernet(Fernet.generate_key()).encrypt(b"x")
    )
    for _ in range(2):  # found by the attempt loop, then already marked
        with pytest.raises(openai.APIStatusError) as err:
            _ask(client)
        assert err.value.status_code == 503
        body = err.value.response.json()["error"]
        assert body["code"] == "no_available_keys"
        assert "secret_unreadable (secret cannot be decrypted" in body["message"]
    assert _used(fake) == []
    assert admin.key(bad["id"])["status"] == "secret_unreadable"


def test_keys_saved_under_the_empty_passphrase_are_found_at_start(settings, fake, request, caplog):
    weak, good = _first_app(settings, request, WEAK, GOOD, fake=fake)
    # What a worker that read an empty secret.key saved: readable by anyone.
    exposed = Fernet(secrets._fernet_key("")).encrypt(WEAK.encode())
    _set_column(settings, weak["id"], "secret_encrypted", exposed)
    caplog.set_level(logging.WARNING)
    admin, client, web = (request.getfixturevalue(n) for n in ("admin", "client", "web"))

    lines = [r.getMessage() for r in caplog.records if f"#{weak['id']}" in r.getMessage()]
    assert lines and "empty secret key" in lines[0]
    assert WEAK not in caplog.text and mask(WEAK) not in caplog.text
    key = admin.key(weak["id"])
    assert (key["status"], key["last_error"]) == ("secret_insecure", INSECURE)
    for page in (_page(web, "/keys"), _page(web, "/")):
        assert "secret_insecure" in page and INSECURE in page

    assert _ask(client).http_response.status_code == 200
    assert _used(fake) == [GOOD]
    tested = admin.call("POST", f"/keys/{weak['id']}/test").json()
    assert (tested["result"], tested["error"]) == ("secret_insecure", INSECURE)
    assert WEAK not in _used(fake)
    admin.call("POST", f"/keys/{good['id']}/toggle", {"active": False})
    with pytest.raises(openai.APIStatusError) as err:
        _ask(client)
    assert err.value.status_code == 503 and "empty secret key" in err.value.message
    assert WEAK not in _used(fake)

    # Re-entered on the dashboard's edit form: active, and the upstream gets it.
    form = {
        "name": "weak",
        "provider": "openai",
        "profile": "default",
        "secret": WEAK,
        "base_url": fake.base_url,
        "models": "*",
    }
    assert web.post(f"/keys/{weak['id']}/edit", form).status_code == 302
    assert admin.key(weak["id"])["status"] == "active"
    assert _ask(client).http_response.status_code == 200
    assert _used(fake)[-1] == WEAK


def test_a_key_that_decrypts_again_comes_back_at_start(settings, fake, request):
    original = settings["SECRET_KEY"]
    (key,) = _first_app(settings, request, BAD, fake=fake)
    with live_app(settings, SECRET_KEY=Fernet.generate_key().decode()) as (_, live):
        admin = Admin(live.url, request.getfixturevalue("http"))
        assert admin.key(key["id"])["status"] == "secret_unreadable"
    settings["SECRET_KEY"] = original  # the right key is back
    admin = request.getfixturevalue("admin")
    assert admin.key(key["id"])["status"] == "active"


# -- fingerprints -------------------------------------------------------------------------


def test_fingerprints_are_keyed_and_old_ones_are_rewritten_at_start(settings, fake, request):
    plain = hashlib.sha256(GOOD.encode()).hexdigest()
    http = request.getfixturevalue("http")
    with live_app(settings) as (_, live):
        admin = Admin(live.url, http)
        key = admin.add_key(GOOD, fake.base_url)
        stored = _column(settings, key["id"], "secret_fingerprint")
        assert stored != plain and plain not in stored and len(stored) <= 64
        again = admin.call("POST", "/keys", {"provider": "openai", "name": "x", "secret": GOOD})
        assert again.status == 409
    # Another secret key gives another fingerprint of the same secret.
    assert SecretBox("one key").fingerprint(GOOD) != SecretBox("another").fingerprint(GOOD)

    _set_column(settings, key["id"], "secret_fingerprint", plain)  # a row from before
    admin = request.getfixturevalue("admin")
    assert _column(settings, key["id"], "secret_fingerprint") == stored  # rewritten, keyed
    again = admin.call("POST", "/keys", {"provider": "openai", "name": "x", "secret": GOOD})
    assert again.status == 409, again.data
    assert (
        admin.call("POST", "/keys", {"provider": "openai", "name": "y", "secret": BAD}).status
        == 201
    )
