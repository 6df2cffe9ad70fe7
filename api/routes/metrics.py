"""Metric ingest (batched, idempotent) and series reads."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import StoreDep, UserDep
from api.routes.runs import RunIdPath, check_readable, missing
from api.schemas import (
    MAX_BATCH_POINTS,
    METRIC_BATCH,
    IngestResult,
    MetricBatch,
    MetricKey,
    MetricPointIn,
    Series,
)
from service.auth import Principal
from service.db import FINAL_STATUSES
from service.metrics import from_json, to_json
from service.store import RunRef, Store

router = APIRouter(tags=["metrics"])


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema with its `$defs` written in place, as an OpenAPI operation needs."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {name: resolve(value) for name, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _inline_refs(METRIC_BATCH.json_schema())}},
    }
}


@router.post("/runs/{run_id}/metrics", response_model=IngestResult, openapi_extra=_BATCH_BODY)
async def ingest(run_id: RunIdPath, request: Request, user: UserDep) -> IngestResult:
    """Store a batch of points; a (key, step) already stored for the attempt is ignored.

    Workers (the service token), the run's owner and admins may report. The body is a
    MetricBatch, validated from its bytes in one pass; the database work runs in a thread.
    """
    batch = _parse_batch(await request.body())
    points = batch["points"]
    if len(points) > MAX_BATCH_POINTS:
        raise HTTPException(
            413,
            f"batch has {len(points)} points; the limit is {MAX_BATCH_POINTS} (MAX_BATCH_POINTS)",
        )
    store: Store = request.app.state.store
    stored = await run_in_threadpool(_store_batch, store, run_id, batch["attempt"], points, user)
    return IngestResult(stored=stored, received=len(points))


def _parse_batch(body: bytes) -> MetricBatch:
    """The batch, or 422 with FastAPI's usual error list (locations start at "body")."""
    try:
        return METRIC_BATCH.validate_json(body)
    except ValidationError as error:
        errors = [
            {**problem, "loc": ("body", *problem["loc"]), "input": _printable(problem["input"])}
            for problem in error.errors(include_url=False)
        ]
        raise RequestValidationError(errors) from None


def _printable(value: Any) -> Any:
    """An error's echoed input; raw bytes that are not UTF-8 would break the JSON answer."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _store_batch(
    store: Store, run_id: int, attempt: int, points: list[MetricPointIn], user: Principal
) -> int:
    run = store.find_run(run_id)
    if run is None or not user.may_read(run.user_id, run.visibility):
        raise missing(run_id)
    if user.role != "service" and not user.may_change(run.user_id):
        raise HTTPException(403, f"user {user.name!r} may not report metrics of run {run_id}")
    _check_reportable(run, attempt, user)
    # Plain (key, step, value) tuples: PointIn's shape without a constructor call per point.
    values = [(p["key"], p["step"], from_json(p["value"])) for p in points]
    return store.ingest(run_id, attempt, values)


def _check_reportable(run: RunRef, attempt: int, user: Principal) -> None:
    """409 for points that would rewrite history: an attempt the run never had (once it has
    started), or a run that has ended, unless they come from its worker (whose last flush
    may cross the run's end, e.g. a cancel)."""
    if run.attempt >= 1 and attempt > run.attempt:
        raise HTTPException(
            409, f"run {run.id} has no attempt {attempt}: its latest attempt is {run.attempt}"
        )
    if run.status in FINAL_STATUSES and user.role != "service":
        raise HTTPException(
            409,
            f"run {run.id} has ended ({run.status.value}); its metrics can no longer change",
        )


@router.get("/runs/{run_id}/metrics", response_model=list[str])
def metric_keys(run_id: RunIdPath, store: StoreDep, user: UserDep) -> list[str]:
    """The metric keys a run has reported."""
    check_readable(store, run_id, user)
    return store.metric_keys(run_id)


@router.get("/runs/{run_id}/metrics/{key:path}", response_model=Series)
def read_series(
    run_id: RunIdPath,
    key: MetricKey,
    store: StoreDep,
    user: UserDep,
    max_points: Annotated[int, Query(ge=2, le=100_000)] = 1000,
) -> Series:
    """One metric's series, downsampled to at most `max_points`."""
    check_readable(store, run_id, user)
    points = store.series(run_id, key, max_points)
    return Series(key=key, steps=[s for s, _ in points], values=[to_json(v) for _, v in points])
