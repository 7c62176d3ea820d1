"""Atomic, umask-respecting file writes: the one helper every writer of the project uses.

A file (or a whole directory: `atomic_directory`) appears complete or not at all (written to
a temporary sibling, then renamed), and is created with the permissions the user's umask gives
a new file, not mkstemp's 0600.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from mlx_diar.errors import OptionError


def umask_mode(base: int = 0o666) -> int:
    """`base` less the process umask: the mode `open()` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; on success it replaces `path` atomically.

    On an exception the temporary file is removed and `path` is left as it was.
    `suffix` keeps an extension that a writer insists on (e.g. ".npz").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, umask_mode())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write text or bytes to `path` atomically; returns `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _leftovers(path: Path) -> Iterator[Path]:
    """Temporary siblings of `path` left by an `atomic_directory` whose process is gone."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:partial|old)-(\d+)-[\w]+$")
    for sibling in path.parent.iterdir():
        match = pattern.match(sibling.name)
        if match and sibling.is_dir() and not sibling.is_symlink() and not _alive(int(match.group(1))):
            yield sibling


def check_directory_target(path: Path, replace: bool = False) -> bool:
    """Whether `path` exists as a non-empty directory; OptionError if it may not become an output directory."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise OptionError(f"{path}: exists and is not a directory; choose another output path")
    occupied = path.is_dir() and any(path.iterdir())
    if occupied and not replace:
        raise OptionError(f"{path}: exists and is not empty; pass --force (force=True) to replace it")
    return occupied


@contextlib.contextmanager
def atomic_directory(path: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary sibling directory to fill; on success it becomes `path`.

    - `path` may not exist yet or be an empty directory; a non-empty one is replaced only
      with `replace=True` (renamed aside, the new one renamed in, then the old one removed),
      otherwise OptionError is raised before anything is written.
    - On an exception the temporary directory is removed and `path` is left as it was.
    - Temporary directories of a crashed earlier run (named `.NAME.partial-PID-*` or
      `.NAME.old-PID-*`, PID no longer running) are removed; nothing else is touched.
    - The directory gets the permissions the user's umask gives a new directory.
    """
    path = Path(path)
    check_directory_target(path, replace)
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in _leftovers(path):
        shutil.rmtree(leftover, ignore_errors=True)
    tag = f"{os.getpid()}-{os.urandom(4).hex()}"
    work = path.with_name(f".{path.name}.partial-{tag}")
    work.mkdir(mode=0o777)  # less the umask, as mkdir applies it
    try:
        yield work
        if path.exists():
            old = path.with_name(f".{path.name}.old-{tag}")
            path.rename(old)
            work.rename(path)
            shutil.rmtree(old)
        else:
            work.rename(path)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def writable_dir(path: Path, option: str, what: str = "") -> Path:
    """Create `path` if missing and prove a file can be created in it, else `OptionError` naming `option`
    (and `what` is written there, e.g. "reports "): checked before any work, so nothing is lost later."""
    from mlx_diar.errors import OptionError

    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise OptionError(f"{option}: cannot write {what}there ({e.strerror or e})") from None
    return path
