"""Keeping freed memory for reuse in the processes fastgen's commands own.

Why: glibc's malloc serves large blocks (a training step's activations, gradients and
oneDNN's reorders, 0.1-4 MB each at the main job's sizes) with fresh `mmap`s and gives freed
heap memory back to the OS, with thresholds that move with what the process did before. A
block served from fresh pages pays a page fault per 4 KiB page on first touch, and on the
virtual machines fastgen is measured on a fault costs microseconds. Counted with getrusage
over 20 DCGAN steps (AMD EPYC Zen 4 VM, 1 thread, torch 2.13.0+cpu): 950-4,300 minor faults
a step depending on the variant and on what ran before, which made the same step's time swing
between processes (issue 23). With the thresholds fixed, ~0 faults a step.

So `fastgen train` and `fastgen bench train`'s child processes call `keep_freed_memory()` once
at start: blocks up to 32 MiB come from the heap, and freed heap memory stays mapped for the
next step (`mallopt(M_MMAP_THRESHOLD)`, `mallopt(M_TRIM_THRESHOLD)`). The cost: the process
keeps its peak heap mapped until it exits, as jemalloc and tcmalloc do by default. Importing
fastgen as a library changes nothing; a program of your own can call this function.
FASTGEN_HEAP=default turns it off (the allocator's own behaviour), e.g. to compare.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc refuses mmap thresholds above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit); bigger blocks are
# rare in fastgen's runs and keep their own mmap.
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 1 << 30

_applied: bool | None = None


def setting(fn: str = "fastgen.utils.heap.setting") -> str:
    """FASTGEN_HEAP: "keep" (unset or empty) or "default"; anything else is a ValueError naming
    `fn`, the caller."""
    choice = os.environ.get("FASTGEN_HEAP", "") or "keep"
    if choice not in ("keep", "default"):
        raise ValueError(f"{fn}: FASTGEN_HEAP must be keep or default, got {choice!r}")
    return choice


def keep_freed_memory() -> bool:
    """Makes glibc's malloc keep freed memory for reuse (module docstring says why).

    Returns:
        True if the settings took effect (Linux with glibc, FASTGEN_HEAP unset or "keep"),
        False otherwise; the same answer on every later call, which changes nothing more.
    """
    global _applied
    if _applied is not None:
        return _applied
    choice = setting("fastgen.utils.heap.keep_freed_memory")  # a bad value raises every call
    _applied = False
    if choice == "default" or not sys.platform.startswith("linux"):
        return _applied
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - present on glibc only (not musl)
    except (OSError, AttributeError):
        return _applied
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
    return _applied
