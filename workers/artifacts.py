"""Describe the files an attempt leaves in its run's folder under the artifact root.

The artifact root is a path every node can reach (a local folder on one machine, a shared
mount on a cluster), so a URI recorded by one worker opens on any other.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

ArtifactKind = Literal["checkpoint", "plot", "pe-map", "log", "other"]

_KINDS: dict[str, ArtifactKind] = {
    ".pt": "checkpoint",
    ".png": "plot",
    ".svg": "plot",
    ".log": "log",
}


def sha256_of(path: Path, chunk: int = 2**20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def describe(path: Path) -> dict[str, Any]:
    """The record of one file: kind, URI, size and SHA-256 checksum."""
    kind = "pe-map" if "pe" in path.stem and path.suffix == ".png" else _KINDS.get(path.suffix)
    return {
        "kind": kind or "other",
        "uri": path.resolve().as_uri(),
        "size_bytes": path.stat().st_size,
        "sha256": sha256_of(path),
    }


def collect(workdir: Path) -> list[dict[str, Any]]:
    """Records of every finished file in the run's folder (partial `.tmp` writes skipped)."""
    if not workdir.is_dir():
        return []
    files = sorted(p for p in workdir.rglob("*") if p.is_file() and p.suffix != ".tmp")
    return [describe(path) for path in files]
