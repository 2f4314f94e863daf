"""The service's settings: where its state lives, which database holds the ledger, whether tokens are
required, and the unlearning policy. Loadable from YAML (`load_settings`); unknown keys are errors."""
from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Optional

from pydantic import Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from ..config import StrictConfig, load_config
from ..train.config import TrainConfig
from .subjects import SubjectResolver

MIB = 1 << 20


class Policy(StrictConfig):
    """When and how acknowledged erasures reach a published model (service.md, "Unlearning policy")."""

    method: str = Field("unlearnrec", description="registered unlearner applied to each micro-batch")
    batch_window_s: float = Field(1.0, gt=0, description="seconds the worker gathers erasures into one batch")
    batch_size: int = Field(64, ge=1, description="most erasures applied in one micro-batch")
    batch_apply_s: float = Field(30.0, gt=0, description="expected seconds to apply one micro-batch and publish "
                                 "its model version (the basis of expected_completion)")
    finetune_every: int = Field(100, ge=1, description="fine-tune after this many applied erasures")
    evidence_test_users: Optional[int] = Field(2000, ge=1, description="test users (a seeded sample per batch) "
                                               "on which a receipt's test metrics before and after are measured; "
                                               "null: all of them")
    finetune_interval_h: float = Field(24.0, gt=0, description="or after this many hours")
    retrain_interval_h: float = Field(168.0, gt=0, description="full retrain (suppression list applied) every "
                                      "this many hours")
    finetune_epochs: int = Field(5, ge=1, description="epochs of the backbone's training in a scheduled fine-tune")
    finetune_lr: Optional[float] = Field(None, gt=0, description="its learning rate (default: the model's own)")
    device: Optional[str] = Field(None, description="where the service trains (scheduled fine-tunes and retrains, "
                                  "and the methods that train: Retrain, Fine-tune, shard sub-models): cpu, cuda or "
                                  "cuda:N; default: where the checkpoint was trained")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: Optional[str]) -> Optional[str]:
        return value if value is None else TrainConfig(device=value).device

    def expected_completion(self, received_at: datetime, queue_ahead: int) -> datetime:
        """When an erasure received now, behind `queue_ahead` erasures still waiting for a model, should be in
        a published model: one batch window and one application per micro-batch up to and including its own."""
        batches = math.floor(queue_ahead / self.batch_size) + 1
        return received_at + timedelta(seconds=batches * (self.batch_window_s + self.batch_apply_s))


class ServiceSettings(StrictConfig):
    """Settings of one service instance (API and, later, its worker)."""

    state_dir: Path = Field(Path("service-state"), description="folder for the service's own files (the SQLite "
                            "ledger by default, later the signing key and published models)")
    database_url: Optional[str] = Field(None, description="SQLAlchemy URL of the ledger; default: an SQLite "
                                        "file ledger.sqlite3 in state_dir")
    require_tokens: bool = Field(True, description="answer only requests with a valid bearer token (turn off "
                                 "for local experiments only)")
    max_body_bytes: int = Field(MIB, ge=1024, description="largest request body accepted (413 above)")
    policy: Policy = Field(default_factory=Policy)
    checkpoint: Optional[Path] = Field(None, description="the trained (and, for methods that need it, prepared) "
                                       "checkpoint that is the first published version (the worker needs it)")
    method_settings: list[str] = Field(default_factory=list, description="`key=value` settings of the unlearner")
    # Plugged in by code (serve, the worker, tests), never read from a file: see subjects.py.
    subject_resolver: SkipJsonSchema[Optional[SubjectResolver]] = Field(None, exclude=True)

    def ledger_url(self) -> str:
        """The database URL of the ledger, with the default resolved."""
        return self.database_url or f"sqlite:///{(self.state_dir / 'ledger.sqlite3').resolve()}"


def load_settings(file: str | Path | None = None, overrides: list[str] | None = None) -> ServiceSettings:
    """Settings from defaults, then a YAML file, then `key=value` overrides; a bad key or value is a
    ConfigError that names it."""
    return load_config(ServiceSettings, file, overrides)
