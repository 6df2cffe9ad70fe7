"""Expansion of a sweep (a base spec and axes of values) into validated run requests."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from loope.spec import ExperimentSpec
from service.store import RunRequest


class SpecError(ValueError):
    """A submitted spec is invalid; `errors` name each field and rule, `where` the cell."""

    def __init__(self, where: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{where}: invalid spec")
        self.where = where
        self.errors = errors


def validate_spec(body: dict[str, Any], where: str = "spec") -> ExperimentSpec:
    try:
        return ExperimentSpec.model_validate(body)
    except ValidationError as error:
        raise SpecError(where, _describe(error, where)) from None


def _describe(error: ValidationError, where: str) -> list[dict[str, Any]]:
    out = []
    for item in error.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in item["loc"])
        message = str(item["msg"]).removeprefix("Value error, ")
        out.append({"field": f"{where}.{field}" if field else where, "message": message})
    return out


def set_path(body: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path such as `pe.name` in a nested mapping, creating levels as needed."""
    *parents, leaf = path.split(".")
    node = body
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(
                f"axes.{path}", [{"field": path, "message": f"{part} is not a mapping"}]
            )
        node = child
    node[leaf] = value


def expand(
    base: dict[str, Any], axes: dict[str, Sequence[Any]], seeds: Sequence[int]
) -> list[RunRequest]:
    """Every combination of axis values applied to `base`, each with every seed."""
    names = list(axes)
    requests = []
    for values in itertools.product(*(axes[name] for name in names)):
        body = copy.deepcopy(base)
        for name, value in zip(names, values, strict=True):
            set_path(body, name, value)
        cell = ", ".join(f"{n}={v!r}" for n, v in zip(names, values, strict=True)) or "base"
        spec = validate_spec(body, where=f"sweep cell ({cell})")
        requests += [RunRequest(spec, body, seed) for seed in seeds]
    return requests
