"""Metric values as the database keeps them: a float and its kind, so NaN and ±inf survive."""

from __future__ import annotations

import math

from service.db import ValueKind


def classify(value: float) -> tuple[float | None, ValueKind]:
    """Split a value into what the database stores (finite floats only) and its kind."""
    if math.isnan(value):
        return None, ValueKind.NAN
    if math.isinf(value):
        return None, ValueKind.POS_INF if value > 0 else ValueKind.NEG_INF
    if value == 0 and math.copysign(1.0, value) < 0:
        return 0.0, ValueKind.NEG_ZERO
    return value, ValueKind.FINITE


def restore(value: float | None, kind: ValueKind) -> float:
    if kind == ValueKind.FINITE:
        assert value is not None
        return value
    special = {
        ValueKind.NEG_ZERO: -0.0,
        ValueKind.NAN: math.nan,
        ValueKind.POS_INF: math.inf,
        ValueKind.NEG_INF: -math.inf,
    }
    return special[kind]


_STRINGS = {ValueKind.NAN.value, ValueKind.POS_INF.value, ValueKind.NEG_INF.value}


def to_json(value: float) -> float | str:
    """JSON has no NaN or infinity: those travel as the strings "nan", "+inf", "-inf"."""
    return value if math.isfinite(value) else classify(value)[1].value


def from_json(value: float | str) -> float:
    if isinstance(value, str):
        if value not in _STRINGS:
            raise ValueError(f"metric value {value!r}: a string must be 'nan', '+inf' or '-inf'")
        return restore(None, ValueKind(value))
    return float(value)


def lower_is_better(key: str) -> bool:
    return key.endswith("loss") or key == "lr"
