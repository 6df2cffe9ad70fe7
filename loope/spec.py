"""The experiment spec: what a researcher asks to run, validated before anything starts.

A spec names an architecture, a PE, a dataset and a recipe. A run is a spec and a seed.
The canonical JSON of a spec (sorted keys, defaults filled in) is hashed, so the same
experiment submitted twice is recognised.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loope.models import ArchName, SizeName
from loope.orders import ORDER_NAMES, OrderName
from loope.pe import PE_REGISTRY

DatasetName = Literal["three-cell", "digits"]
Optimizer = Literal["adamw", "adam"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(Strict):
    """The host architecture. `patch_size` defaults to the dataset's natural patch."""

    arch: ArchName = "vit"
    size: SizeName = "tiny"
    patch_size: int | None = Field(default=None, ge=1)


class PESpec(Strict):
    """The positional embedding: a registry name, an order where the PE takes one, options."""

    name: str
    order: OrderName | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_pe(cls, name: str) -> str:
        return _one_of("pe.name", name, tuple(PE_REGISTRY))

    @model_validator(mode="after")
    def _order_fits(self) -> PESpec:
        if self.order is not None and not PE_REGISTRY[self.name].uses_order:
            raise ValueError(f"pe.order: PE {self.name!r} takes no order (its order is fixed)")
        if self.order is not None and self.order not in ORDER_NAMES:
            raise ValueError(f"pe.order must be one of {', '.join(ORDER_NAMES)}")
        return self

    def build_options(self) -> dict[str, Any]:
        return {**self.options, **({"order": self.order} if self.order else {})}


class DatasetSpec(Strict):
    """The data. Three-Cell takes a preset and optional overrides of its generator."""

    name: DatasetName
    preset: str | None = None
    grid: int | None = Field(default=None, ge=3)
    cell: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=10)
    seed: int = Field(default=0, ge=0, description="seed of the data itself, fixed across runs")


class TrainSpec(Strict):
    """The recipe: optimiser, cosine schedule with warm-up, batch size and epochs."""

    epochs: int = Field(default=10, ge=1, le=10_000)
    batch_size: int = Field(default=64, ge=1, le=65_536)
    optimizer: Optimizer = "adamw"
    lr: float = Field(default=1e-3, gt=0, le=10)
    min_lr: float = Field(default=2.5e-5, ge=0)
    weight_decay: float = Field(default=0.05, ge=0)
    warmup_epochs: int = Field(default=0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class ResourceSpec(Strict):
    """What a run asks of the cluster."""

    gpus: float = Field(default=0, ge=0, le=64)
    cpus: float = Field(default=1, gt=0, le=256)


class ExperimentSpec(Strict):
    """One experiment. Unknown fields are refused, so a typo never silently runs defaults."""

    name: str | None = Field(default=None, max_length=200)
    model: ModelSpec = Field(default_factory=ModelSpec)
    pe: PESpec
    dataset: DatasetSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    tags: list[str] = Field(default_factory=list, max_length=32)

    def canonical(self) -> dict[str, Any]:
        """The spec with defaults filled in and without the fields that do not change results."""
        return self.model_dump(mode="json", exclude={"name", "tags", "resources"})

    def spec_hash(self) -> str:
        text = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def _one_of(field: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{field}: unknown name {value!r}; allowed: {', '.join(allowed)}")
    return value


def load_spec_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON spec or sweep file into a plain mapping."""
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a spec file must hold a mapping, got {type(data).__name__}")
    return data
