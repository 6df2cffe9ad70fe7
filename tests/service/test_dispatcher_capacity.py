"""The dispatcher's capacity model: per-GPU packing of shares, whole GPUs, CPUs, memory."""

from __future__ import annotations

from loope.spec import ResourceSpec
from service.dispatcher import NodeCapacity, fits_when_idle, place, release


def _node(name: str = "a", gpus: int = 1, cpus: float = 8, memory_gb: float = 64) -> NodeCapacity:
    return NodeCapacity(name, cpus, memory_gb, [1.0] * gpus)


def test_two_halves_share_one_gpu_but_two_three_quarters_do_not() -> None:
    half, three_quarters = ResourceSpec(gpus=0.5), ResourceSpec(gpus=0.75)
    node = _node(gpus=1)
    assert node.place(half) == [(0, 0.5)]
    assert node.place(half) == [(0, 0.5)]
    assert node.place(half) is None
    node = _node(gpus=1)
    assert node.place(three_quarters) is not None
    assert node.place(three_quarters) is None


def test_a_share_goes_to_the_tightest_gpu_so_a_whole_gpu_stays_free() -> None:
    node = _node(gpus=2)
    node.place(ResourceSpec(gpus=0.5))
    assert node.place(ResourceSpec(gpus=0.25)) == [(0, 0.25)]
    assert node.place(ResourceSpec(gpus=1)) == [(1, 1.0)]


def test_whole_gpus_must_be_entirely_free_on_one_node() -> None:
    node = _node(gpus=2)
    node.place(ResourceSpec(gpus=0.25))
    assert node.place(ResourceSpec(gpus=2)) is None
    assert node.place(ResourceSpec(gpus=1)) == [(1, 1.0)]


def test_cpus_and_memory_limit_a_node() -> None:
    node = _node(gpus=0, cpus=2, memory_gb=10)
    assert node.place(ResourceSpec(cpus=1, memory_gb=6)) is not None
    assert node.place(ResourceSpec(cpus=1, memory_gb=6)) is None
    assert node.place(ResourceSpec(cpus=1, memory_gb=4)) is not None
    assert node.place(ResourceSpec(cpus=0.5)) is None


def test_data_parallel_workers_are_placed_all_or_none() -> None:
    nodes = {"a": _node("a", gpus=1), "b": _node("b", gpus=1)}
    two = place(nodes, ResourceSpec(gpus=1, workers=2))
    assert two is not None and sorted(n for n, _ in two.workers) == ["a", "b"]
    assert place(nodes, ResourceSpec(gpus=0.5)) is None
    release(nodes, two)
    assert place(nodes, ResourceSpec(gpus=1, workers=3)) is None
    assert nodes["a"].gpus == [1.0] and nodes["b"].gpus == [1.0]


def test_a_run_larger_than_the_idle_cluster_is_told_apart_from_one_that_waits() -> None:
    totals = {"a": _node("a", gpus=4), "b": _node("b", gpus=2)}
    assert fits_when_idle(totals, ResourceSpec(gpus=4))
    assert fits_when_idle(totals, ResourceSpec(gpus=2, workers=3))  # two on a, one on b
    assert not fits_when_idle(totals, ResourceSpec(gpus=64))
    assert not fits_when_idle(totals, ResourceSpec(gpus=4, workers=2))
    assert not fits_when_idle(totals, ResourceSpec(cpus=9))
    assert totals["a"].gpus == [1.0] * 4, "the totals themselves are not reserved"
