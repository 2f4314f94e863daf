"""The JSON the API reads and writes: an erasure request, the view of an erasure, and the error body.
Bodies are strict: unknown fields, wrong types and missing subjects are errors that name the field."""
from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, StringConstraints, model_validator

from .subjects import Subject

SubjectId = Annotated[StrictStr, StringConstraints(min_length=1, max_length=256)]
def _no_default(schema: dict) -> None:
    schema.pop("default", None)


Status = Literal["pending", "in_progress", "completed", "failed", "cancelled"]


class ErasureRequest(BaseModel):
    """Exactly one of `user`, `item` or `pairs`, in the dataset's original ids."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "oneOf": [{"required": ["user"]}, {"required": ["item"]}, {"required": ["pairs"]}],
        "examples": [{"user": "123"}, {"item": "50", "reason": "licence take-down"},
                     {"pairs": [["123", "50"]], "subject_request_id": "7f0c5f9e-4d0b-4c9a-9a53-3f1b2b3c4d5e"}]})

    # absent, or a value: an explicit null is an error (so that the schema's oneOf says what is accepted)
    user: SubjectId = Field(None, description="erase all of this user's interactions", json_schema_extra=_no_default)
    item: SubjectId = Field(None, description="erase all interactions with this item (a take-down)",
                            json_schema_extra=_no_default)
    pairs: list[tuple[SubjectId, SubjectId]] = Field(
        None, min_length=1, description="erase these (user, item) interactions", json_schema_extra=_no_default)
    reason: Optional[StrictStr] = Field(None, max_length=2000, description="why, in the caller's words (kept)")
    subject_request_id: Optional[uuid.UUID] = Field(
        None, description="the caller's id of the data subject's request; doubles as the idempotency key")
    suppress_only: StrictBool = Field(False, description="accept ids the served data does not know: they are added "
                                "to the suppression list only (known ids are still erased)")

    @model_validator(mode="after")
    def _one_subject(self) -> "ErasureRequest":
        given = [name for name in ("user", "item", "pairs") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of user, item or pairs" + (f" (got {', '.join(given)})" if given
                                                                           else ""))
        return self

    def subject(self) -> Subject:
        if self.pairs is not None:
            return Subject("pairs", tuple(tuple(p) for p in self.pairs))
        return Subject("user", (self.user,)) if self.user is not None else Subject("item", (self.item,))

    def sha256(self) -> str:
        """SHA-256 of the canonical body: the same request written differently (key order, spacing, a default
        spelled out) has the same hash."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()


class SubjectView(BaseModel):
    kind: Literal["user", "item", "pairs"]
    ids: Union[list[str], list[tuple[str, str]]]


class ErasedEdges(BaseModel):
    count: int
    sha256: Optional[str]


class ErasureView(BaseModel):
    """An erasure as the ledger holds it now."""

    id: uuid.UUID
    status: Status
    subject: SubjectView
    suppression_only: bool = Field(description="no served data knew the subject: it was added to the "
                                   "suppression list and no model needed to change")
    reason: Optional[str]
    subject_request_id: Optional[uuid.UUID]
    received_at: datetime
    expected_completion: Optional[datetime]
    started_at: Optional[datetime]
    completed_at: Optional[datetime]
    model_version: Optional[int] = Field(description="the first published model version that excludes it")
    erased_edges: Optional[ErasedEdges]
    error: Optional[str]
    receipt_url: Optional[str] = Field(description="the signed receipt, once there is one")


class Problem(BaseModel):
    """Every error answer: `detail` names the problem; some add the fields below."""

    detail: str
    errors: Optional[list[dict]] = Field(None, description="each invalid field: loc, msg, type")
    unknown: Optional[list] = Field(None, description="the ids (or pairs) the served data does not know")
    erasure_id: Optional[uuid.UUID] = Field(None, description="the erasure that already holds this key")
