"""Alembic environment of the ledger. `ledger.upgrade(url)` passes an open connection in
`config.attributes["connection"]`; the `alembic` command line (for writing new revisions) passes a URL:
`alembic -x url=sqlite:///ledger.sqlite3 revision --autogenerate -m "..."`, run in this folder's parent with
`-c` pointing at an ini file whose script_location is this folder."""
from __future__ import annotations

from alembic import context
from sqlalchemy import text

from recunlearn.service.ledger import Base, make_engine

LOCK_ID = 0x7265_6375   # PostgreSQL advisory lock: one migration at a time across processes


def run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": LOCK_ID})
        context.run_migrations()


given = context.config.attributes.get("connection")
if given is not None:
    run(given)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    engine = make_engine(url)
    with engine.connect() as connection:
        run(connection)
    engine.dispose()
