"""How much memory an allocation may take, so that ops can refuse sizes before allocating."""

from __future__ import annotations

import os


def available_bytes(device: object = None) -> int:
    """Bytes that can still be allocated on ``device`` (host memory when it is None or a CPU)."""
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def check_fits(nbytes: int, what: str, device: object = None, hint: str = "") -> None:
    """Raises MemoryError, before anything is allocated, when ``nbytes`` exceed what is available."""
    free = available_bytes(device)
    if nbytes > free:
        where = "GPU" if device is not None and getattr(device, "type", str(device)) == "cuda" else "host"
        msg = f"{what} needs {format_bytes(nbytes)} but only {format_bytes(free)} of {where} memory is available"
        raise MemoryError(f"{msg}; {hint}" if hint else msg)
