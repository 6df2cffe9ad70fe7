"""How the dispatcher names the loss of a worker from Ray's error message."""

from __future__ import annotations

import pytest

from service.db import FailureKind
from service.dispatcher import lost_worker_kind

NODE_DIED = (
    "Task failed because the node it was running on is dead or unavailable. Node IP: "
    "127.0.0.1, node ID: 6f1c. This can happen if the node was preempted, had a hardware "
    "failure, or its raylet crashed unexpectedly."
)


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (NODE_DIED, FailureKind.INFRA_LOST),
        ("The worker died unexpectedly while executing this task.", FailureKind.INFRA_LOST),
        ("Task 9a2b failed due to node preemption on node 6f1c.", FailureKind.PREEMPTED),
        ("Actor died by preemption.", FailureKind.PREEMPTED),
        ("node death reason: AUTOSCALER_DRAIN_PREEMPTED", FailureKind.PREEMPTED),
    ],
)
def test_only_ray_s_preemption_reasons_count_as_preemption(message: str, kind: FailureKind) -> None:
    assert lost_worker_kind(message) == kind
