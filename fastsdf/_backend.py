"""Lazy access to the compiled modules, with errors that say what is missing and how to build it.

``import fastsdf`` never imports them: an op asks for its backend when it is first called.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from types import ModuleType
from typing import Any

from fastsdf import _cuda_driver

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
    """The CUDA kernels (fastsdf._cuda), once its CUDA runtime has started on this machine's driver."""
    module = _load("_cuda")
    if isinstance(module, str):
        spec = importlib.util.find_spec("fastsdf._cuda")
        if spec is None or spec.origin is None:
            raise BackendUnavailableError(
                f"fastsdf._cuda (the CUDA kernels) is not built: {module}. It is built only where nvcc "
                f"is found at install time. {_BUILD_HINT}"
            )
        raise BackendUnavailableError(_cuda_driver.explain(
            f"the module {spec.origin} does not load ({module})", _cuda_driver.toolkit_in_file(spec.origin),
            _torch_cuda()))
    problem = _runtime_problem(module)
    if problem is not None:
        raise BackendUnavailableError(problem)
    return module


@functools.cache
def _runtime_problem(module: ModuleType) -> str | None:
    """Why the module's CUDA runtime does not start (its first call, made once), None when it does."""
    code, name, _ = module.runtime_status()
    if code == 0:
        return None
    cause = "the NVIDIA driver is older than its CUDA runtime needs" if code == _cuda_driver.INSUFFICIENT_DRIVER \
        else "its CUDA runtime does not start"
    return _cuda_driver.explain(f"{cause} ({name})", module.cuda_toolkit, _torch_cuda())


def _torch_cuda() -> str | None:
    import torch

    return torch.version.cuda


def cuda_target(tensor: Any) -> tuple[int, int]:
    """(stream, device index) for a fastsdf._cuda call on ``tensor``'s device: torch's current
    stream of that device, and the device, which the call makes current while it launches (the
    current one may be another GPU's)."""
    import torch

    return torch.cuda.current_stream(tensor.device).cuda_stream, tensor.device.index


def has_cpu() -> bool:
    return not isinstance(_load("_C"), str)


def has_cuda() -> bool:
    return not isinstance(_load("_cuda"), str)
