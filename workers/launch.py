"""The Ray task every attempt runs in: it calls the attempt body the dispatcher chose.

Kept apart from the dispatcher and the runner so that a Ray worker imports only what the
body itself needs (an idle body does not pay for importing torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def run_body(body: Callable[..., Any], *args: Any) -> Any:
    """Call `body(api_url, run_id, attempt, spec_body, seed, workdir, lease_interval_s, token)`."""
    return body(*args)
