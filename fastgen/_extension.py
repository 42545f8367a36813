"""Loads the compiled extension (fastgen._C), and the emulated CUDA kernels
(fastgen._emulated_cuda, csrc/simt), remembering why, if either could not be loaded."""

from __future__ import annotations

import functools
import importlib
import warnings

import torch  # loads libc10/libtorch before the extension

REBUILD = (
    "pip install --no-build-isolation --no-deps -e .  (in the fastgen source tree; or `make build`)"
)

LOADED = False
LOAD_ERROR: str | None = None

try:
    _C = importlib.import_module("fastgen._C")
    LOADED = True
except ImportError as exc:  # not built, or built against another torch
    _C = None
    LOAD_ERROR = f"{type(exc).__name__}: {exc}"

# The CUDA kernels built against the SIMT emulator: once its table is installed in _C, the
# CPU kernels of ops with a CUDA kernel run that kernel while the emulated-cuda backend is on.
EMULATED_LOADED = False
EMULATED_ERROR: str | None = "fastgen._C is not loaded"
_emulated_cuda = None
if LOADED:
    try:
        _emulated_cuda = importlib.import_module("fastgen._emulated_cuda")
        _C._install_emulated_cuda(_emulated_cuda.kernels())
        EMULATED_LOADED, EMULATED_ERROR = True, None
    except (ImportError, RuntimeError) as exc:
        _emulated_cuda = None
        EMULATED_ERROR = f"{type(exc).__name__}: {exc}"


def emulated_ops() -> frozenset:
    """Ops whose CUDA kernel runs under the emulated-cuda backend."""
    return frozenset(_C._emulated_cuda_ops()) if EMULATED_LOADED else frozenset()


def build_config() -> dict:
    """What setup.py recorded when the extension was built (empty if never built)."""
    try:
        from fastgen import _build_config as cfg
    except ImportError:
        return {}
    return {
        "with_cuda": cfg.WITH_CUDA,
        "cuda_archs": list(cfg.CUDA_ARCHS),
        "build_torch_version": cfg.BUILD_TORCH_VERSION,
        "build_cuda_version": cfg.BUILD_CUDA_VERSION,
        # recorded since the build plan; an older _build_config.py lacks them
        "compiler": getattr(cfg, "COMPILER", None),
        "nvcc_version": getattr(cfg, "NVCC_VERSION", None),
        "cpu_capabilities_built": list(getattr(cfg, "CPU_CAPABILITIES", [])),
    }


def _warn(message: str) -> None:
    # stacklevel past the import machinery: the warning points at the user's `import fastgen`
    warnings.warn(message, RuntimeWarning, stacklevel=4)


def check_build() -> str | None:
    """One sentence on what is wrong with the build for this process (built against another
    torch), or None; warned once at import. A GPU without a kernel image is found on the first
    op on it (kernel_image_problem), so importing fastgen never initialises CUDA."""
    built = build_config().get("build_torch_version")
    if not LOADED:
        if built and built != torch.__version__:
            return (f"fastgen: the extension was built against torch {built} but torch "
                    f"{torch.__version__} is running, so every op runs its PyTorch reference; "
                    f"rebuild it: {REBUILD}")  # fmt: skip
        return None  # not built: the per-op fallback says so once
    if built and built != torch.__version__:
        return (f"fastgen: the extension was built against torch {built} but torch {torch.__version__} "
                f"is running; rebuild it: {REBUILD}")  # fmt: skip
    return None


@functools.cache
def kernel_image_problem(device_index: int) -> str | None:
    """Why the CUDA kernels cannot run on GPU `device_index` (built for other architectures),
    or None; the ops then run their reference with this as the one warning."""
    cfg = build_config()
    capability = torch.cuda.get_device_capability(device_index)
    if not cfg.get("with_cuda") or has_kernel_image(capability, cfg.get("cuda_archs", [])):
        return None
    name = torch.cuda.get_device_name(device_index)
    return (f"the CUDA kernels were built for {';'.join(cfg['cuda_archs'])} but this GPU ({name}) "
            f"is sm_{capability[0]}{capability[1]}: there is no kernel image for it; rebuild with "
            f"TORCH_CUDA_ARCH_LIST={capability[0]}.{capability[1]} {REBUILD}")  # fmt: skip


def has_kernel_image(capability: tuple[int, int], archs: list[str]) -> bool:
    """Whether a build for `archs` (TORCH_CUDA_ARCH_LIST entries such as "8.0", "9.0+PTX")
    runs on a GPU of compute capability `capability`: a cubin runs on its major version at the
    same or a higher minor; PTX is compiled for any GPU at least as new."""
    major, minor = capability
    for arch in archs:
        ptx = arch.endswith("+PTX")
        a_major, a_minor = (int(v) for v in arch.removesuffix("+PTX").split(".")[:2])
        if a_major == major and a_minor <= minor:
            return True
        if ptx and (a_major, a_minor) <= (major, minor):
            return True
    return False


BUILD_PROBLEM = check_build()
if BUILD_PROBLEM is not None:
    _warn(BUILD_PROBLEM)
