"""Builds fastsdf._C (C++17 + OpenMP) always and fastsdf._cuda (CUDA) whenever nvcc is found.

Neither module links against torch: both take raw buffers, so one build serves any torch version.

fastsdf._cuda links the toolkit's static CUDA runtime, so it runs on the NVIDIA drivers that the
toolkit's major version supports (CUDA 12: >= 525, CUDA 13: >= 580), whatever CUDA torch ships. The
build therefore prefers the toolkit of torch's own CUDA (same major.minor, then same major): where
torch runs, the module then runs too. It warns when only a newer major version is found.

Environment:
    FASTSDF_CUDA=0|1        force the CUDA module off or on (default: on when nvcc is found)
    FASTSDF_CUDA_ARCHS      semicolon-separated SM versions, "+PTX" on one adds its PTX
                            (default "80;86;89;90+PTX")
    CUDA_HOME / CUDA_PATH   toolkit root, used as given; otherwise the best of /usr/local/cuda,
                            nvcc on PATH, /usr/local/cuda-X.Y and pip's nvidia-cuda-nvcc (CUDA 13+:
                            site-packages/nvidia/cuXX) for torch.version.cuda
"""

import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension
from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent
CSRC = ROOT / "csrc"
# -fno-math-errno: sqrtf may then compile to one vector instruction (nothing reads errno).
CPU_FLAGS = ["-O3", "-fopenmp", "-fno-math-errno"]


def _relative(paths):
    return sorted(str(p.relative_to(ROOT)) for p in paths)


def toolkit_version(home):
    """(major, minor) of the toolkit at ``home`` from its CUDART_VERSION, None where it has none."""
    header = Path(home) / "include" / "cuda_runtime_api.h"
    if not header.is_file():
        return None
    found = re.search(r"#define\s+CUDART_VERSION\s+(\d+)", header.read_text(errors="replace"))
    if found is None:
        return None
    version = int(found.group(1))
    return version // 1000, version % 1000 // 10


def toolkit_candidates(usr_local, site_dirs, nvcc_on_path):
    """Toolkit roots that have nvcc, in the order that decides among equals: /usr/local/cuda (the
    system's default), the one of nvcc on PATH, /usr/local/cuda-X.Y, pip's (nvidia/cuXX)."""
    usr_local = Path(usr_local)
    roots = [usr_local / "cuda"]
    if nvcc_on_path:
        roots.append(Path(nvcc_on_path).resolve().parent.parent)
    roots += sorted(usr_local.glob("cuda-*"))
    for directory in site_dirs:
        roots += sorted(Path(directory).glob("nvidia/cu[0-9]*"))
    seen, found = set(), []
    for root in roots:
        if (root / "bin" / "nvcc").exists() and root.resolve() not in seen:
            seen.add(root.resolve())
            found.append(root)
    return found


def choose_toolkit(candidates, torch_cuda, explicit=None):
    """(toolkit root or None, warning or None). ``explicit`` (CUDA_HOME) wins; otherwise, for a CUDA
    build of torch (``torch_cuda`` "12.4"), the candidate of the same major.minor, then of the same
    major (older minors first, the closest first: any runs on the driver torch needs, and an older one
    never has newer PTX than that driver compiles), then an older major; a newer major last, with a
    warning. Without torch's CUDA, the first candidate."""
    want = tuple(int(x) for x in torch_cuda.split(".")[:2]) if torch_cuda else None
    if explicit is not None:
        return Path(explicit), _newer_warning(toolkit_version(explicit), want, explicit)
    versioned = [(root, toolkit_version(root)) for root in candidates]
    versioned = [(root, version) for root, version in versioned if version is not None]
    if not versioned:
        return None, None
    if want is None:
        return versioned[0][0], None

    def rank(item):
        major, minor = item[1]
        if major == want[0]:
            return (0, minor > want[1], abs(minor - want[1]))
        return (1, major > want[0], abs(major - want[0]))

    root, version = min(versioned, key=rank)
    return root, _newer_warning(version, want, root)


def _newer_warning(version, want, root):
    if version is None or want is None or version[0] <= want[0]:
        return None
    return (f"fastsdf._cuda is built with CUDA {version[0]}.{version[1]} ({root}) but torch uses CUDA "
            f"{want[0]}.{want[1]}: it will need an NVIDIA driver for CUDA {version[0]}, newer than torch "
            f"needs, and fail on older ones. Install a CUDA {want[0]}.x toolkit and point CUDA_HOME at it, "
            "or set FASTSDF_CUDA=0.")


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch.version.cuda


def _cuda_home():
    explicit = next((os.environ[var] for var in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(var)), None)
    site_dirs = [*site.getsitepackages(), site.getusersitepackages()]
    candidates = [] if explicit else toolkit_candidates("/usr/local", site_dirs, shutil.which("nvcc"))
    home, warning = choose_toolkit(candidates, _torch_cuda(), explicit)
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr)
    return home


def _want_cuda():
    flag = os.environ.get("FASTSDF_CUDA", "").strip()
    if flag == "0":
        return None
    home = _cuda_home()
    found = home is not None and (home / "bin" / "nvcc").exists()
    if flag == "1" and not found:
        sys.exit("FASTSDF_CUDA=1 but nvcc was not found: set CUDA_HOME or put nvcc on PATH")
    return home if found else None


def _gencode_flags():
    flags = []
    for arch in os.environ.get("FASTSDF_CUDA_ARCHS", "80;86;89;90+PTX").split(";"):
        arch = arch.strip()
        if not arch:
            continue
        ptx = arch.endswith("+PTX")
        sm = arch.removesuffix("+PTX").replace(".", "")
        flags.append(f"-gencode=arch=compute_{sm},code=sm_{sm}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{sm},code=compute_{sm}")
    return flags


class BuildExt(build_ext):
    """Compiles the .cu sources of an extension with nvcc and links their objects in."""

    def build_extension(self, ext):
        cu_sources = [s for s in ext.sources if s.endswith(".cu")]
        if cu_sources:
            ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
            ext.extra_objects = list(ext.extra_objects or []) + self._nvcc(cu_sources, ext)
        super().build_extension(ext)

    def _nvcc(self, sources, ext):
        nvcc = str(ext.cuda_home / "bin" / "nvcc")
        out_dir = Path(self.build_temp) / "cuda"
        out_dir.mkdir(parents=True, exist_ok=True)
        objects = []
        for src in sources:
            obj = out_dir / (Path(src).stem + ".o")
            cmd = [nvcc, "-c", src, "-o", str(obj), "-std=c++17", "-O3",
                   "-Xcompiler", "-fPIC", f"-I{CSRC}", *_gencode_flags()]
            print(" ".join(cmd))
            subprocess.check_call(cmd)
            objects.append(str(obj))
        return objects


def _extensions():
    common = [str(CSRC)]
    # Headers, so that changing one rebuilds the modules.
    headers = _relative(CSRC.rglob("*.h"))
    # An op's C++ sources (its CPU kernels, and the BVH builder both backends query) go into _C.
    cpu_sources = ["csrc/bindings_cpu.cpp", *_relative(CSRC.glob("*/*.cpp"))]
    exts = [
        Pybind11Extension("fastsdf._C", cpu_sources, include_dirs=common, depends=headers, cxx_std=17,
                          extra_compile_args=CPU_FLAGS, extra_link_args=["-fopenmp"]),
    ]
    cuda_home = _want_cuda()
    if cuda_home is not None:
        lib = next((cuda_home / d for d in ("lib64", "lib", "targets/x86_64-linux/lib")
                    if (cuda_home / d / "libcudart_static.a").exists()), cuda_home / "lib64")
        cuda = Pybind11Extension(
            "fastsdf._cuda",
            ["csrc/bindings_cuda.cpp", *_relative(CSRC.glob("*/*.cu"))],
            include_dirs=[*common, str(cuda_home / "include")],
            depends=headers,
            cxx_std=17,
            extra_compile_args=["-O3"],
            library_dirs=[str(lib)],
            # The static runtime needs only the driver at run time, whatever CUDA torch ships.
            libraries=["cudart_static", "rt", "pthread", "dl"],
        )
        cuda.cuda_home = cuda_home
        exts.append(cuda)
    return exts


if __name__ == "__main__":  # the tests import this file for the toolkit choice
    setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
