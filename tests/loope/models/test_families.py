"""Every PE on every architecture family, at the tiny size on a non-square image.

Parametrised over `FAMILIES` × `PE_REGISTRY`, so a new family or PE is covered as soon as
it is registered. A pair a family declares unsupported must be refused with its reason.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from loope.models import FAMILIES, build_model, supports
from loope.pe import PE_REGISTRY, PositionalEmbedding
from loope.spec import TrainSpec
from loope.train import build_optimizer

IMAGE = (16, 24)  # 4x6 patches of 4 px (CrossViT's large branch: 2x3 of 8 px)
NARROW = {  # narrower than the tiny presets, so that the whole matrix runs in CPU seconds
    "cait": dict(embed_dim=32, depth=2, num_heads=2),
    "crossvit": dict(embed_dim=(16, 32), depth=((1, 1, 0),), num_heads=(2, 2)),
    "swin": dict(embed_dim=16, depths=(1, 1), num_heads=(2, 2), window_size=2),
}
PAIRS = [(arch, pe) for arch in FAMILIES for pe in PE_REGISTRY]
SUPPORTED = [pair for pair in PAIRS if supports(*pair) is None]
UNSUPPORTED = [pair for pair in PAIRS if supports(*pair) is not None]
HOST_POSITION = ("pos_embed", "relative_position_bias_table")


def tiny(arch: str, pe: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    narrow = NARROW.get(arch, dict(embed_dim=32, depth=2, num_heads=2))
    return build_model(
        arch, "tiny", pe, img_size=IMAGE, patch_size=4, num_classes=3, host_overrides=narrow
    )


def images(size: tuple[int, int] = IMAGE) -> torch.Tensor:
    return torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))


def pe_modules(model: nn.Module) -> dict[str, PositionalEmbedding]:
    return {n: m for n, m in model.named_modules() if isinstance(m, PositionalEmbedding)}


@pytest.mark.parametrize(("arch", "pe"), SUPPORTED)
def test_forward_backward_reaches_every_parameter(arch: str, pe: str) -> None:
    model = tiny(arch, pe)
    with torch.no_grad():  # another grid: each PE's own rule for it
        other = model.eval()(images((8, 32)))
    assert other.shape == (2, 3) and torch.isfinite(other).all()
    out = model.train()(images())
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    out.square().sum().backward()
    for name, param in model.named_parameters():
        assert not any(part in name for part in HOST_POSITION), f"dead host table {name}"
        assert param.grad is not None, f"{name} gets no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
    for name, module in pe_modules(model).items():
        for param_name, param in module.named_parameters():
            assert param.grad.abs().sum() > 0, f"{name}.{param_name} gets a zero gradient"


@pytest.mark.parametrize(("arch", "pe"), [p for p in SUPPORTED if p[1] != "none"])
def test_the_pe_changes_the_output(arch: str, pe: str) -> None:
    baseline, model = tiny(arch, "none"), tiny(arch, pe)
    with torch.no_grad():  # init hides changes: flat attention, CaiT's 1e-5 scales and mixing
        for name, param in baseline.named_parameters():
            if name.endswith("qkv.weight"):
                param.normal_(0.0, 0.3)
            if name.split(".")[-1].startswith("gamma_"):
                param.fill_(1.0)
            if name.endswith(("proj_l.weight", "proj_w.weight")):
                param.copy_(torch.eye(len(param)))
    model.load_state_dict(baseline.state_dict(), strict=False)  # same host weights
    with torch.no_grad():  # a visible scale: a small learned PE at init moves logits by ~1e-6
        for module in pe_modules(model).values():
            for param in module.parameters():
                param.normal_()
    model.eval()
    baseline.eval()
    with torch.no_grad():
        assert not torch.allclose(model(images()), baseline(images()), atol=1e-5)


@pytest.mark.parametrize(("arch", "pe"), SUPPORTED)
def test_weight_decay_exactly_as_each_pe_declares(arch: str, pe: str) -> None:
    model = tiny(arch, pe)
    optimizer = build_optimizer(model, TrainSpec(weight_decay=0.05))
    no_decay = {
        id(p) for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]
    }
    named = dict(model.named_parameters())
    assert {n for n in model.no_weight_decay() if n.startswith("pe.")} <= set(named)
    for prefix, module in pe_modules(model).items():
        exempt = module.no_weight_decay()
        for name, param in module.named_parameters():
            decayed = id(param) not in no_decay
            if name in exempt:
                assert not decayed, f"{prefix}.{name} is weight-decayed against its PE"
            elif param.ndim > 1:
                assert decayed, f"{prefix}.{name} escapes weight decay"


@pytest.mark.parametrize(("arch", "pe"), UNSUPPORTED)
def test_unsupported_pairs_are_refused_with_the_reason(arch: str, pe: str) -> None:
    with pytest.raises(ValueError, match=f"{arch} cannot host"):
        tiny(arch, pe)


def test_attention_pes_reach_every_attention_they_need() -> None:
    cait = tiny("cait", "rpe")
    assert all(block.attn.position is not None for block in cait.blocks)
    crossvit = tiny("crossvit", "rope-mixed")
    for branch, blocks in enumerate(crossvit.branch_blocks):
        assert all(block.attn.position.pe is crossvit.pe[branch] for block in blocks)
    swin = tiny("swin", "rope-axial")
    for stage, layer in enumerate(swin.layers):
        assert all(block.attn.position.pe is swin.pe[stage] for block in layer.blocks)


def test_deit_distillation_token_gets_the_class_vector() -> None:
    model = tiny("deit-distilled", "learnable")
    assert model.num_prefix_tokens == 2 and model.pos_embed is None
    tokens = model._pos_embed(model.patch_embed(images()))  # B, 2 + N, D
    assert torch.allclose(tokens[:, 0], (model.cls_token + model.pe.cls)[:, 0].expand(2, -1))
    assert torch.allclose(tokens[:, 1], (model.dist_token + model.pe.cls)[:, 0].expand(2, -1))


@pytest.mark.parametrize("pe", ["learnable", "loope"])
def test_cait_class_token_gets_no_pe(pe: str) -> None:
    model = tiny("cait", pe)
    assert "cls" not in dict(model.pe.named_parameters())
    assert model.pe(model._grid).cls is None


def test_crossvit_has_one_pe_per_branch_on_its_own_grid() -> None:
    model = tiny("crossvit", "loope")
    assert [pe.grid for pe in model.pe] == [(4, 6), (2, 3)]
    assert [pe.dim for pe in model.pe] == [16, 32]
    model(images((8, 32)))
    assert model._grids == [(2, 8), (1, 4)]


def test_paper_sizes_are_declared_with_their_shapes() -> None:
    with torch.device("meta"):
        crossvit = build_model("crossvit", "base", "loope", img_size=240, patch_size=12,
                               num_classes=10)  # fmt: skip
        cait = build_model("cait", "s24", "rpe", img_size=224, patch_size=16, num_classes=10)
    assert [pe.grid for pe in crossvit.pe] == [(20, 20), (14, 14)]
    assert (len(cait.blocks), cait.embed_dim, cait.pe.num_heads) == (24, 384, 8)
    for arch, size, label in [("vit", "base", "ViT-B/16"), ("deit", "small", "DeiT-S/16"),
                              ("deit", "base", "DeiT-B/16")]:  # fmt: skip
        assert FAMILIES[arch].sizes[size].label == label
