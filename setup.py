"""Builds the fastgen extension from source.

Two extension modules:
  fastgen._C              the C++ CPU kernels, always; the CUDA kernels when torch was built
                          with CUDA and nvcc is found, or when FASTGEN_CUDA=1 (FASTGEN_CUDA=0
                          forces a CPU-only build). TORCH_CUDA_ARCH_LIST is honoured; with no
                          GPU visible it defaults to sm_80 and sm_90 (A100/H100) so a build
                          machine without a GPU still produces kernels for them.
  fastgen._emulated_cuda  the same CUDA kernels and launchers (csrc/**/*_cuda.cuh) compiled
                          with the host compiler against fastgen's SIMT emulator (csrc/simt),
                          in every build, with GCC's thread-sanitizer instrumentation so the
                          emulator sees every memory access (it implements the hooks itself;
                          no sanitizer runtime is linked). The emulator's runtime
                          (csrc/simt/runtime.cpp) must not be instrumented, so it is compiled
                          on its own here and linked in as an object.
"""

import glob
import os
import shlex
import subprocess
import sys

from setuptools import setup

# torch's CUDA_HOME auto-detection looks in /usr/local before /usr/local/cuda and then
# fails to link cudart; point it at the toolkit before cpp_extension is imported.
if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

import torch  # noqa: E402
from torch.utils.cpp_extension import (  # noqa: E402
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
)

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;9.0"


def want_cuda() -> bool:
    flag = os.environ.get("FASTGEN_CUDA", "")
    if flag == "0":
        return False
    if flag == "1":
        if torch.version.cuda is None or CUDA_HOME is None:
            sys.exit("FASTGEN_CUDA=1 but torch has no CUDA or nvcc was not found (set CUDA_HOME)")
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


def cuda_arch_list() -> str:
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if not archs and not torch.cuda.is_available():
        archs = DEFAULT_ARCHS
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
    if not archs:
        major, minor = torch.cuda.get_device_capability()
        archs = f"{major}.{minor}"
    return archs


def nvidia_include_dirs() -> list[str]:
    # pip's CUDA builds of torch ship the CUDA headers (cuda_runtime_api.h, ...) in
    # site-packages/nvidia/*/include; add them so the build does not depend on CPATH.
    site = os.path.dirname(os.path.dirname(torch.__file__))
    return sorted(d for d in glob.glob(os.path.join(site, "nvidia", "*", "include")) if os.path.isdir(d))


def write_build_config(with_cuda: bool, archs: str) -> None:
    path = os.path.join(ROOT, "fastgen", "_build_config.py")
    with open(path, "w") as f:
        f.write("# Written by setup.py at build time.\n")
        f.write(f"WITH_CUDA = {with_cuda!r}\n")
        f.write(f"CUDA_ARCHS = {archs.split(';') if with_cuda else []!r}\n")
        f.write(f"BUILD_TORCH_VERSION = {torch.__version__!r}\n")
        f.write(f"BUILD_CUDA_VERSION = {torch.version.cuda if with_cuda else None!r}\n")


def is_emulated_source(path: str) -> bool:
    return path.startswith(os.path.join("csrc", "simt") + os.sep) or path.endswith("_emulated.cpp")


def extension():
    with_cuda = want_cuda()
    cpp_sources = sorted(
        p for p in glob.glob("csrc/**/*.cpp", recursive=True) if not is_emulated_source(p)
    )
    cxx_flags = ["-O3", "-std=c++20", "-fopenmp", "-ffp-contract=off"]
    # Built from source for the machine it runs on, so the CPU kernels use its vector units
    # (AVX2/AVX-512 where present; baseline x86-64 is SSE2 only). -ffp-contract=off above keeps
    # every float operation separately rounded, so results do not depend on this flag.
    # FASTGEN_NATIVE_ARCH=0 builds portable code (e.g. a wheel for other machines).
    if os.environ.get("FASTGEN_NATIVE_ARCH", "1") != "0":
        cxx_flags.append("-march=native")
    include_dirs = [os.path.join(ROOT, "csrc")]
    archs = ""
    if with_cuda:
        archs = cuda_arch_list()
        cu_sources = sorted(glob.glob("csrc/**/*.cu", recursive=True))
        nvcc_flags = [
            "-O3",
            "-std=c++20",
            "--expt-relaxed-constexpr",
            # a*b+c rounds twice, as in the emulated build (-ffp-contract=off): the emulator's
            # numerics are then the device's for +-*/ and sqrt.
            "--fmad=false",
            "-lineinfo",
            "-Xptxas=-v" if os.environ.get("FASTGEN_PTXAS_VERBOSE") == "1" else "-Xptxas=-O3",
        ]
        write_build_config(True, archs)
        return CUDAExtension(
            name="fastgen._C",
            sources=cpp_sources + cu_sources,
            include_dirs=include_dirs + nvidia_include_dirs(),
            define_macros=[("FASTGEN_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=["-fopenmp"],
        )
    write_build_config(False, archs)
    return CppExtension(
        name="fastgen._C",
        sources=cpp_sources,
        include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )


# --- the emulated-cuda module ------------------------------------------------------------

RUNTIME_SOURCE = os.path.join("csrc", "simt", "runtime.cpp")
RUNTIME_HEADERS = [os.path.join("csrc", "simt", "runtime.h")]
EMULATED_FLAGS = [
    "-O2",
    "-std=c++20",
    "-ffp-contract=off",
    "-fvisibility=hidden",
    "-fsanitize=thread",  # instrumentation only: the hooks are the emulator's (runtime.cpp)
    "--param=tsan-instrument-func-entry-exit=0",
    "-Wno-unknown-pragmas",  # #pragma unroll
    "-DFASTGEN_SIMT_EMULATION=1",
]


def emulated_extension():
    sources = sorted(
        p
        for p in glob.glob("csrc/**/*.cpp", recursive=True)
        if is_emulated_source(p) and p != RUNTIME_SOURCE
    )
    return CppExtension(
        name="fastgen._emulated_cuda",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": EMULATED_FLAGS},
    )


class Build(BuildExtension.with_options(use_ninja=True)):
    """BuildExtension plus the emulator's runtime object (compiled without instrumentation)."""

    def build_extensions(self):
        for ext in self.extensions:
            if ext.name == "fastgen._emulated_cuda":
                ext.extra_objects = [self.build_runtime_object()]
        super().build_extensions()

    def build_runtime_object(self) -> str:
        out_dir = os.path.join(self.build_temp, "simt")
        os.makedirs(out_dir, exist_ok=True)
        obj = os.path.join(out_dir, "runtime.o")
        inputs = [os.path.join(ROOT, p) for p in [RUNTIME_SOURCE, *RUNTIME_HEADERS]]
        if os.path.exists(obj) and os.path.getmtime(obj) >= max(map(os.path.getmtime, inputs)):
            return obj
        cxx = os.environ.get("CXX", "c++")
        command = [
            *shlex.split(cxx),
            "-O2",
            "-std=c++20",
            "-fPIC",
            "-fvisibility=hidden",
            "-I" + os.path.join(ROOT, "csrc"),
            "-c",
            os.path.join(ROOT, RUNTIME_SOURCE),
            "-o",
            obj,
        ]
        print(" ".join(command))
        subprocess.check_call(command)
        return obj


# FASTGEN_EMULATED=0 leaves the emulated module out (a GPU-only build, e.g. the quick GPU check).
EXTENSIONS = [extension()]
if os.environ.get("FASTGEN_EMULATED", "1") != "0":
    EXTENSIONS.append(emulated_extension())

setup(
    ext_modules=EXTENSIONS,
    cmdclass={"build_ext": Build},
)
