"""The experiment spec: what a researcher asks to run, validated before anything starts.

A spec names an architecture, a PE, a dataset and a recipe. A run is a spec and a seed.
The canonical JSON of a spec (sorted keys, defaults filled in) is hashed, so the same
experiment submitted twice is recognised.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loope.models import FAMILIES, ArchName, SizeName
from loope.orders import ORDER_NAMES, OrderName
from loope.pe import PE_REGISTRY

DatasetName = Literal["three-cell", "digits", "cifar10", "cifar100", "image-folder"]
SplitKind = Literal["random", "official"]
Augmentation = Literal["hflip", "vflip", "rotate", "brightness", "elastic", "crop"]
Normalisation = Literal["none", "imagenet"]
Optimizer = Literal["adamw", "adam"]
Precision = Literal["fp32", "bf16", "fp16"]
RecipeName = Literal["quick", "paper-finetune", "scratch"]

ON_DISK: tuple[str, ...] = ("cifar10", "cifar100", "image-folder")
"""Datasets read from `dataset.path`; the others are generated or bundled."""

MOVING_AUGMENTATIONS: tuple[Augmentation, ...] = ("hflip", "vflip", "rotate", "elastic", "crop")
"""Augmentations that move pixels to other places, and so move Three-Cell's cells."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(Strict):
    """The host architecture: a family of `loope.models.FAMILIES` in one of its sizes.

    `patch_size` defaults to the dataset's natural patch (the paper's sizes are meant for
    16, CrossViT-B for 12, Swin for 4). `checkpoint` names a local weights file to start
    from (never downloaded), read by `loope.models.checkpoint.load_checkpoint`, which
    reports the tensors of another PE rather than forcing them. `eval_image_sizes` lists
    further square image sizes the trained model is tested at, each with its PE's own rule
    for a new grid; they give `test@<size>/...` metrics.
    """

    arch: ArchName = "vit"
    size: SizeName = "tiny"
    patch_size: int | None = Field(default=None, ge=1)
    checkpoint: str | None = Field(default=None, description="local weights file to start from")
    eval_image_sizes: tuple[int, ...] = Field(default=(), max_length=16)

    @model_validator(mode="after")
    def _size_and_sizes_fit(self) -> ModelSpec:
        sizes = FAMILIES[self.arch].sizes
        if self.size not in sizes:
            raise ValueError(
                f"model.size: {self.arch} comes in {', '.join(sizes)}, not {self.size!r}"
            )
        for size in self.eval_image_sizes:
            if size < 4 or size > 4096:
                raise ValueError(f"model.eval_image_sizes: {size} is outside 4..4096")
            if self.patch_size and size % self.patch_size:
                raise ValueError(
                    f"model.eval_image_sizes: patch_size={self.patch_size} must divide {size}"
                )
        if self.checkpoint is not None and "://" in self.checkpoint:
            raise ValueError("model.checkpoint: a local file path; nothing is downloaded")
        return self


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
        accepted = pe_options(self.name)
        unknown = sorted(set(self.options) - set(accepted))
        if unknown:
            allowed = ", ".join(accepted) or "none"
            raise ValueError(
                f"pe.options: {self.name} takes no option {', '.join(map(repr, unknown))}; "
                f"its options: {allowed}"
            )
        return self

    def build_options(self) -> dict[str, Any]:
        return {**self.options, **({"order": self.order} if self.order else {})}


@functools.cache
def pe_options(name: str) -> tuple[str, ...]:
    """The keyword options a spec may give the PE `name`: its constructor's, less what the
    host supplies (width, grid, host facts) and what the catalogue entry pins."""
    entry = PE_REGISTRY[name]
    fixed = {"self", "dim", "grid", *entry.host_args, *entry.pinned}
    parameters = inspect.signature(entry.pe_class.__init__).parameters.values()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in parameters if p.kind in named and p.name not in fixed)


class DatasetSpec(Strict):
    """The data: which dataset, where it lives, how it is split and augmented.

    Three-Cell is generated from a preset (default `quick`) with optional overrides of every
    generator choice; `digits` is scikit-learn's bundled set; CIFAR-10/100 (python-pickle
    release) and ImageFolder trees are read from `path`. `split` is `random` (the paper's
    `fractions`, 80/10/10, drawn with `seed`) or `official` (the dataset's own test split,
    with `fractions[1]` of the training part held out for validation).
    """

    name: DatasetName
    path: str | None = Field(default=None, description="root of an on-disk dataset")
    split: SplitKind = "random"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = Field(default=0, ge=0, description="seed of the data itself, fixed across runs")
    image_size: int | None = Field(default=None, ge=4, le=4096)
    normalize: Normalisation = "none"
    augment: tuple[Augmentation, ...] = ()
    # Three-Cell generator choices (None: the preset's value)
    preset: str | None = None
    grid: int | None = Field(default=None, ge=3)
    cell: int | None = Field(default=None, ge=1)
    n: int | None = Field(default=None, ge=10)
    max_sq_len: int | None = Field(default=None, ge=2)
    vector_sum_rule: Literal["both", "either"] = "both"
    reject_collinear: bool = True

    @field_validator("fractions")
    @classmethod
    def _fractions_sum_to_one(cls, fractions: tuple[float, float, float]) -> tuple:
        if any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
            raise ValueError(f"dataset.fractions {fractions}: need three numbers >= 0 summing to 1")
        return fractions

    @model_validator(mode="after")
    def _combination_is_possible(self) -> DatasetSpec:
        if self.name in ON_DISK and not self.path:
            raise ValueError(f"dataset.path: {self.name} is read from disk; give its root folder")
        if self.name not in ON_DISK and self.path:
            raise ValueError(f"dataset.path: {self.name} is not read from disk; drop the path")
        if self.name == "image-folder" and self.image_size is None:
            raise ValueError("dataset.image_size: ImageFolder images are resized; give a size")
        if self.name in ("three-cell", "digits") and self.split == "official":
            raise ValueError(f"dataset.split: {self.name} has no official test split; use random")
        from loope.data.three_cell import PRESETS  # loope.data imports this module

        if self.preset is not None and self.preset not in PRESETS:
            allowed = ", ".join(PRESETS)
            raise ValueError(
                f"dataset.preset: unknown Three-Cell preset {self.preset!r}; allowed: {allowed}"
            )
        generator = ("preset", "grid", "cell", "n", "max_sq_len")
        given = [k for k in generator if getattr(self, k) is not None]
        if self.name != "three-cell" and given:
            raise ValueError(
                f"dataset.{given[0]}: a Three-Cell generator choice, not {self.name}'s"
            )
        self._three_cell_keeps_cells_in_place()
        return self

    def _three_cell_keeps_cells_in_place(self) -> None:
        if self.name != "three-cell":
            return
        moving = [a for a in self.augment if a in MOVING_AUGMENTATIONS]
        if moving:
            raise ValueError(
                f"dataset.augment: {', '.join(moving)} move cells, which changes Three-Cell's "
                "labels (distances, orientation, sums); only brightness keeps them"
            )
        if self.image_size is not None or self.normalize != "none":
            raise ValueError("dataset.image_size/normalize: Three-Cell sets its size by grid×cell")


RECIPES: dict[RecipeName, dict[str, Any]] = {
    # CPU-sized: a tiny ViT on the quick Three-Cell preset or digits in minutes.
    "quick": {"optimizer": "adamw", "lr": 1e-3, "min_lr": 2.5e-5, "weight_decay": 0.05,
              "warmup_epochs": 1, "epochs": 20, "batch_size": 64},
    # The paper: Adam, cosine 1e-3 -> 2.5e-5, 150 epochs, batch 64 (96 for Oxford-IIIT Pet),
    # fine-tuning ImageNet-1k weights the user provides.
    "paper-finetune": {"optimizer": "adam", "lr": 1e-3, "min_lr": 2.5e-5, "weight_decay": 0.0,
                       "warmup_epochs": 0, "epochs": 150, "batch_size": 64},
    # The authors' later code, from scratch: AdamW (wd 0.05), 5 warm-up epochs, lr 5e-4 at
    # batch 1024, 500 epochs.
    "scratch": {"optimizer": "adamw", "lr": 5e-4, "min_lr": 1e-6, "weight_decay": 0.05,
                "warmup_epochs": 5, "epochs": 500, "batch_size": 1024},
}  # fmt: skip
"""Named recipes; a field given in the spec overrides the recipe's value."""


class TrainSpec(Strict):
    """The recipe: optimiser, cosine schedule with warm-up, regularisation and precision.

    `recipe` fills every field the spec leaves out from :data:`RECIPES`. One optimiser step
    takes `accumulation` batches of `batch_size`; `grad_clip` caps the global gradient norm;
    `precision` runs the forward pass under autocast (fp16 adds a gradient scaler).
    """

    recipe: RecipeName | None = None
    epochs: int = Field(default=10, ge=1, le=10_000)
    batch_size: int = Field(default=64, ge=1, le=65_536)
    accumulation: int = Field(default=1, ge=1, le=1024)
    optimizer: Optimizer = "adamw"
    lr: float = Field(default=1e-3, gt=0, le=10)
    min_lr: float = Field(default=2.5e-5, ge=0)
    weight_decay: float = Field(default=0.05, ge=0)
    warmup_epochs: int = Field(default=0, ge=0)
    grad_clip: float | None = Field(default=None, gt=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    precision: Precision = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _fill_from_recipe(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("recipe") is None:
            return data
        recipe = _one_of("train.recipe", data["recipe"], tuple(RECIPES))
        return RECIPES[recipe] | data

    @model_validator(mode="after")
    def _schedule_is_possible(self) -> TrainSpec:
        if self.warmup_epochs > self.epochs:
            raise ValueError(
                f"train.warmup_epochs={self.warmup_epochs} must not exceed epochs={self.epochs}"
            )
        if self.min_lr > self.lr:
            raise ValueError(f"train.min_lr={self.min_lr} must not exceed lr={self.lr}")
        return self


class ResourceSpec(Strict):
    """What a run asks of the cluster, per worker.

    `gpus` below 1 is a share of one GPU (two runs of 0.5 share a GPU, two of 0.75 do
    not); 1 or more must be a whole number of GPUs on one node. `memory_gb` is host memory
    the scheduler reserves (0: no reservation). `workers` above 1 trains data-parallel with
    that many workers, each holding `gpus`, `cpus` and `memory_gb`.
    """

    gpus: float = Field(default=0, ge=0, le=64)
    cpus: float = Field(default=1, gt=0, le=256)
    memory_gb: float = Field(default=0, ge=0, le=4096)
    workers: int = Field(default=1, ge=1, le=256)

    @field_validator("gpus")
    @classmethod
    def _whole_or_share(cls, gpus: float) -> float:
        if gpus > 1 and gpus != int(gpus):
            raise ValueError(
                f"resources.gpus={gpus}: above 1 a run takes whole GPUs; use an integer, "
                "or a share below 1"
            )
        return gpus

    @model_validator(mode="after")
    def _ranks_hold_whole_gpus(self) -> ResourceSpec:
        if self.workers > 1 and 0 < self.gpus < 1:
            raise ValueError(
                f"resources.gpus={self.gpus} with workers={self.workers}: data-parallel ranks "
                "each need a GPU of their own (NCCL cannot put two ranks on one GPU); use "
                "gpus: 1 or more, or workers: 1"
            )
        return self


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
    """Read a YAML or JSON spec or sweep file into a plain mapping.

    A syntax error is raised as one-line ValueError `FILE: line L, column C: <problem>`.
    """
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        raise ValueError(f"{path}: {where}: {error.msg}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: {_yaml_problem(error)}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a spec file must hold a mapping, got {type(data).__name__}")
    return data


def _yaml_problem(error: yaml.YAMLError) -> str:
    """`line L, column C: <problem>` (1-based) of a YAML syntax error, on one line."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        problem = error.problem or error.context or "invalid YAML"
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return " ".join(str(error).split())
