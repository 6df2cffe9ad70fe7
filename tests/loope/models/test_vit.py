"""Every PE inside a tiny ViT on a non-square image: installed, trained, decayed correctly.

Parametrised over PE_REGISTRY, so a new PE is covered as soon as it is registered.
"""

from __future__ import annotations

import pytest
import torch
from timm.layers import Attention

from loope.models import build_model
from loope.models.vit import PEAttention, PEVisionTransformer
from loope.pe import PE_REGISTRY
from loope.spec import TrainSpec
from loope.train import build_optimizer

NAMES = list(PE_REGISTRY)
IMAGE = (24, 40)  # 3x5 patches of 8 px


def tiny(name: str, seed: int = 0, **vit_kwargs) -> PEVisionTransformer:
    torch.manual_seed(seed)
    kwargs = dict(img_size=IMAGE, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    return PEVisionTransformer(name, num_classes=3, **{**kwargs, **vit_kwargs})


def images(batch: int = 2, size: tuple[int, int] = IMAGE) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", NAMES)
def test_shape_and_finite_on_the_built_and_another_grid(name: str) -> None:
    model = tiny(name)
    assert model.pos_embed is None, "no dead host position table"
    for size in (IMAGE, (32, 16)):
        out = model(images(2, size))
        assert out.shape == (2, 3) and out.dtype == torch.float32
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_trainable_pe_parameter(name: str) -> None:
    model = tiny(name)
    model(images(2)).square().sum().backward()
    for param_name, param in model.pe.named_parameters():
        assert param.grad is not None, f"{param_name} gets no gradient"
        assert param.grad.abs().sum() > 0, f"{param_name} gets a zero gradient"


@pytest.mark.parametrize("name", [n for n in NAMES if n != "none"])
def test_every_pe_changes_the_output(name: str) -> None:
    baseline, model = tiny("none"), tiny(name)
    model.load_state_dict(baseline.state_dict(), strict=False)  # same host weights
    with torch.no_grad():  # a visible scale: a small learned PE at init moves logits by ~1e-6
        for param in model.pe.parameters():
            param.normal_()
    model.eval()
    baseline.eval()
    with torch.no_grad():
        x = images(2)
        assert not torch.allclose(model(x), baseline(x), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_attention_pes_reach_every_block(name: str) -> None:
    model = tiny(name)
    kind = model.pe.info.kind
    for block in model.blocks:
        installed = isinstance(block.attn, PEAttention) and block.attn.position is not None
        assert installed == (kind in ("attention-bias", "rotary"))
    assert bool(model.blocks[0]._forward_hooks) == (kind == "conditional")


def test_pe_attention_without_position_matches_timm() -> None:
    torch.manual_seed(0)
    plain = Attention(32, num_heads=2, qkv_bias=True)
    ours = PEAttention(32, num_heads=2, qkv_bias=True)
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(2, 16, 32)
    assert torch.allclose(ours(x), plain(x), atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_weight_decay_exemptions_reach_the_optimiser(name: str) -> None:
    model = tiny(name)
    optimizer = build_optimizer(model, TrainSpec(weight_decay=0.05))
    no_decay = {
        id(p) for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]
    }
    named = dict(model.named_parameters())
    exempt = {f"pe.{n}" for n in model.pe.no_weight_decay()}
    assert exempt <= set(named)
    for param_name in exempt:
        assert id(named[param_name]) in no_decay, f"{param_name} is weight-decayed"
    for param_name, param in model.pe.named_parameters():
        if param.ndim > 1 and f"pe.{param_name}" not in exempt:
            assert id(param) not in no_decay, f"pe.{param_name} escapes weight decay"


def test_build_model_hosts_an_attention_pe() -> None:
    model = build_model("vit", "tiny", "rope-mixed", img_size=32, patch_size=8, num_classes=4)
    assert model.pe.frequencies.shape[:2] == (4, 4)  # one set per layer and head
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 4)


def test_refusals_name_the_problem() -> None:
    with pytest.raises(ValueError, match="patch_drop_rate must be 0"):
        tiny("rpe", patch_drop_rate=0.5)
    with pytest.raises(ValueError, match="installs its own attn_layer"):
        tiny("rope-axial", attn_layer=Attention)
    with pytest.raises(ValueError, match="num_heads come from the host"):
        PEVisionTransformer(
            "rpe", {"num_heads": 4}, img_size=IMAGE, patch_size=8, embed_dim=32, num_heads=2
        )


@pytest.mark.parametrize("name", ["loope", "cpvt", "rope-mixed"])
def test_forward_intermediates_sees_the_same_pe(name: str) -> None:
    model = tiny(name).eval()
    x = images(2)
    with torch.no_grad():
        final, _ = model.forward_intermediates(x, indices=1, norm=False)
        assert torch.allclose(final, model.forward_features(x), atol=1e-6)
