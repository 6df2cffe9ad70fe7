"""The worker's lease: a thread that renews it every interval while the attempt runs.

When the service answers that the attempt is no longer current (it was declared lost, or
the run was cancelled or requeued), the worker must stop at once, so that a run never has
two live attempts; by default the process exits.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import httpx

log = logging.getLogger(__name__)

LOST_EXIT_CODE = 75


def exit_now() -> None:
    """Leave the worker process immediately; Ray sees the attempt's worker exit."""
    os._exit(LOST_EXIT_CODE)


class LeaseKeeper:
    """Renews the lease of one attempt every `interval_s` in a daemon thread.

    A renewal that fails to reach the API is skipped (the next one may succeed); a refusal
    (HTTP 409 or 404) calls `on_lost`.
    """

    def __init__(
        self,
        api_url: str,
        run_id: int,
        attempt: int,
        interval_s: float,
        token: str | None = None,
        on_lost: Callable[[], None] = exit_now,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        timeout = max(1.0, interval_s)
        self.http = httpx.Client(base_url=f"{api_url}/api/v1", headers=headers, timeout=timeout)
        self.path = f"/runs/{run_id}/heartbeat"
        self.body = {"attempt": attempt, "interval_s": interval_s}
        self.interval_s = interval_s
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_forever, name="lease", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self.renew()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5)
        self.http.close()

    def renew(self) -> bool:
        """Renew once; False when the service refused the attempt (and `on_lost` ran)."""
        try:
            response = self.http.post(self.path, json=self.body)
        except httpx.TransportError as error:
            log.warning("heartbeat did not reach the API: %r", error)
            return True
        if response.status_code in (404, 409):
            log.warning("the service dropped this attempt (%s); stopping", response.text[:200])
            self.on_lost()
            return False
        return True

    def _renew_forever(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self.renew():
                return
