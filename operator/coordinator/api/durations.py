"""Go-style durations as Kubernetes writes them ("500ms", "30s", "5m", "1h30m", "1.5s").

The accepted syntax is exactly the one the CRD schema allows (``coordinator.api.models.DURATION_PATTERN``): one or
more ``<number><unit>`` components with units ``ms``, ``s``, ``m`` and ``h``, no sign, no spaces. A bare number
(even ``0``) is refused: without a unit, nobody can tell what was meant.

In ``api/``: the resource models validate their durations with it, and ``api/`` imports nothing of ours.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

# [0-9] rather than \d: \d also matches non-ASCII digits, which the CRD pattern refuses.
_COMPONENT = r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)"
_COMPONENT_RE = re.compile(_COMPONENT)
_DURATION_RE = re.compile(f"(?:{_COMPONENT})+")

_UNIT_SECONDS: dict[str, Fraction] = {
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
}

_EXAMPLES = "a Go-style duration such as '500ms', '30s', '5m' or '1h30m'"


def parse_duration(text: str) -> float:
    """Return the number of seconds the Go-style duration ``text`` stands for.

    Components add up ("1h30m" is 5400.0); fractions are allowed ("1.5s" is 1.5). The sum is computed exactly
    and rounded to a float once, so "0.1s" + "0.2s" style inputs come out as the nearest float to the true value.

    Raises:
        ValueError: ``text`` is not a valid duration (empty, no unit, unknown unit, negative, spaces...). The
            message quotes the offending text.
    """
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}: expected a string, {_EXAMPLES}")
    if _DURATION_RE.fullmatch(text) is None:
        raise ValueError(f"invalid duration {text!r}: {_why_invalid(text)}")
    total = sum(
        (Fraction(number) * _UNIT_SECONDS[unit] for number, unit in _COMPONENT_RE.findall(text)),
        start=Fraction(0),
    )
    try:
        return float(total)
    except OverflowError:
        raise ValueError(f"invalid duration {text!r}: too large") from None


def _why_invalid(text: str) -> str:
    """A hint for a string that is not a duration, for the error message."""
    stripped = text.strip()
    if not stripped:
        return f"empty; expected {_EXAMPLES}"
    if stripped.startswith("-"):
        return f"durations cannot be negative; expected {_EXAMPLES}"
    if stripped != text or any(ch.isspace() for ch in text):
        return f"spaces are not allowed; expected {_EXAMPLES}"
    if re.fullmatch(r"[0-9]+(?:\.[0-9]+)?", text):
        return f"missing unit (ms, s, m or h); expected {_EXAMPLES}"
    return f"expected {_EXAMPLES} (units ms, s, m, h)"


def format_duration(seconds: float) -> str:
    """Format ``seconds`` as a compact Go-style duration, the inverse of :func:`parse_duration`.

    The value is rounded to the nearest millisecond (the smallest unit the syntax has). Zero components are
    left out and fractions of a second are written as decimals once the value reaches a second:
    ``0`` -> ``"0s"``, ``0.25`` -> ``"250ms"``, ``1.5`` -> ``"1.5s"``, ``90`` -> ``"1m30s"``, ``3600`` -> ``"1h"``,
    ``5400.5`` -> ``"1h30m0.5s"``. For any whole number of milliseconds ``x``,
    ``parse_duration(format_duration(x)) == x``.

    Raises:
        ValueError: ``seconds`` is negative, NaN or infinite.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ValueError(f"cannot format {seconds!r} as a duration: expected a number of seconds")
    if not math.isfinite(seconds):
        raise ValueError(f"cannot format {seconds!r} as a duration: not a finite number")
    if seconds < 0:
        raise ValueError(f"cannot format {seconds!r} as a duration: durations cannot be negative")
    millis = round(Fraction(seconds) * 1000)
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole_seconds, rest_millis = divmod(rest, 1000)
    parts: list[str] = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if whole_seconds or rest_millis:
        fraction = f".{rest_millis:03d}".rstrip("0") if rest_millis else ""
        parts.append(f"{whole_seconds}{fraction}s")
    return "".join(parts)
