"""Load a plug-in by registry name or dotted ``module:attr`` path (uvicorn's pattern)."""

from __future__ import annotations

import importlib
from typing import Any

from mcustt.config import ConfigError


def import_from_string(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"expected 'module:attribute', got {ref!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"could not import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ConfigError(f"{module_name!r} has no attribute {attr!r}") from exc


def resolve(registry: dict[str, str], name: str, seam: str) -> Any:
    """A registered short name, or any ``module:Class`` for third-party plug-ins."""
    ref = registry.get(name, name if ":" in name else "")
    if not ref:
        known = ", ".join(sorted(registry))
        raise ConfigError(f"unknown {seam} {name!r} (known: {known}, or module:Class)")
    return import_from_string(ref)
