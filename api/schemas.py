"""Request and response bodies of the REST API (version 1)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import TypedDict

MAX_SEEDS = 1000
MAX_BATCH_POINTS = 10_000
MAX_SWEEP_CELLS = 10_000
MAX_DB_INT = 2**31 - 1  # PostgreSQL's INTEGER; larger ids, seeds and steps are refused

JsonNumber = float | Literal["nan", "+inf", "-inf"]
DbInt = Annotated[int, Field(ge=0, le=MAX_DB_INT)]
Seed = Annotated[int, Field(ge=0, le=MAX_DB_INT)]
# Names and keys may hold any Unicode text except control characters (NUL included, which
# PostgreSQL cannot store).
NO_CONTROL = r"^[^\x00-\x1f\x7f]+$"
MetricKey = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_CONTROL)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubmitSpec(Body):
    """One spec run with each of `seeds`."""

    spec: dict[str, Any]
    seeds: list[Seed] = Field(default=[0], min_length=1, max_length=MAX_SEEDS)
    priority: int = Field(default=0, ge=-1000, le=1000)
    policy: Literal["reuse", "skip", "force-new"] = "reuse"
    visibility: Literal["team", "private"] = Field(
        default="team",
        description="who may read the new runs: the whole team, or (private) only the caller "
        "and admins; with auth off every run is readable",
    )
    sweep_id: int | None = Field(
        default=None,
        ge=1,
        le=MAX_DB_INT,
        description="fill this sweep: the runs (new, reused or skipped) become its cells; the "
        "spec must be one of the sweep's cells",
    )


class SubmitSweep(Body):
    """A grid: every combination of the `axes` values applied to `base`, times `seeds`.

    Axes are dotted spec paths, e.g. {"pe.name": ["none", "loope"], "train.lr": [1e-3]}.
    """

    name: str | None = Field(default=None, max_length=200, pattern=NO_CONTROL)
    base: dict[str, Any]
    axes: dict[str, list[Any]] = Field(default_factory=dict, max_length=16)
    seeds: list[Seed] = Field(default=[0], min_length=1, max_length=MAX_SEEDS)
    priority: int = Field(default=0, ge=-1000, le=1000)
    policy: Literal["reuse", "skip", "force-new"] = "reuse"
    visibility: Literal["team", "private"] = Field(
        default="team",
        description="who may read the new runs: the whole team, or (private) only the caller "
        "and admins; with auth off every run is readable",
    )


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
    sweep_id: int | None = Field(
        description="the sweep whose submission created the run; a run is also a cell of every "
        "sweep that reused it (GET /runs?sweep_id= lists a sweep's cells)"
    )
    seed: int
    status: str
    priority: int
    pe: str
    arch: str
    dataset: str
    attempt: int
    owner: str | None = None
    visibility: Literal["team", "private"] = "team"
    failure_kind: str | None
    failure_reason: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    spec: dict[str, Any] | None = None
    resources: dict[str, float | int] | None = Field(
        default=None, description="what the run asks of the cluster (not part of its spec hash)"
    )
    summary: dict[str, JsonNumber] | None = None
    attempts: list[AttemptOut] | None = None


class RunPage(BaseModel):
    runs: list[RunOut]
    next_cursor: int | None


# The batch is made of typed dicts, not models: thousands of points are validated straight
# from the request's bytes in one pass (METRIC_BATCH), without an object per point.
@with_config(ConfigDict(extra="forbid"))
class MetricPointIn(TypedDict):
    key: MetricKey
    step: DbInt
    value: JsonNumber


@with_config(ConfigDict(extra="forbid"))
class MetricBatch(TypedDict):
    """Points of one attempt; more than MAX_BATCH_POINTS is refused with 413."""

    attempt: Annotated[int, Field(ge=1, le=MAX_DB_INT)]
    points: list[MetricPointIn]


METRIC_BATCH = TypeAdapter(MetricBatch)


class IngestResult(BaseModel):
    stored: int
    received: int


class Series(BaseModel):
    key: str
    steps: list[int]
    values: list[JsonNumber]


class AttemptStarted(Body):
    attempt: int = Field(ge=1, le=MAX_DB_INT)
    node: str | None = Field(default=None, max_length=200)
    resumed_from_epoch: int | None = Field(default=None, ge=0, le=MAX_DB_INT)


class AttemptFinished(Body):
    attempt: int = Field(ge=1, le=MAX_DB_INT)
    outcome: Literal["succeeded", "failed", "diverged"]
    failure_kind: str | None = Field(default=None, max_length=32)
    reason: str | None = Field(default=None, max_length=20_000)


class StatisticOut(BaseModel):
    mean: JsonNumber
    std: JsonNumber
    n: int
    ci95: tuple[JsonNumber, JsonNumber]


class PairedTestOut(BaseModel):
    """A paired t-test of a group against the baseline PE over the seeds both ran."""

    baseline: dict[str, Any]
    pairs: int
    mean_difference: JsonNumber | None
    p_value: JsonNumber | None
    p_holm: JsonNumber | None
    verdict: Literal["significant", "not significant", "no test"]
    reason: str | None = None


class GroupOut(BaseModel):
    key: dict[str, Any]
    runs: list[int]
    diverged: int
    failed: int
    metrics: dict[str, StatisticOut]
    baseline: dict[str, JsonNumber]
    tests: dict[str, PairedTestOut] = Field(default_factory=dict)


class Comparison(BaseModel):
    group_by: list[str]
    metric_prefix: str
    baseline_pe: str | None = None
    alpha: float = 0.05
    groups: list[GroupOut]


class ArtifactIn(Body):
    """A file an attempt wrote to the artifact store."""

    attempt: int = Field(ge=1, le=MAX_DB_INT)
    kind: Literal["checkpoint", "plot", "pe-map", "log", "other"]
    uri: str = Field(min_length=1, max_length=2000, pattern=NO_CONTROL)
    size_bytes: int | None = Field(default=None, ge=0, le=2**62)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")


class ArtifactOut(BaseModel):
    id: int
    run_id: int
    attempt: int
    kind: str
    uri: str
    size_bytes: int | None
    sha256: str | None
    created_at: dt.datetime


class UserIn(Body):
    name: str = Field(
        min_length=1,
        max_length=200,
        pattern=NO_CONTROL,
        description="1 to 64 ASCII letters, digits, '.', '_', '@' or '-', starting with a letter "
        "or digit (checked by the server; other names get 422)",
    )
    admin: bool = False


class UserOut(BaseModel):
    id: int | None
    name: str
    role: str


class UserCreated(UserOut):
    """The new user's token, shown this once; only its hash is stored."""

    token: str
