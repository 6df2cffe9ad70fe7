"""Request and response bodies of the REST API (version 1)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_SEEDS = 1000
MAX_BATCH_POINTS = 10_000
MAX_SWEEP_CELLS = 10_000

JsonNumber = float | Literal["nan", "+inf", "-inf"]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitSpec(Body):
    """One spec run with each of `seeds`."""

    spec: dict[str, Any]
    seeds: list[int] = Field(default=[0], min_length=1, max_length=MAX_SEEDS)
    priority: int = Field(default=0, ge=-1000, le=1000)
    policy: Literal["reuse", "skip", "force-new"] = "reuse"


class SubmitSweep(Body):
    """A grid: every combination of the `axes` values applied to `base`, times `seeds`.

    Axes are dotted spec paths, e.g. {"pe.name": ["none", "loope"], "train.lr": [1e-3]}.
    """

    name: str | None = Field(default=None, max_length=200)
    base: dict[str, Any]
    axes: dict[str, list[Any]] = Field(default_factory=dict, max_length=16)
    seeds: list[int] = Field(default=[0], min_length=1, max_length=MAX_SEEDS)
    priority: int = Field(default=0, ge=-1000, le=1000)
    policy: Literal["reuse", "skip", "force-new"] = "reuse"


class Submission(BaseModel):
    created: list[int]
    reused: list[int]
    skipped: list[int]
    sweep_id: int | None = None
    policy: str


class AttemptOut(BaseModel):
    number: int
    node: str | None
    resumed_from_epoch: int | None
    exit_reason: str | None
    started_at: dt.datetime
    ended_at: dt.datetime | None


class RunOut(BaseModel):
    id: int
    spec_hash: str
    sweep_id: int | None
    seed: int
    status: str
    priority: int
    pe: str
    arch: str
    dataset: str
    attempt: int
    failure_kind: str | None
    failure_reason: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    spec: dict[str, Any] | None = None
    summary: dict[str, JsonNumber] | None = None
    attempts: list[AttemptOut] | None = None


class RunPage(BaseModel):
    runs: list[RunOut]
    next_cursor: int | None


class MetricPointIn(Body):
    key: str = Field(min_length=1, max_length=200)
    step: int = Field(ge=0)
    value: JsonNumber


class MetricBatch(Body):
    attempt: int = Field(ge=1)
    points: list[MetricPointIn] = Field(max_length=MAX_BATCH_POINTS)


class IngestResult(BaseModel):
    stored: int
    received: int


class Series(BaseModel):
    key: str
    steps: list[int]
    values: list[JsonNumber]


class AttemptStarted(Body):
    attempt: int = Field(ge=1)
    node: str | None = Field(default=None, max_length=200)
    resumed_from_epoch: int | None = None


class AttemptFinished(Body):
    attempt: int = Field(ge=1)
    outcome: Literal["succeeded", "failed", "diverged"]
    failure_kind: str | None = Field(default=None, max_length=32)
    reason: str | None = Field(default=None, max_length=20_000)


class StatisticOut(BaseModel):
    mean: JsonNumber
    std: JsonNumber
    n: int
    ci95: tuple[JsonNumber, JsonNumber]


class GroupOut(BaseModel):
    key: dict[str, Any]
    runs: list[int]
    diverged: int
    failed: int
    metrics: dict[str, StatisticOut]
    baseline: dict[str, JsonNumber]


class Comparison(BaseModel):
    group_by: list[str]
    metric_prefix: str
    groups: list[GroupOut]
