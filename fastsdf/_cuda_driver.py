"""Why fastsdf._cuda cannot run with this machine's NVIDIA driver, said in one message.

The module links the static CUDA runtime of the toolkit that built it (setup.py), which starts only on
a driver that supports that toolkit's major version: CUDA 12 needs >= 525.60.13, CUDA 13 >= 580.65.06
(NVIDIA's minor version compatibility), whatever CUDA torch itself ships. Built against a newer
toolkit than torch's, the module fails where torch works: every call would say "insufficient driver".
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

# The oldest Linux driver that runs each toolkit major version.
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
# cudaErrorInsufficientDriver: what the runtime's first call returns on an older driver, or none.
INSUFFICIENT_DRIVER = 35
_LIBCUDA = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")
_TAG = re.compile(rb"fastsdf-cuda-toolkit=(\d+)")


def driver_cuda_version() -> tuple[int, int] | None:
    """The CUDA version the installed driver supports (libcuda's cuDriverGetVersion), None without
    a driver."""
    for name in _LIBCUDA:
        try:
            libcuda = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int(0)
        if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
        return version.value // 1000, version.value % 1000 // 10
    return None


def driver_release() -> str | None:
    """The kernel driver's release ("550.54.14"), None where /proc does not say."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text(errors="replace")
    except OSError:
        return None
    found = re.search(r"Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    return found.group(1) if found else None


def toolkit_in_file(path: str | Path | None) -> str | None:
    """The toolkit ("13.0") recorded in a module file by bindings_cuda.cpp, for a module that cannot
    load (a loaded one says it as ``cuda_toolkit``); None where the file or the record is missing."""
    try:
        found = _TAG.search(Path(path).read_bytes()) if path else None
    except OSError:
        return None
    if found is None:
        return None
    version = int(found.group(1))
    return f"{version // 1000}.{version % 1000 // 10}"


def explain(cause: str, toolkit: str | None, torch_cuda: str | None) -> str:
    """The message for a module that cannot load or start: the cause, the toolkit it was built with
    and the driver that needs, the driver found, and how to rebuild."""
    driver = driver_cuda_version()
    release = driver_release()
    if driver is None:
        found = "no NVIDIA driver was found (libcuda.so.1 does not load)"
    else:
        found = f"this machine's driver supports CUDA {driver[0]}.{driver[1]}"
        found += f" (driver {release})" if release else ""
    built = "an unknown CUDA toolkit"
    if toolkit:
        major = int(toolkit.split(".")[0])
        built = f"CUDA {toolkit}, which needs a driver for CUDA {major}.x"
        built += f" (>= {MIN_DRIVER[major]})" if major in MIN_DRIVER else ""
    target = driver[0] if driver else (int(torch_cuda.split(".")[0]) if torch_cuda else None)
    rebuild = _rebuild_hint(target, torch_cuda)
    return f"fastsdf._cuda cannot run here: {cause}. It was built with {built}; {found}. {rebuild}"


def _rebuild_hint(major: int | None, torch_cuda: str | None) -> str:
    torch_note = f" (torch uses CUDA {torch_cuda})" if torch_cuda else ""
    toolkit = f"a CUDA {major}.x toolkit" if major else "the CUDA toolkit of your torch"
    hint = (f"Rebuild it against {toolkit}{torch_note}: `CUDA_HOME=/usr/local/cuda-{major or 'X'}.Y "
            "pip install -e . --no-build-isolation` in the source tree")
    if major is not None and major >= 13:
        # From CUDA 13 on, pip's wheels hold a whole toolkit, which setup.py finds by itself.
        hint += (f", or first `pip install \"nvidia-cuda-nvcc=={major}.*\" \"nvidia-cuda-runtime=={major}.*\" "
                 f"\"nvidia-cuda-cccl=={major}.*\"` (no CUDA_HOME needed)")
    return hint + "; or update the NVIDIA driver."
