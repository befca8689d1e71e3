"""Objects named on the command line as ``module:attr`` (a graph, a serializer)."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from ._errors import ConfigurationError


def load_object(spec: str, option: str = "--graph") -> Any:
    """The object named by ``"module:attr"`` (``attr`` may be dotted), imported from here.

    The working directory is put on ``sys.path`` first, as uvicorn does, so that
    ``--graph my_agent:graph`` finds ``./my_agent.py``.  Errors name ``option``.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(
            f"{option} {spec!r} is not of the form module:attr, e.g. my_agent:graph"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot import module {module_name!r} for {option} {spec!r}: {exc} (run from the "
            "directory that holds it, or install it)"
        ) from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(
                f"module {module_name!r} has no attribute {attr!r} ({option} {spec!r})"
            ) from None
    return target
