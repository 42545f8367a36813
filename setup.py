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
                          (csrc/simt/runtime/*.cpp) must not be instrumented, so it is compiled
                          on its own here and linked in as objects. Its registration file is
                          csrc/fastgen_emulated.cpp, as csrc/fastgen.cpp is fastgen._C's.
"""

import glob
import os
import platform
import shlex
import subprocess
import sys

from setuptools import setup

# torch's CUDA_HOME auto-detection looks in /usr/local before /usr/local/cuda and then
# fails to link cudart; point it at the toolkit before cpp_extension is imported.
if "CUDA_HOME" not in os.environ and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

NO_TORCH = """fastgen's extension compiles against the torch you run, so torch must be installed first and
the build must see it (pip's default build isolation hides it). The two commands that work:

    pip install torch ninja setuptools wheel
    pip install --no-build-isolation -e ".[train,test]"

(or `make test` / `make run`, which do both in a .venv)."""

try:
    import torch  # noqa: E402
except ImportError:
    sys.exit(f"fastgen setup: No module named 'torch'.\n{NO_TORCH}")
from torch.utils.cpp_extension import (  # noqa: E402
    CUDA_HOME,
    BuildExtension,
    CppExtension,
    CUDAExtension,
)

ROOT = os.path.dirname(os.path.abspath(__file__))
# +PTX on the highest: GPUs newer than sm_90 JIT-compile the PTX instead of finding no kernel.
DEFAULT_ARCHS = "8.0;9.0+PTX"


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


def nvcc_version() -> str | None:
    if CUDA_HOME is None:
        return None
    try:
        out = subprocess.run(
            [os.path.join(CUDA_HOME, "bin", "nvcc"), "--version"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    release = [line for line in out.splitlines() if "release" in line]
    return release[0].split("release")[-1].strip() if release else "unknown"


def compiler_version() -> str:
    """The first line of the C++ compiler's --version (distutils uses $CXX, else c++)."""
    cxx = shlex.split(os.environ.get("CXX", "c++"))
    try:
        out = subprocess.run([*cxx, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = out.stdout.strip().splitlines()
    return f"{' '.join(cxx)}: {lines[0]}" if lines else "unknown"


def build_plan(with_cuda: bool, archs: str) -> str:
    """What this build will make, printed before it starts; loud when a CUDA torch gets a
    CPU-only build because nvcc was not found (every op on a GPU would fall back)."""
    lines = [f"fastgen build plan: torch {torch.__version__}, {compiler_version()}",
             f"  CPU kernels: {', '.join(CPU_CAPABILITIES)}, each in its own objects and picked "
             f"at run time (no -march: the build runs on any {platform.machine()} CPU)"]  # fmt: skip
    if with_cuda:
        lines.append(f"  CUDA kernels: nvcc {nvcc_version()} at {CUDA_HOME}, architectures {archs}")
    elif os.environ.get("FASTGEN_CUDA") == "0":
        lines.append("  CUDA kernels: not built (FASTGEN_CUDA=0)")
    elif torch.version.cuda is not None:
        lines.append(
            "  WARNING: torch was built with CUDA " + str(torch.version.cuda) + " but nvcc was not "
            "found, so this is a CPU-only build and every op on a GPU will run its PyTorch "
            "reference. Set CUDA_HOME to the CUDA toolkit (e.g. /usr/local/cuda) and rebuild, or "
            "set FASTGEN_CUDA=0 to silence this."
        )
    else:
        lines.append("  CUDA kernels: not built (this torch has no CUDA)")
    lines.append(
        "  emulated CUDA kernels: "
        + (
            "built"
            if os.environ.get("FASTGEN_EMULATED", "1") != "0"
            else "not built (FASTGEN_EMULATED=0)"
        )
    )
    return "\n".join(lines)


def nvidia_include_dirs() -> list[str]:
    # pip's CUDA builds of torch ship the CUDA headers (cuda_runtime_api.h, ...) in
    # site-packages/nvidia/*/include; add them so the build does not depend on CPATH.
    site = os.path.dirname(os.path.dirname(torch.__file__))
    return sorted(
        d for d in glob.glob(os.path.join(site, "nvidia", "*", "include")) if os.path.isdir(d)
    )


def write_build_config(with_cuda: bool, archs: str) -> None:
    path = os.path.join(ROOT, "fastgen", "_build_config.py")
    with open(path, "w") as f:
        f.write("# Written by setup.py at build time.\n")
        f.write(f"WITH_CUDA = {with_cuda!r}\n")
        f.write(f"CUDA_ARCHS = {archs.split(';') if with_cuda else []!r}\n")
        f.write(f"BUILD_TORCH_VERSION = {torch.__version__!r}\n")
        f.write(f"BUILD_CUDA_VERSION = {torch.version.cuda if with_cuda else None!r}\n")
        f.write(f"COMPILER = {compiler_version()!r}\n")
        f.write(f"NVCC_VERSION = {nvcc_version() if with_cuda else None!r}\n")
        f.write(f"CPU_CAPABILITIES = {list(CPU_CAPABILITIES)!r}\n")


def is_emulated_source(path: str) -> bool:
    return path.startswith(os.path.join("csrc", "simt") + os.sep) or path.endswith("_emulated.cpp")


def is_runtime_source(path: str) -> bool:
    """The emulator's runtime: in the emulated module, but compiled without instrumentation."""
    return path.startswith(os.path.join("csrc", "simt", "runtime") + os.sep)


def is_kernel_source(path: str) -> bool:
    return path.endswith("_kernels.cpp")


def extension():
    with_cuda = want_cuda()
    cpp_sources = sorted(
        p
        for p in glob.glob("csrc/**/*.cpp", recursive=True)
        if not is_emulated_source(p) and not is_kernel_source(p)
    )
    # The extension is compiled for the baseline of its architecture (x86-64: SSE2), so one
    # build runs on any CPU of it; the hot CPU loops are the *_kernels.cpp files, compiled
    # once per instruction set (CPU_CAPABILITIES) and chosen at run time from the CPU's
    # features (csrc/common/cpu_capability.h). -ffp-contract=off keeps every float operation
    # separately rounded.
    cxx_flags = ["-O3", "-std=c++20", "-fopenmp", "-ffp-contract=off"]
    include_dirs = [os.path.join(ROOT, "csrc")]
    archs = cuda_arch_list() if with_cuda else ""
    print(build_plan(with_cuda, archs), file=sys.stderr, flush=True)
    if with_cuda:
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


# --- CPU kernels compiled once per instruction set -----------------------------------------
# Each csrc/**/*_kernels.cpp holds plain loops and micro-kernels (no torch headers) in
# namespace FASTGEN_CPU_NS; it is compiled once per capability with that capability's flags
# and linked into fastgen._C, which picks one at run time (csrc/common/cpu_capability.cpp).

if platform.machine().lower() in ("x86_64", "amd64"):
    CPU_CAPABILITIES = {
        "baseline": [],
        "avx2": ["-mavx2", "-mfma", "-mf16c"],
        "avx512": [
            "-mavx512f",
            "-mavx512bw",
            "-mavx512dq",
            "-mavx512vl",
            "-mavx2",
            "-mfma",
            "-mf16c",
        ],
    }
else:  # aarch64 and others: the portable loops (NEON through the compiler's vectorizer)
    CPU_CAPABILITIES = {"baseline": []}
# The kernel TUs may use ATen (at::parallel_for, c10::Half): torch's include paths and ABI.
# Inline library code they instantiate (std::, c10::) is emitted in every copy; the linker
# keeps the first definition in link order, and fastgen._C's baseline objects come first,
# so code shared with the rest of the extension is always the baseline's.
# -fno-trapping-math: without it GCC keeps a branch per element for a select whose compare
# or one-sided multiply could raise an FP exception (leaky_relu's `x > 0 ? x : x * slope`,
# act'(y)), and vectorizes such loops only with AVX-512's masked instructions; no value
# changes (nothing is reassociated or contracted), and fastgen never reads the FP flags.
KERNEL_FLAGS = [
    "-O3", "-std=c++20", "-fPIC", "-ffp-contract=off", "-fno-trapping-math", "-fopenmp",
    "-fvisibility=hidden",
    f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
    *[f"-I{path}" for path in torch.utils.cpp_extension.include_paths()],
]  # fmt: skip


def kernel_sources() -> list[str]:
    return sorted(glob.glob("csrc/**/*_kernels.cpp", recursive=True))


def stale(obj: str, source: str, command: list[str]) -> bool:
    """True if obj is missing, was compiled by another command (flags changed), or is older
    than its source or any header its depfile lists."""
    if not os.path.exists(obj) or not os.path.exists(obj + ".d"):
        return True
    try:
        with open(obj + ".cmd") as f:
            if f.read() != " ".join(command):
                return True
    except FileNotFoundError:
        return True
    with open(obj + ".d") as f:
        deps = f.read().replace("\\\n", " ").split(":", 1)[-1].split()
    built = os.path.getmtime(obj)
    return any(not os.path.exists(d) or os.path.getmtime(d) > built for d in [source, *deps])


def compile_objects(jobs: list[tuple[str, str, list[str]]]) -> list[str]:
    """Compiles (source, object, flags) jobs that are stale, MAX_JOBS at a time."""
    from concurrent.futures import ThreadPoolExecutor

    cxx = shlex.split(os.environ.get("CXX", "c++"))

    def run(job):
        source, obj, flags = job
        command = [*cxx, *flags, "-MMD", "-MF", obj + ".d", "-c", source, "-o", obj]
        if stale(obj, source, command):
            os.makedirs(os.path.dirname(obj), exist_ok=True)
            print(" ".join(command), flush=True)
            subprocess.check_call(command)
            with open(obj + ".cmd", "w") as f:
                f.write(" ".join(command))
        return obj

    workers = max(1, int(os.environ.get("MAX_JOBS", os.cpu_count() or 1)))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(run, jobs))


# --- the emulated-cuda module ------------------------------------------------------------

EMULATED_FLAGS = [
    "-O2",
    "-std=c++20",
    "-ffp-contract=off",
    "-fvisibility=hidden",
    "-fsanitize=thread",  # instrumentation only: the hooks are the emulator's (runtime/hooks.cpp)
    "--param=tsan-instrument-func-entry-exit=0",
    "-Wno-unknown-pragmas",  # #pragma unroll
    "-DFASTGEN_SIMT_EMULATION=1",
]


def runtime_sources() -> list[str]:
    return sorted(glob.glob(os.path.join("csrc", "simt", "runtime", "*.cpp")))


def emulated_extension():
    sources = sorted(
        p
        for p in glob.glob("csrc/**/*.cpp", recursive=True)
        if is_emulated_source(p) and not is_runtime_source(p)
    )
    return CppExtension(
        name="fastgen._emulated_cuda",
        sources=sources,
        include_dirs=[os.path.join(ROOT, "csrc")],
        extra_compile_args={"cxx": EMULATED_FLAGS},
    )


class Build(BuildExtension.with_options(use_ninja=True)):
    """BuildExtension plus the emulator's runtime objects (compiled without instrumentation)."""

    def build_extensions(self):
        include = "-I" + os.path.join(ROOT, "csrc")
        for ext in self.extensions:
            if ext.name == "fastgen._emulated_cuda":
                flags = ["-O2", "-std=c++20", "-fPIC", "-fvisibility=hidden", include]
                jobs = []
                for source in runtime_sources():
                    stem = os.path.splitext(os.path.relpath(source, "csrc"))[0]
                    obj = os.path.join(self.build_temp, f"{stem}.o")
                    jobs.append((os.path.join(ROOT, source), obj, flags))
                ext.extra_objects = compile_objects(jobs)
            elif ext.name == "fastgen._C":
                jobs = []
                for source in kernel_sources():
                    stem = os.path.splitext(source)[0]
                    for capability, flags in CPU_CAPABILITIES.items():
                        obj = os.path.join(self.build_temp, "cpu", f"{stem}.{capability}.o")
                        defines = [
                            f"-DFASTGEN_CPU_NS={capability}",
                            f"-DFASTGEN_CPU_{capability.upper()}=1",
                        ]
                        jobs.append(
                            (
                                os.path.join(ROOT, source),
                                obj,
                                [*KERNEL_FLAGS, *flags, *defines, include],
                            )
                        )
                ext.extra_objects = compile_objects(jobs)
        super().build_extensions()


# FASTGEN_EMULATED=0 leaves the emulated module out (a GPU-only build, e.g. the quick GPU check).
if __name__ == "__main__":  # pip and `python setup.py` run it so; tests import the helpers
    EXTENSIONS = [extension()]
    if os.environ.get("FASTGEN_EMULATED", "1") != "0":
        EXTENSIONS.append(emulated_extension())
    setup(
        ext_modules=EXTENSIONS,
        cmdclass={"build_ext": Build},
    )
