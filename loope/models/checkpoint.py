"""Start a model from a local weights file, which may have been saved with another PE.

Nothing is downloaded: the file is read from disk. Tensors are matched by name and shape.
A model with a different PE than the file's shares the host's tensors (patch embedding,
blocks, head) and differs in the position ones. The PE's tensors load whole or not at all:
when the file's PE tensors are not exactly the model's, none of them is taken, even those
that happen to share a name and shape. The outcome is reported explicitly —
which tensors were loaded, which are new (kept at their initialisation) and which of the
file's were dropped (unknown to this model, or of another shape) — and logged once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

WRAPPERS = ("model", "state_dict", "module")
"""Keys under which training scripts commonly nest the weights."""

PE_PREFIX = "pe."
"""Where every adapter keeps its PE (or its PEs, `pe.0.`, `pe.1.`, ...)."""


@dataclass(frozen=True)
class LoadReport:
    """What loading a weights file did.

    Attributes:
        loaded: names of the model's tensors taken from the file.
        new: names of the model's tensors the file lacks (kept as initialised).
        dropped: the file's tensors not used, each with why (`unknown` or the two shapes).
    """

    path: str
    loaded: tuple[str, ...]
    new: tuple[str, ...]
    dropped: tuple[str, ...]

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors loaded"]
        if self.new:
            parts.append(f"{len(self.new)} new: {', '.join(self.new)}")
        if self.dropped:
            parts.append(f"{len(self.dropped)} dropped: {', '.join(self.dropped)}")
        return f"{self.path}: " + "; ".join(parts)


def load_safely(path: Path) -> object:
    """Unpickle `path` on the CPU allowing only tensors, containers and numpy arrays.

    numpy arrays are allowed because the trainer's checkpoints hold numpy's random state
    (MT19937: a uint32 array); nothing that runs code on loading is.
    """
    numpy_array = [
        np.dtype,
        np.ndarray,
        np._core.multiarray._reconstruct,
        type(np.dtype(np.uint32)),
    ]
    with torch.serialization.safe_globals(numpy_array):
        return torch.load(path, map_location="cpu", weights_only=True)


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped from a training checkpoint if need be."""
    if not path.is_file():
        raise FileNotFoundError(f"model.checkpoint: no file at {path}")
    state = load_safely(path)
    while isinstance(state, dict):
        nested = next((state[key] for key in WRAPPERS if isinstance(state.get(key), dict)), None)
        if nested is None:
            break
        state = nested
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"model.checkpoint: {path} holds no mapping of names to tensors")
    return {name.removeprefix("module."): tensor for name, tensor in state.items()}


def load_checkpoint(model: nn.Module, path: str | Path) -> LoadReport:
    """Load the tensors of `path` that fit `model`; report and log what was loaded, new, dropped."""
    weights = read_weights(Path(path))
    own = model.state_dict()
    fitting = {n: t for n, t in weights.items() if n in own and own[n].shape == t.shape}
    other_pe = not _same_pe(weights, own)
    if other_pe:  # a PE loads whole or not at all: a learnable CLS row is no LOOPE CLS vector
        fitting = {n: t for n, t in fitting.items() if not n.startswith(PE_PREFIX)}
    dropped = [_why_dropped(n, t, own, other_pe) for n, t in weights.items() if n not in fitting]
    model.load_state_dict(fitting, strict=False)
    report = LoadReport(
        path=str(path),
        loaded=tuple(n for n in own if n in fitting),
        new=tuple(n for n in own if n not in fitting),
        dropped=tuple(dropped),
    )
    log.info("started from %s", report.summary())
    return report


def _same_pe(weights: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> bool:
    """Whether the file's PE tensors are exactly the model's, by name and shape."""
    theirs = {n: t.shape for n, t in weights.items() if n.startswith(PE_PREFIX)}
    ours = {n: t.shape for n, t in own.items() if n.startswith(PE_PREFIX)}
    return theirs == ours


def _why_dropped(
    name: str, tensor: torch.Tensor, own: dict[str, torch.Tensor], other_pe: bool
) -> str:
    if name not in own:
        return f"{name} (unknown)"
    if own[name].shape != tensor.shape:
        return f"{name} ({_shape(tensor)} vs {_shape(own[name])})"
    return f"{name} (another PE)" if other_pe and name.startswith(PE_PREFIX) else name


def _shape(tensor: torch.Tensor) -> str:
    return "x".join(str(s) for s in tensor.shape) or "scalar"
