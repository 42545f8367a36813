"""fastgen's one writer of files that must never be seen half-written.

``atomic_write(path, write, fn=...)`` writes a temporary ``.<name>.<random>.tmp`` in the same
folder, fsyncs it, renames it over the final name and fsyncs the folder, so a crash leaves
the old file or the new one, never a torn one. A write that fails (full disk, read-only file
system, no permission, whether as an OSError or as torch.save's RuntimeError) raises
WriteError naming the file and leaves no temporary behind; one killed mid-write leaves its
temporary (``TEMPORARY`` matches its name), which the next start of a training run removes
(fastgen.train.run_folder.RunFolder).

Checkpoints, exported generators, image grids, loss plots, run markers, configs, logs and
evaluation JSONs are all written through it.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from fastgen.utils.errors import one_line

# atomic_write's temporaries: "." + final name + "." + mkstemp's 8 random characters + ".tmp"
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


class WriteError(OSError):
    """A file fastgen could not write (full disk, read-only file system, no permission). The
    message names the file; ``errno`` is the operating system's; the file is unchanged."""

    def __init__(self, message: str, path, code: int | None) -> None:
        super().__init__(message)
        self.errno = code  # set after __init__ so that str() stays the one-line message
        self.path = Path(path)


def default_file_mode() -> int:
    """The mode open() would give a new file (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def fsync_dir(folder: Path) -> None:
    """Makes a rename in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def writing(path, fn: str, note: str = ""):
    """Turns an OSError of the block (a full disk, a read-only file system, no permission)
    into a one-line WriteError: `fn` (the writing function), `path`, the reason, `note`."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        code = exc.errno
        if code in errno.errorcode:
            reason = f"{exc.strerror or os.strerror(code)} [{errno.errorcode[code]}]"
        else:
            reason = one_line(exc)
        raise WriteError(f"{fn}: cannot write {path}: {reason}{note}", path, code) from exc


def atomic_write(path, write: Callable[[IO[bytes]], None], *, fn: str) -> Path:
    """Writes a file with ``write(handle)`` so that `path` holds the old contents or the whole
    new ones, never a part (see the module docstring). The file gets the mode open() would
    give it (mkstemp's is 0600). An OSError becomes a WriteError naming `path` and `fn`, the
    calling function; the temporary is removed on any error. Returns the path."""
    path = Path(path)
    tmp = None
    try:
        with writing(path, fn, " (the file there, if any, is unchanged)"):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), default_file_mode())
                try:
                    write(handle)
                except RuntimeError as exc:  # how torch.save reports a failed write
                    raise _write_failure(exc) from exc
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            tmp = None
    finally:
        if tmp is not None:
            try:
                Path(tmp).unlink(missing_ok=True)
            except OSError:
                pass  # the run's next start removes it (RunFolder)
    fsync_dir(path.parent)  # after the rename: the file is new now, whatever this raises
    return path


def _write_failure(exc: RuntimeError) -> OSError:
    """The OSError behind a serializer's RuntimeError: torch.save reports a write that failed
    (a full disk) as "[enforce fail at inline_container.cc] unexpected pos", with the OSError
    only as its context. Without one, an OSError that quotes the RuntimeError."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return OSError(f"the write failed: {one_line(exc)}")


def atomic_write_text(path, text: str, *, fn: str) -> Path:
    """``atomic_write`` of a UTF-8 text (a JSON, a config, a log)."""
    data = text.encode()
    return atomic_write(path, lambda handle: handle.write(data), fn=fn)
