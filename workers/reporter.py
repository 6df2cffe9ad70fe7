"""Sends a run's metrics to the API in batches, retrying while the API is briefly away."""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

log = logging.getLogger(__name__)


class ApiClient:
    """The worker's side of the REST API: every call retried with back-off for `patience_s`."""

    def __init__(self, api_url: str, token: str | None = None, patience_s: float = 120.0) -> None:
        self.api_url, self.token = api_url, token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=f"{api_url}/api/v1", headers=headers, timeout=30)
        self.patience_s = patience_s

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        deadline, delay = time.monotonic() + self.patience_s, 0.2
        while True:
            try:
                response = self.http.post(path, json=body)
                if response.status_code < 500:
                    return response
                problem = f"HTTP {response.status_code}"
            except httpx.TransportError as error:
                problem = repr(error)
            if time.monotonic() > deadline:
                raise ConnectionError(f"API unreachable for {self.patience_s:.0f} s: {problem}")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def close(self) -> None:
        self.http.close()


@dataclass(frozen=True)
class ReportTarget:
    """Where an attempt's metrics go; picklable, so another process can report for it."""

    api_url: str
    run_id: int
    attempt: int
    token: str | None = None

    def open(self) -> MetricReporter:
        return MetricReporter(ApiClient(self.api_url, self.token), self.run_id, self.attempt)


class MetricReporter:
    """Buffers metric points of one attempt and flushes them every `interval_s` or on close."""

    def __init__(self, client: ApiClient, run_id: int, attempt: int, interval_s: float = 1.0):
        self.client = client
        self.run_id = run_id
        self.attempt = attempt
        self.interval_s = interval_s
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._last_flush = time.monotonic()

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        with self._lock:
            self._buffer += [
                {"key": key, "step": step, "value": _json_value(value)}
                for key, value in metrics.items()
            ]
        # An epoch's last report comes just before its checkpoint is written: flush it now,
        # so a worker killed after the checkpoint never leaves that epoch's points unsent.
        if "epoch" in metrics or time.monotonic() - self._last_flush >= self.interval_s:
            self.flush()

    def target(self) -> ReportTarget:
        return ReportTarget(self.client.api_url, self.run_id, self.attempt, self.client.token)

    def flush(self) -> None:
        with self._lock:
            points, self._buffer = self._buffer, []
        self._last_flush = time.monotonic()
        if not points:
            return
        body = {"attempt": self.attempt, "points": points}
        response = self.client.post(f"/runs/{self.run_id}/metrics", body)
        if response.status_code >= 400:
            log.warning("metrics refused for run %d: %s", self.run_id, response.text[:500])


def _json_value(value: float) -> float | str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return float(value)
