"""Builds fastsdf._C (C++17 + OpenMP) always and fastsdf._cuda (CUDA) whenever nvcc is found.

Neither module links against torch: both take raw buffers, so one build serves any torch version.

Environment:
    FASTSDF_CUDA=0|1        force the CUDA module off or on (default: on when nvcc is found)
    FASTSDF_CUDA_ARCHS      semicolon-separated SM versions, "+PTX" on one adds its PTX
                            (default "80;86;89;90+PTX")
    CUDA_HOME / CUDA_PATH   toolkit root; otherwise /usr/local/cuda or the directory above nvcc
"""

import os
import shutil
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


def _cuda_home():
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return Path(os.environ[var])
    if Path("/usr/local/cuda/bin/nvcc").exists():
        return Path("/usr/local/cuda")
    nvcc = shutil.which("nvcc")
    return Path(nvcc).resolve().parent.parent if nvcc else None


def _want_cuda():
    flag = os.environ.get("FASTSDF_CUDA", "").strip()
    home = _cuda_home()
    found = home is not None and (home / "bin" / "nvcc").exists()
    if flag == "0":
        return None
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
    cpu_sources = ["csrc/bindings_cpu.cpp", *_relative(CSRC.glob("*/*_cpu.cpp"))]
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


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
