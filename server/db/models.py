"""The service's tables (SQLAlchemy 2.0 declarative, typed columns).

Every point in time is a UtcDateTime column: written as UTC, read back as an
aware UTC datetime on SQLite and PostgreSQL alike.

Metrics are typed columns so they can be filtered and charted in SQL; what a
future engine reports beyond them goes to a JSON ``extras`` column rather than
a migration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from server.db.types import UtcDateTime
from silo_contract.fields import ACTOR_LENGTH, FILE_NAME_LENGTH, NOTE_LENGTH

# BIGINT on PostgreSQL, INTEGER on SQLite (where only INTEGER PRIMARY KEY autoincrements).
BigId = BigInteger().with_variant(Integer(), "sqlite")
# A model's, data set's or schedule's name (a plug-in's name is at most 64 characters).
PLAN_NAME_LENGTH = 64


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON,
        list[str]: JSON,
        list[Any]: JSON,
    }


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    # A deactivated user's tokens are refused; the user and their jobs stay.
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="user")


class ApiToken(Base):
    """A user's bearer token, kept only as its SHA-256; the plain token is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # None: never
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_by: Mapped[str | None] = mapped_column(String(ACTOR_LENGTH))  # an audit actor

    user: Mapped[User] = relationship(back_populates="tokens")


class AuditEvent(Base):
    """One administrative change: who (``actor``: ``user:<name>`` through the API,
    ``local:<unix user>`` from the CLI, ``server``), did what (``token.revoke``) to
    what (``token:12``, ``user:alice``), when. Plain strings, no foreign keys:
    the record outlives what it names."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    action: Mapped[str] = mapped_column(String(32), index=True)
    target: Mapped[str] = mapped_column(String(ACTOR_LENGTH), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key", name="uq_jobs_owner_idempotency"),
        # Keyset pagination newest first, alone and per owner or status.
        Index("ix_jobs_created_id", "created_at", "id"),
        Index("ix_jobs_owner_created_id", "owner_id", "created_at", "id"),
        Index("ix_jobs_status_created_id", "status", "created_at", "id"),
        # The dispatcher's queue scan.
        Index("ix_jobs_queue", "status", "priority", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_hash: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    error_message: Mapped[str | None] = mapped_column(Text)
    queue_reason: Mapped[str | None] = mapped_column(String(200))
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    event_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # Latest progress, denormalised so a status poll is one primary-key read.
    progress_cycle: Mapped[int | None] = mapped_column(Integer)
    progress_epoch: Mapped[int | None] = mapped_column(Integer)
    progress_sparsity: Mapped[float | None] = mapped_column(Float)
    best_accuracy: Mapped[float | None] = mapped_column(Float)
    # What a running job does while no epoch is reported (the Oracle's search).
    progress_note: Mapped[str | None] = mapped_column(String(NOTE_LENGTH))
    # What the job asks of the cluster (Ray resources; fractional GPUs share a card).
    cpus: Mapped[float] = mapped_column(Float, default=1.0, server_default="1")
    gpus: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    memory_gb: Mapped[float | None] = mapped_column(Float)
    # Jobs with the same dense identity can share one dense training (cycle 0).
    dense_identity: Mapped[str | None] = mapped_column(String(64), index=True)
    study_id: Mapped[int | None] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE", name="fk_jobs_study"), index=True
    )
    study_label: Mapped[str | None] = mapped_column(String(64))  # its schedule in the study
    # The spec's plan, stored at submit so that lists and polls read no spec: its
    # names and the planned cycles and epochs that progress and ETA are counted in.
    # NULL for a job whose spec could not be read when the columns were added.
    model: Mapped[str | None] = mapped_column(String(PLAN_NAME_LENGTH))
    dataset: Mapped[str | None] = mapped_column(String(PLAN_NAME_LENGTH))
    schedule: Mapped[str | None] = mapped_column(String(PLAN_NAME_LENGTH))
    planned_cycles: Mapped[int | None] = mapped_column(Integer)
    dense_epochs: Mapped[int | None] = mapped_column(Integer)
    epochs_per_cycle: Mapped[int | None] = mapped_column(Integer)

    owner: Mapped[User] = relationship()
    tags: Mapped[list[JobTag]] = relationship(
        cascade="all, delete-orphan", order_by="JobTag.tag", lazy="selectin"
    )


class Study(Base):
    """One base spec times a list of schedules times seeds; its members are jobs."""

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    base_spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    schedules: Mapped[list[Any]] = mapped_column(JSON)
    seeds: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    owner: Mapped[User] = relationship()


class JobTag(Base):
    __tablename__ = "job_tags"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class JobAttempt(Base):
    """One run of a job on a worker; its token is good for this attempt's reports only."""

    __tablename__ = "job_attempts"
    __table_args__ = (UniqueConstraint("job_id", "number", name="uq_attempts_job_number"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Indexed for fair share's window: the attempts ended lately (or running).
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)


class JobEvent(Base):
    """One epoch's progress. (job, attempt, cycle, epoch) is the idempotency key;
    ``seq`` is the job-wide cursor clients read after."""

    __tablename__ = "job_events"
    __table_args__ = (
        UniqueConstraint("job_id", "attempt", "cycle", "epoch", name="uq_events_key"),
        UniqueConstraint("job_id", "seq", name="uq_events_seq"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(Integer)
    cycle: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int] = mapped_column(Integer)
    epochs: Mapped[int] = mapped_column(Integer)
    lr: Mapped[float] = mapped_column(Float)
    max_lr: Mapped[float] = mapped_column(Float)
    train_loss: Mapped[float] = mapped_column(Float)
    train_accuracy: Mapped[float] = mapped_column(Float)
    val_loss: Mapped[float] = mapped_column(Float)
    val_accuracy: Mapped[float] = mapped_column(Float)
    sparsity: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    superseded: Mapped[bool] = mapped_column(Boolean, default=False)
    extras: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class CycleResultRow(Base):
    """The job's cycle table: one row per cycle, written by the attempt that finished it."""

    __tablename__ = "cycle_results"
    __table_args__ = (UniqueConstraint("job_id", "cycle", name="uq_cycles_job_cycle"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    cycle: Mapped[int] = mapped_column(Integer)
    sparsity: Mapped[float] = mapped_column(Float)
    alive_weights: Mapped[int] = mapped_column(BigInteger)
    max_lr: Mapped[float] = mapped_column(Float)
    best_epoch: Mapped[int] = mapped_column(Integer)
    best_val_accuracy: Mapped[float] = mapped_column(Float)
    test_accuracy_at_best_val: Mapped[float] = mapped_column(Float)
    final_val_accuracy: Mapped[float] = mapped_column(Float)
    final_test_accuracy: Mapped[float] = mapped_column(Float)
    seconds: Mapped[float] = mapped_column(Float)
    extras: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    size: Mapped[int] = mapped_column(BigInteger)
    checksum: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class UploadedFile(Base):
    """A file a user uploaded (POST /v1/files), e.g. a network's starting weights.
    The row is written once the file is complete under the artifact root."""

    __tablename__ = "files"
    __table_args__ = (Index("ix_files_owner_created_id", "owner_id", "created_at", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(FILE_NAME_LENGTH))  # as the uploader named it
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(Text)  # relative to the artifact root
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    owner: Mapped[User] = relationship()


class ClusterCapacity(Base):
    """The Ray cluster's size as a dispatcher last measured it (one row), so the
    API, which runs no Ray, can refuse a job that no node could ever hold."""

    __tablename__ = "cluster_capacity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    nodes: Mapped[int] = mapped_column(Integer)
    # A job's attempt runs on one node: its request is bounded by the largest one.
    largest_cpus: Mapped[float] = mapped_column(Float)
    largest_gpus: Mapped[float] = mapped_column(Float)
    largest_memory_gb: Mapped[float] = mapped_column(Float)
    total_cpus: Mapped[float] = mapped_column(Float)
    total_gpus: Mapped[float] = mapped_column(Float)
    total_memory_gb: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
