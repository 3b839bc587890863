"""The name rule for names that end up in paths and URIs: the pipeline's name (config) and the
registered model's name (config and the registry client)."""

from __future__ import annotations

import re
from typing import Any

# fullmatch: "$" would allow a final newline.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RULE = "use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, without '..'"


def is_safe_name(value: Any) -> bool:
    return isinstance(value, str) and bool(NAME.fullmatch(value)) and ".." not in value


def check_name(value: Any, field: str) -> str:
    """`value`, or a ValueError naming `field` when it is not a safe name."""
    if not is_safe_name(value):
        raise ValueError(f"{field} {value!r} is not a safe name: {RULE} (names end up in paths and URIs)")
    return value
