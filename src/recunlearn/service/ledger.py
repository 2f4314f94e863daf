"""The ledger: the database of erasures, the suppression list, published model versions and API tokens.

It stores what is needed to prove an erasure and to keep its subject out of every later model (subject ids,
hashes, counts), never a copy of the erased interactions. SQLite by default; any SQLAlchemy URL works
(`postgresql+psycopg://...` for several workers). `upgrade(url)` brings a database to the current schema
(Alembic migrations in `migrations/`); `Ledger(url)` opens one with a reading and a writing session.
"""
from __future__ import annotations

import contextlib
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

from sqlalchemy import (JSON, Boolean, CheckConstraint, Column, DateTime, ForeignKey, Index, Integer, MetaData,
                        String, Table, Text, TypeDecorator, Uuid, create_engine, event)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker
from sqlalchemy.pool import StaticPool

from .group_commit import GroupCommit

ERASURE_STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")
ERASURE_ACTIONS = ("erase", "suppress")   # suppress: no served data knows the subject; nothing to unlearn
VERSION_KINDS = ("initial", "unlearn", "finetune", "retrain")
SUPPRESSION_KINDS = ("user", "item", "pair")
MIGRATIONS = Path(__file__).with_name("migrations")
T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every database (SQLite stores it naive; it comes back aware)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the ledger stores timezone-aware datetimes only")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Optional[datetime], dialect) -> Optional[datetime]:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _one_of(column: str, values: tuple[str, ...]) -> CheckConstraint:
    return CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=f"{column}_known")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s", "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s", "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s"})


model_version_erasures = Table(
    "model_version_erasures", Base.metadata,
    Column("version", ForeignKey("model_versions.version"), primary_key=True),
    Column("erasure_id", ForeignKey("erasures.id"), primary_key=True, index=True),
)


class Erasure(Base):
    """One erasure request, from acknowledgement to the model version that first excludes it."""

    __tablename__ = "erasures"
    __table_args__ = (_one_of("subject_kind", ("user", "item", "pairs")), _one_of("status", ERASURE_STATUSES),
                      _one_of("action", ERASURE_ACTIONS), Index(None, "status", "received_at"))

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    subject_kind: Mapped[str] = mapped_column(String(8))
    subject_ids: Mapped[Any] = mapped_column(JSON)                 # as given: ["7"] or [["7", "50"], ...]
    reason: Mapped[Optional[str]] = mapped_column(Text)
    subject_request_id: Mapped[Optional[uuid.UUID]] = mapped_column(Uuid, unique=True)
    idempotency_key: Mapped[Optional[str]] = mapped_column(String(255), unique=True)
    request_sha256: Mapped[str] = mapped_column(String(64))       # of the canonical request body
    suppress_only: Mapped[bool] = mapped_column(Boolean)           # as asked by the caller
    action: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(12))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expected_completion: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    started_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    completed_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)
    claimed_by: Mapped[Optional[str]] = mapped_column(String(200))   # the worker applying it now
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    erased_edges_count: Mapped[Optional[int]] = mapped_column(Integer)
    erased_edges_sha256: Mapped[Optional[str]] = mapped_column(String(64))
    model_version: Mapped[Optional[int]] = mapped_column(ForeignKey("model_versions.version"))  # first to exclude it
    error: Mapped[Optional[str]] = mapped_column(Text)


class Suppression(Base):
    """One erased subject (a user, an item or a pair), kept forever: no later training data may hold it."""

    __tablename__ = "suppression"
    __table_args__ = (_one_of("kind", SUPPRESSION_KINDS), Index(None, "kind", "user_id"),
                      Index(None, "kind", "item_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(8))
    user_id: Mapped[Optional[str]] = mapped_column(String(256))
    item_id: Mapped[Optional[str]] = mapped_column(String(256))
    erasure_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("erasures.id"), index=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ModelVersion(Base):
    """A published model: version n+1 always continues version n, so the lineage is one line."""

    __tablename__ = "model_versions"
    __table_args__ = (_one_of("kind", VERSION_KINDS),)

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(10))
    method: Mapped[Optional[str]] = mapped_column(String(100))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))                # of the published folder's content
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)
    erasures: Mapped[list[Erasure]] = relationship(secondary=model_version_erasures, lazy="raise")


class ApiToken(Base):
    """A bearer token: only a salted scrypt hash of its secret is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)   # public part of the token
    name: Mapped[str] = mapped_column(String(200))
    salt: Mapped[str] = mapped_column(String(64))                   # hex
    secret_hash: Mapped[str] = mapped_column(String(128))           # hex
    kdf: Mapped[str] = mapped_column(String(64))                    # e.g. scrypt:n=16384,r=8,p=1
    scopes: Mapped[list] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[Optional[datetime]] = mapped_column(UTCDateTime)


# ------------------------------------------------------------------------------------------ connections

def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets a busy timeout, foreign keys, WAL with full sync (acknowledged means
    durable) and transactions that begin as the connection's `sqlite_begin` option says (DEFERRED or IMMEDIATE)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    memory = parsed.database in (None, "", ":memory:")
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                           **({"poolclass": StaticPool} if memory else {}))

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None          # the driver's own BEGIN is replaced by ours, below
        cursor = dbapi_connection.cursor()
        for pragma in ("foreign_keys=ON", "synchronous=FULL", "busy_timeout=30000") + (
                () if memory else ("journal_mode=WAL",)):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql(f"BEGIN {connection.get_execution_options().get('sqlite_begin', 'DEFERRED')}")

    return engine


class Ledger:
    """Sessions on one ledger database. `reading()` for queries; `writing()` for changes: on SQLite it takes
    the database's single write lock at once (BEGIN IMMEDIATE), so that a check and the write that depends on
    it see the same state; elsewhere rows are locked as the queries say (FOR UPDATE SKIP LOCKED in claims)."""

    def __init__(self, url: str, engine: Engine | None = None):
        self.url = url
        self.engine = engine or make_engine(url)
        writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writing_sessions = sessionmaker(writer, expire_on_commit=False)
        # SQLite has one writer. Threads of this process (the API's, the worker's) queue for it here, in
        # order, instead of in SQLite's busy handler, which sleeps with growing back-off and lets a waiter
        # lose the race again and again under many concurrent writers. Other processes still meet the busy
        # handler.
        sqlite = self.engine.dialect.name == "sqlite"
        self._write_turn = threading.RLock() if sqlite else contextlib.nullcontext()
        # SQLite has one writer, so its commits are shared (group commit); PostgreSQL writes concurrent
        # transactions in parallel and groups their WAL flushes itself, so there each write runs in its own.
        self._group = GroupCommit(self.writing) if sqlite else None

    @contextlib.contextmanager
    def reading(self) -> Iterator[Session]:
        with self.sessions() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def writing(self) -> Iterator[Session]:
        """A session whose changes are committed when the block ends normally (rolled back otherwise)."""
        with self._write_turn, self._writing_sessions() as session, session.begin():
            yield session

    def write_grouped(self, write: Callable[[Session], T]) -> T:
        """`write(session)` committed together with the other grouped writes waiting at the same moment (one
        transaction, a savepoint each, one durable commit); returns its result after that commit. For the many
        small independent writes of concurrent requests (acknowledgements), whose rate one commit each would
        cap at the disk's sync rate. On PostgreSQL, one transaction of its own."""
        if self._group is None:
            with self.writing() as session:
                return write(session)
        return self._group.run(write)

    def dispose(self) -> None:
        if self._group is not None:
            self._group.close()
        self.engine.dispose()


def upgrade(url: str, revision: str = "head", engine: Engine | None = None) -> None:
    """Bring the ledger at `url` to `revision` of the schema (creating it if empty), in one transaction.
    Pass `engine` to migrate through an engine already open (an in-memory SQLite database)."""
    from alembic import command
    from alembic.config import Config

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    own = engine is None
    engine = engine or make_engine(url)
    try:
        with engine.execution_options(sqlite_begin="IMMEDIATE").begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        if own:
            engine.dispose()


def open_ledger(url: str) -> Ledger:
    """The ledger at `url`, migrated to the current schema first."""
    ledger = Ledger(url)
    upgrade(url, engine=ledger.engine)
    return ledger
