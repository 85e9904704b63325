"""The README's PostgreSQL storage URL form (`postgresql://user@host/db`) against a real server, and
the one-line error that names the missing driver."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import optuna
import pytest
from pg_server import postgres_url  # noqa: F401 (fixture)

from bench.errors import BenchError
from bench.tune.study import open_storage, with_driver

SEARCH = SimpleNamespace(retries=0, heartbeat=60)


def test_documented_postgresql_url_opens_a_shared_study(postgres_url):  # noqa: F811
    url = postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    assert url.startswith("postgresql://postgres@localhost:")   # exactly the README's form
    storage = open_storage(url, SEARCH)
    assert storage.url.startswith("postgresql+psycopg://")
    study = optuna.create_study(storage=storage, study_name="url_form")
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.5) ** 2, n_trials=3)
    again = optuna.load_study(study_name="url_form", storage=url)   # a second machine, same URL
    assert len(again.trials) == 3 and again.best_value == study.best_value


def test_missing_driver_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)   # as if `bench[postgres]` were not installed
    with pytest.raises(BenchError) as err:
        with_driver("postgresql://user:secret@host/db")
    text = str(err.value)
    assert "driver 'psycopg' is not installed" in text and "bench[postgres]" in text
    assert "secret" not in text and "\n" not in text
