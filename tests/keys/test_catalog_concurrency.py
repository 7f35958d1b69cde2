"""Workers noting at the same moment that one key's upstream lacks models: every model
noted is kept (none lost to another worker's write), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from gateway import store

MODELS = [f"model-{n}" for n in range(8)]


@pytest.mark.both_databases
def test_unserved_models_noted_at_once_are_all_kept(app, admin, fake, clock):
    key = admin.add_key("sk-concurrency-aaaaaaaa", fake.base_url, models="*")
    engine = app.extensions["keyrelay"].engine
    start = threading.Barrier(len(MODELS))
    failed: list[BaseException] = []

    def note(model: str) -> None:
        start.wait()
        try:
            with engine.begin() as conn:
                store.mark_unserved(conn, key["id"], model, clock.now())
        except BaseException as exc:
            failed.append(exc)

    for _ in range(3):  # three rounds: a lost write shows in any
        workers = [threading.Thread(target=note, args=(m,)) for m in MODELS]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert failed == []
    assert admin.key(key["id"])["unserved_models"] == MODELS
