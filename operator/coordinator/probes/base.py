"""What the probes share besides their samples (``domain/samples.py``): refusals, JSON paths, excerpts (pure)."""

from __future__ import annotations

from typing import Any


class ProbeRefused(Exception):
    """The probe asks for what no probe may do: read a Secret or a protected namespace, call a denied address,
    send a request the HTTP client refuses. Not a failed sample and never retried: the run ends ``Error``.

    ``field`` is relative to the probe (``http.url``); ``located`` prefixes where the probe is, so the message
    reads ``ChaosScenario shop/s: spec.steadyState.probes[0].http.url: ...``.
    """

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason

    def located(self, where: str) -> ProbeRefused:
        return ProbeRefused(f"{where}.{self.field}", self.reason)


def lookup(obj: Any, path: str) -> Any:
    """A dotted path into JSON (``status.readyReplicas``, ``items.0.name``, ``items[0].name``); KeyError if absent."""
    current = obj
    for part in path.replace("[", ".").replace("]", "").split("."):
        if part == "":
            continue
        if isinstance(current, list):
            try:
                current = current[int(part)]
            except (ValueError, IndexError):
                raise KeyError(path) from None
        elif isinstance(current, dict) and part in current:
            current = current[part]
        else:
            raise KeyError(path)
    return current


def short(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


EXCERPT_LIMIT = 60
_CONTROL = dict.fromkeys([*range(0x20), 0x7F], " ")


def excerpt(value: Any, limit: int = EXCERPT_LIMIT) -> str:
    """At most ``limit`` characters of a value a probe observed, on one line: a message shows what was seen
    without copying whatever the object holds into the TestRun's status."""
    text = value if isinstance(value, str) else repr(value)
    return short(text.translate(_CONTROL), limit)
