"""Fixtures of the service tests: a migrated SQLite ledger in a temporary folder, the app on it (TestClient),
a token per scope, and a snapshot of every ledger table (to show that a refused request changed nothing)."""
from __future__ import annotations

import os

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from recunlearn.service.api import create_app
from recunlearn.service.auth import SCOPES, create_token
from recunlearn.service.ledger import Base, Ledger, open_ledger
from recunlearn.service.settings import ServiceSettings
from recunlearn.service.subjects import Subject

from postgres_server import URL_ENV, throwaway_server

KNOWN_USERS = {"1", "2", "3", "u-42"}
KNOWN_ITEMS = {"10", "20", "30"}
KNOWN_PAIRS = {("1", "10"), ("1", "20"), ("2", "30")}


def fake_resolver(subject: Subject) -> list:
    """A tiny stand-in for a dataset's id maps."""
    if subject.kind == "pairs":
        return [list(p) for p in subject.ids if tuple(p) not in KNOWN_PAIRS]
    known = KNOWN_USERS if subject.kind == "user" else KNOWN_ITEMS
    return [i for i in subject.ids if i not in known]


@pytest.fixture
def settings(tmp_path) -> ServiceSettings:
    return ServiceSettings(state_dir=tmp_path / "state", subject_resolver=fake_resolver)


@pytest.fixture
def ledger(settings) -> Ledger:
    ledger = open_ledger(settings.ledger_url())
    yield ledger
    ledger.dispose()


@pytest.fixture
def app(settings, ledger):
    return create_app(settings, ledger)


@pytest.fixture
def client(app):
    with TestClient(app) as client:
        yield client


@pytest.fixture
def tokens(ledger) -> dict[str, str]:
    """One token per scope, plus "none" (a valid token whose only scope is recs:read, for 403s on erasures)."""
    with ledger.writing() as session:
        made = {scope: create_token(session, f"test {scope}", [scope]) for scope in SCOPES}
    made["none"] = made["recs:read"]
    return made


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def writer(tokens) -> dict[str, str]:
    return bearer(tokens["erasure:write"])


@pytest.fixture
def reader(tokens) -> dict[str, str]:
    return bearer(tokens["erasure:read"])


def snapshot(ledger: Ledger) -> dict[str, list]:
    """Every row of every ledger table, in a stable order."""
    with ledger.reading() as session:
        return {table.name: sorted(map(tuple, session.execute(select(table)).all()), key=repr)
                for table in Base.metadata.sorted_tables}


@pytest.fixture(name="snapshot")
def snapshot_fixture():
    """`snapshot(ledger)`: every row of every ledger table (test modules cannot import from conftest)."""
    return snapshot


@pytest.fixture
def unchanged(ledger):
    """`with unchanged(): ...` fails if the block changes any ledger row."""
    import contextlib

    @contextlib.contextmanager
    def check():
        before = snapshot(ledger)
        yield
        assert snapshot(ledger) == before, "a refused request changed the ledger"
    return check


# A small trained and prepared ml-100k model, as the worker and serve tests start from (seconds on a CPU).
SMALL_TRAIN = ["--quiet", "--set", "train.epochs=2", "--set", "train.batch_size=8192", "--set", "train.lr=0.01"]
SMALL_ENCODER = ["--quiet", "--set", "epochs=1", "--set", "batch_size=8192", "--set", "lr=0.05"]


@pytest.fixture(scope="module")
def trained(data_root, tmp_path_factory, isolated_model_cache, isolated_locks):
    from recunlearn.cli import app as cli_app

    out = tmp_path_factory.mktemp("service-model") / "model"
    for args in (["train", "--dataset", "ml-100k", "--model", "lightgcn", *SMALL_TRAIN, "--out", out],
                 ["prepare", "--checkpoint", out, *SMALL_ENCODER]):
        result = CliRunner().invoke(cli_app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def data(trained):
    from recunlearn.train.checkpoint import load_checkpoint
    return load_checkpoint(trained)[2]


@pytest.fixture(scope="session")
def postgres_server_url():
    """A real PostgreSQL server for this run: a throwaway cluster from the machine's binaries, or the empty
    database named by RECUNLEARN_TEST_POSTGRES."""
    if os.environ.get(URL_ENV):
        yield os.environ[URL_ENV]
        return
    with throwaway_server() as url:
        yield url
