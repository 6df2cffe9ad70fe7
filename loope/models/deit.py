"""DeiT with its distillation token: timm's distilled ViT with the PE put in its place.

The distillation token sits after the class token, and like it is not a patch: it gets the
PE's class-token vector (if the PE gives one) and no bias or rotation. The host's table of
N + 2 rows is removed; `PEVisionTransformer._pos_embed`, inherited first, places the PE.
"""

from __future__ import annotations

from typing import Any

from timm.models.deit import VisionTransformerDistilled

from loope.models.vit import PEVisionTransformer


class PEDistilledTransformer(PEVisionTransformer, VisionTransformerDistilled):
    """DeiT's distilled ViT (class and distillation tokens, two heads) with a catalogue PE.

    Outside `set_distilled_training(True)` the two heads' logits are averaged, as in timm.
    """

    def __init__(
        self, pe_name: str, pe_options: dict[str, Any] | None = None, **vit_kwargs: Any
    ) -> None:
        super().__init__(pe_name, pe_options, **vit_kwargs)
        self.pos_embed = None  # the host's table for N + 2 tokens: position comes from self.pe
