"""Where generated things live. One env var moves them all: STRUCTBENCH_HOME (default: the checkout)."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.core.errors import BenchError

REPO_ROOT = Path(__file__).resolve().parents[2]  # bench/core/paths.py -> the checkout


def home() -> Path:
    return Path(os.environ.get("STRUCTBENCH_HOME", REPO_ROOT))


def artifacts_dir() -> Path:
    return home() / "artifacts"


def results_dir() -> Path:
    return home() / "results"


RUN_FORMS = "a run folder, its results.json, a run id under the results folder, or 'latest'"


def resolve_run(text: str) -> Path:
    """The run folder that TEXT names: a folder, its results.json, a run id under results_dir(), or 'latest'
    (the most recently written run). One resolver for --resume, --run, report and compare."""
    root = results_dir()
    if text == "latest":
        found = sorted(root.glob("*/results.json"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
        if not found:
            raise BenchError(f"no runs under {root}: run `python -m bench run` first, or name a results file")
        return found[-1].parent
    for path in (Path(text), Path(text) / "results.json", root / text / "results.json"):
        if path.is_file() and path.name == "results.json":
            return path.parent
    raise BenchError(f"no results at {text!r}: expected {RUN_FORMS} (looked in {root})")


def ensure_writable(path: Path) -> Path:
    """Create `path` and prove we can write into it, or fail with one clear line before any work starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe-"):
            pass
    except OSError as exc:
        raise BenchError(f"output folder {path} is not writable: {exc.strerror or exc}") from None
    return path


def _umask() -> int:
    """This process's umask, read without setting it (os.umask sets it, and another thread creating a file in
    between would get mode 0666): Linux reports it in /proc/self/status; elsewhere the set-and-restore."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable (POSIX: the directory entry needs its own fsync)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via temp file + fsync + rename + directory fsync, so a crash never leaves a half-written file; the file
    gets the mode a plain `open()` would (0666 less the umask), not mkstemp's 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def lock_for(target: Path) -> Path:
    """Where the lock of a folder that is built by renaming lives: one folder of locks under home(), named by the
    target's path (a lock file beside the target would be left in a cache folder that callers expect empty)."""
    import hashlib

    resolved = str(target.resolve())
    return home() / ".locks" / f"{target.name}-{hashlib.sha256(resolved.encode()).hexdigest()[:12]}.lock"


@contextmanager
def locked(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock (filelock, on `path`) while this process writes `what`; another structbench process
    waits for it, saying so once. Locks are released when their process dies, so a killed run never blocks one."""
    from filelock import FileLock, Timeout

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"[lock] another structbench process is writing {what}: waiting for it …", file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
