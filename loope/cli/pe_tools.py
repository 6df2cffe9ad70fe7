"""Commands that inspect patch orders and PEs: `order`, `pesi`, `pe-map`."""

from __future__ import annotations
