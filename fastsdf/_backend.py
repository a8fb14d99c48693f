"""Lazy access to the compiled modules, with errors that say what is missing and how to build it.

``import fastsdf`` never imports them: an op asks for its backend when it is first called.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

_BUILD_HINT = (
    "Build it from the source tree with `pip install -e .` (or `make test`), which compiles "
    "fastsdf._C with any C++17 compiler and fastsdf._cuda when nvcc is found "
    "(set FASTSDF_CUDA=1 to insist on it, CUDA_HOME to point at the toolkit)."
)


class BackendUnavailableError(RuntimeError):
    """Raised when an op needs a compiled module or device that this installation lacks."""


@functools.cache
def _load(name: str) -> ModuleType | str:
    try:
        return importlib.import_module(f"fastsdf.{name}")
    except ImportError as exc:
        return str(exc)


def cpu() -> ModuleType:
    """The C++/OpenMP kernels (fastsdf._C)."""
    module = _load("_C")
    if isinstance(module, str):
        raise BackendUnavailableError(f"fastsdf._C (the CPU kernels) is not built: {module}. {_BUILD_HINT}")
    return module


def cuda() -> ModuleType:
    """The CUDA kernels (fastsdf._cuda)."""
    module = _load("_cuda")
    if isinstance(module, str):
        raise BackendUnavailableError(
            f"fastsdf._cuda (the CUDA kernels) is not built: {module}. It is built only where nvcc "
            f"is found at install time. {_BUILD_HINT}"
        )
    return module


def has_cpu() -> bool:
    return not isinstance(_load("_C"), str)


def has_cuda() -> bool:
    return not isinstance(_load("_cuda"), str)
