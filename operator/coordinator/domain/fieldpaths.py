"""Field paths as Kubernetes writes them in messages: ``spec.steps[0].faults[1].scale.replicas``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def format_path(path: Sequence[str | int]) -> str:
    """``("spec", "steps", 0, "duration")`` as ``spec.steps[0].duration``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def validation_problem(error: Mapping[str, Any], root: str = "spec") -> tuple[str, str]:
    """(field, message) of one pydantic error: the field in bracket notation under ``root``, the message without
    pydantic's "Value error, " prefix (the text a validator raised is the message)."""
    message = str(error.get("msg", "invalid"))
    message = message.removeprefix("Value error, ")
    return format_path([root, *error.get("loc", ())]), message
