"""The output folder of a stage: checked before any work, locked for the run, and its failures named in one line.

Every stage that writes calls :func:`output_lock` (or :func:`prepare_output` for a folder it only adds to) on its
``--out`` before it reads any input; what it then does with an earlier run's outputs there (refuse, resume,
replace) is :func:`realsr_tools.pipeline.resume.prepare_stage_output`. A second realsr run into the same folder is
refused while the first holds the lock, so two runs can never mix their outputs and manifests.
:func:`location_error` turns the ``OSError`` of a write (no space left, read-only file system, no permission) into
an :class:`~realsr_tools.errors.OutputLocationError` naming the path and the cause: it stops the run, it is never
one item's failure.
"""

from __future__ import annotations

import errno
import functools
import inspect
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from ..errors import OutputLocationError

F = TypeVar("F", bound=Callable)
LOCK_NAME = ".realsr.lock"
# Below this many free bytes a failed write is reported as a full disk (encoders such as OpenCV's only return False).
LOW_SPACE = 64 << 20
CAUSES = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
          errno.EROFS: "read-only file system", errno.EACCES: "no permission to write there",
          errno.EPERM: "no permission to write there", errno.ENOTDIR: "not a folder",
          errno.EEXIST: "a file of that name exists (not a folder)"}


def location_error(exc: OSError, path: Path | str) -> OutputLocationError | None:
    """The one-line error for a write to ``path`` that failed with ``exc``, or None when the cause is not the location."""
    cause = CAUSES.get(exc.errno)
    if cause is None:
        return None
    return OutputLocationError(f"{path}: cannot write the output there: {cause}"
                               + ("; free some space or choose another --out" if exc.errno in (errno.ENOSPC,
                                                                                               errno.EDQUOT)
                                  else "; choose another --out"))


def check_space(folder: Path | str, path: Path | str | None = None) -> None:
    """Raise the full-disk error when ``folder`` has (almost) no free space; for writers that do not say why."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < LOW_SPACE:
        raise location_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path or folder)


def prepare_output(out_dir: Path | str) -> Path:
    """Create ``out_dir`` and check that realsr can write there; one clear error otherwise."""
    out_dir = Path(out_dir)
    for parent in (out_dir, *out_dir.parents):
        if parent.exists() and not parent.is_dir():
            raise OutputLocationError(f"{out_dir}: --out must be a folder, but {parent} is a file; choose another "
                                      "--out")
        if parent.is_dir():
            break
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _probe(out_dir)
    except OSError as exc:
        raise location_error(exc, out_dir) or exc from None
    check_space(out_dir)
    return out_dir


def _probe(out_dir: Path) -> None:
    """Create and remove a file in ``out_dir`` (the only reliable check: permissions, read-only mounts, ACLs)."""
    import tempfile

    fd, name = tempfile.mkstemp(prefix=".realsr-probe.", dir=out_dir)
    os.close(fd)
    os.unlink(name)


@contextmanager
def output_lock(out_dir: Path | str) -> Iterator[Path]:
    """Hold ``out_dir`` for one run: :func:`prepare_output`, then an exclusive lock a second run is refused by.

    The lock is an ``flock`` on ``out_dir/.realsr.lock``, removed when the run ends (so outputs hold no stray file);
    the operating system releases it when the process ends, even on ``kill -9``, so a killed run never leaves the
    folder locked (only the small file, which the next run takes over).
    """
    missing = [folder for folder in (Path(out_dir), *Path(out_dir).parents) if not folder.exists()]
    out_dir = prepare_output(out_dir)
    path = out_dir / LOCK_NAME
    stream = _acquire(path, out_dir)
    held = out_dir.resolve()
    _HELD[held] = _HELD.get(held, 0) + 1
    try:
        yield out_dir
    finally:
        _HELD[held] -= 1
        if not _HELD[held]:
            del _HELD[held]
        try:
            path.unlink(missing_ok=True)  # while still holding the lock: see _acquire
        finally:
            stream.close()
        if missing:  # a run refused before it wrote anything leaves no empty folders behind
            try:
                if not any(out_dir.iterdir()):
                    for folder in missing:
                        folder.rmdir()
            except OSError:
                pass


_HELD: dict[Path, int] = {}  # folders this process holds the lock of (resolved), for holds_lock


def holds_lock(out_dir: Path | str) -> bool:
    """Whether this process holds :func:`output_lock` on ``out_dir`` now."""
    return Path(out_dir).resolve() in _HELD


def _acquire(path: Path, out_dir: Path):
    """Open and ``flock`` the lock file; retry when the holder removed it between our open and our lock."""
    import fcntl
    import sys

    while True:
        try:
            stream = open(path, "a+", encoding="utf-8")
        except OSError as exc:
            raise location_error(exc, out_dir) or exc from None
        try:
            fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            stream.seek(0)
            holder = stream.read().strip() or "another process"
            stream.close()
            raise OutputLocationError(f"{out_dir}: another realsr run is writing to this folder ({holder}); wait "
                                      "for it to finish or choose another --out") from None
        try:
            same = os.fstat(stream.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder unlinked the file we locked: lock the current one instead
            stream.close()
            continue
        stream.seek(0)
        stream.truncate()
        stream.write(f"pid {os.getpid()}: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}\n")
        stream.flush()
        return stream


def holds_output(argument: str = "out_dir") -> Callable[[F], F]:
    """Decorate a stage function so that it runs holding :func:`output_lock` on its ``argument`` folder.

    A call with ``dry_run=True`` writes nothing and takes no lock.
    """
    def decorate(function: F) -> F:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            if bound.arguments.get("dry_run"):
                return function(*args, **kwargs)
            with output_lock(bound.arguments[argument]):
                return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
