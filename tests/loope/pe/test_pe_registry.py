"""Every registry entry, on its own: declarations, output shapes, finiteness, other grids.

Parametrised over PE_REGISTRY, so a new PE is covered as soon as it is registered.
Letters: B batch, N patches, T = 1 + N tokens, D width, heads, Dh head width.
"""

from __future__ import annotations

import pytest
import torch

from loope.pe import (
    PE_REGISTRY,
    AdditivePE,
    AttentionBiasPE,
    ConditionalPE,
    PositionalEmbedding,
    RotaryPE,
    build_pe,
    patch_embedding_grid,
)

DIM, HEADS, DEPTH, PATCH = 16, 2, 2, 4
GRID = (3, 5)  # non-square on purpose
OTHER_GRIDS = [(4, 4), (2, 7), (3, 5)]
NAMES = list(PE_REGISTRY)


def make(name: str, grid: tuple[int, int] = GRID) -> PositionalEmbedding:
    torch.manual_seed(0)
    return build_pe(name, DIM, grid, PATCH, num_heads=HEADS, depth=DEPTH)


def images(batch: int, grid: tuple[int, int]) -> torch.Tensor:
    return torch.randn(batch, 3, grid[0] * PATCH, grid[1] * PATCH)


@pytest.mark.parametrize("name", NAMES)
def test_entry_declares_itself(name: str) -> None:
    pe = make(name)
    info = PE_REGISTRY[name].info
    assert pe.info == info
    kind_class = {
        "none": AdditivePE,
        "additive": AdditivePE,
        "attention-bias": AttentionBiasPE,
        "rotary": RotaryPE,
        "conditional": ConditionalPE,
    }[info.kind]
    assert isinstance(pe, kind_class)
    parameters = dict(pe.named_parameters())
    assert info.trainable == bool(parameters)
    assert pe.no_weight_decay() <= set(parameters), "exemptions must name real parameters"


@pytest.mark.parametrize("name", NAMES)
def test_derived_tensors_stay_out_of_checkpoints(name: str) -> None:
    pe = make(name)
    extra = set(pe.state_dict()) - {n for n, _ in pe.named_parameters()}
    running_stats = ("running_mean", "running_var", "num_batches_tracked")
    assert all(n.endswith(running_stats) for n in extra), f"persistent derived tensors: {extra}"


@pytest.mark.parametrize("grid", OTHER_GRIDS)
@pytest.mark.parametrize("name", NAMES)
def test_output_shape_dtype_finite(name: str, grid: tuple[int, int]) -> None:
    pe = make(name)
    N, B = grid[0] * grid[1], 2
    if isinstance(pe, AdditivePE):
        out = pe(grid, images(B, grid) if pe.info.image_conditioned else None)
        for tensor, rows in ((out.patch, N), (out.cls, 1)):
            if tensor is not None:
                assert tensor.shape[0] in (1, B) and tensor.shape[1:] == (rows, DIM)
                assert tensor.is_floating_point() and torch.isfinite(tensor).all()
        assert (out.patch is None) == (pe.info.kind == "none")
        assert (out.cls is None) == (pe.info.cls_policy == "none")
    elif isinstance(pe, AttentionBiasPE):
        bias = pe(grid)
        assert bias.shape == (HEADS, N, N) and bias.dtype == torch.float32
        assert torch.isfinite(bias).all()
    elif isinstance(pe, RotaryPE):
        angles = pe(grid)
        assert angles.shape[0] in (1, DEPTH) and angles.shape[1] in (1, HEADS)
        assert angles.shape[2:] == (N, DIM // HEADS // 2) and angles.dtype == torch.float32
        assert torch.isfinite(angles).all()
    else:
        tokens = torch.randn(B, 1 + N, DIM)
        out = pe(tokens, grid, 1)
        assert out.shape == tokens.shape and out.dtype == tokens.dtype
        assert torch.isfinite(out).all()
        assert torch.equal(out[:, 0], tokens[:, 0]), "the class token bypasses the PE"


@pytest.mark.parametrize("name", NAMES)
def test_patch_embedding_grid_or_clear_refusal(name: str) -> None:
    pe = make(name)
    if pe.info.kind == "additive":
        grid = patch_embedding_grid(pe, (4, 6))
        assert grid.shape == (4, 6, DIM) and not grid.requires_grad
    else:
        with pytest.raises(ValueError, match="no embedding per patch"):
            patch_embedding_grid(pe, (4, 6))


def test_unknown_name_lists_the_catalogue() -> None:
    with pytest.raises(ValueError, match="unknown PE 'sinusoid'.*rope-mixed"):
        build_pe("sinusoid", DIM, GRID, PATCH)


def test_pinned_options_cannot_be_overridden() -> None:
    with pytest.raises(ValueError, match="fixes order"):
        build_pe("hilbert-pe", DIM, GRID, PATCH, order="raster")


@pytest.mark.parametrize(
    ("name", "dim", "heads", "message"),
    [
        ("sinusoid-2d", 18, 1, "dim divisible by 4.*dim=18"),
        ("rope-axial", 24, 4, "head width divisible by 4.*head_dim=6"),
        ("rope-mixed", 24, 4, "head width divisible by 4.*head_dim=6"),
        ("rpe", 16, 3, "num_heads=3 must be >= 1 and divide dim=16"),
    ],
)
def test_widths_are_validated_with_the_rule(name: str, dim: int, heads: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_pe(name, dim, GRID, PATCH, num_heads=heads)


def test_an_order_undefined_on_the_grid_is_a_clear_error() -> None:
    pe = build_pe("sinusoid-1d", DIM, (4, 4), PATCH, order="hilbert")
    assert pe((2, 2)).patch.shape == (1, 4, DIM)
    with pytest.raises(ValueError, match="2\\^k x 2\\^k"):
        pe(GRID)
