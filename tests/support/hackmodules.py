"""The scripts under ``hack/`` as modules for tests: loaded by path (hack/ is not a package, and names like
``build`` or ``images`` are too common to put its folders on ``sys.path``), once per session, each under a name of
its own."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

HACK = Path(__file__).resolve().parents[2] / "hack"


def hack_module(name: str, relative: str) -> ModuleType:
    """``hack/<relative>`` as the module ``name`` (loaded once; later calls return it)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HACK / relative)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module
