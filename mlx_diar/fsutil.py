"""Atomic, umask-respecting file writes: the one helper every writer of the project uses.

A file (or a whole directory: `atomic_directory`) appears complete or not at all (written to
a temporary sibling, then renamed), and is created with the permissions the user's umask gives
a new file, not mkstemp's 0600. A write that fails (disk full, ...) is an `OutputError` naming
the file. Output paths are checked before any work: `TextOutput` (a command's `--rttm`: a
regular file, stdout, a FIFO or a character device; never replaced by something else) and
`check_output_file` (a file a run writes: never a symlink, a non-regular file or an input).
`file_stem` keeps names derived from data (uris) within the file-name limit.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Iterable, Iterator

from mlx_diar.errors import OptionError, OutputError

# The longest file-name stem written from data (a uri): NAME_MAX is 255 bytes on common file systems, and
# suffixes (".float32-pure-q8g64-sparse.rttm") and atomic-write temporaries (".NAME.XXXXXXXX.tmp") need room.
STEM_BYTES = 160


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
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        os.chmod(tmp_path, umask_mode())
        os.replace(tmp_path, path)
    except BaseException as e:
        if tmp_path is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            raise OutputError(f"{path}: cannot write ({e.strerror or e})") from e
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
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise OptionError(f"{option}: cannot write {what}there ({e.strerror or e})") from None
    return path


def file_stem(name: str) -> str:
    """`name` as a file-name stem of at most STEM_BYTES bytes (UTF-8): unchanged when it fits, else its
    beginning, '-' and 16 hex digits of its sha256: deterministic, and distinct names stay distinct."""
    data = name.encode("utf-8", "surrogateescape")
    if len(data) <= STEM_BYTES:
        return name
    head = re.sub(r"%[0-9A-Fa-f]?$", "", data[: STEM_BYTES - 17].decode("utf-8", "ignore"))  # no cut escape
    return f"{head}-{hashlib.sha256(data).hexdigest()[:16]}"


def _resolved(path: Path) -> str:
    return os.path.realpath(path)


def check_output_file(path: Path, inputs: Iterable[str | Path] = ()) -> Path:
    """`path` may be written by `atomic_write`: OptionError if it is a symlink or an existing non-regular
    file (which an atomic write would replace), or one of `inputs` (symlinks resolved). Returns `path`."""
    path = Path(path)
    if path.is_symlink():
        raise OptionError(f"{path}: is a symlink; refusing to replace it with a file (remove it or choose "
                          "another output)")
    if path.exists() and not path.is_file():
        raise OptionError(f"{path}: exists and is not a regular file; refusing to replace it")
    if _resolved(path) in {_resolved(Path(p)) for p in inputs}:
        raise OptionError(f"{path}: is also an input of this run; refusing to overwrite it (choose another output)")
    return path


# paths that name one of this process's open files: written through, never replaced
_OWN_STREAMS = ("/dev/stdout", "/dev/stderr")
_OWN_STREAM_DIRS = ("/dev/fd/", "/proc/self/fd/")


class TextOutput:
    """Where a command writes text it extends part by part (e.g. `--rttm`), checked before any work.

    - `-` or `/dev/stdout`: standard output.
    - A regular file (or a new one): rewritten atomically with everything so far after each part; a
      symlink to a regular file has its target rewritten in place (the link is kept).
    - A FIFO, a character device, `/dev/stderr` or `/dev/fd/N`: opened once and written through,
      each part once; never replaced.
    - A directory, a block device, a socket, a dangling symlink or one of `inputs`: OptionError
      naming `option`.
    """

    def __init__(self, path: str | Path, option: str, inputs: Iterable[str | Path] = ()) -> None:
        self.path, self.option = Path(path), f"{option} {path}"
        self.parts: list[str] = []
        self.handle: IO[str] | None = None
        text = str(path)
        if text in ("-", "/dev/stdout"):
            self.kind, self.target = "stdout", None
            return
        if text in _OWN_STREAMS or text.startswith(_OWN_STREAM_DIRS):
            self.kind, self.target = "stream", self.path
        else:
            self.kind, self.target = self._classify()
        if self.kind == "stream":
            if not os.access(self.path, os.W_OK):
                raise OptionError(f"{self.option}: not writable")
            return
        if _resolved(self.target) in {_resolved(Path(p)) for p in inputs}:
            raise OptionError(f"{self.option}: is also an input; refusing to overwrite it")
        writable_dir(self.target.parent, self.option)

    def _classify(self) -> tuple[str, Path]:
        try:
            mode = os.stat(self.path).st_mode  # symlinks followed
        except (FileNotFoundError, NotADirectoryError):
            if self.path.is_symlink():
                raise OptionError(f"{self.option}: is a symlink to a missing file; refusing to write "
                                  "through it") from None
            return "file", self.path
        except OSError as e:
            raise OptionError(f"{self.option}: cannot use it ({e.strerror or e})") from None
        if stat.S_ISDIR(mode):
            raise OptionError(f"{self.option}: is a directory")
        if stat.S_ISREG(mode):
            return "file", Path(_resolved(self.path))
        if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
            return "stream", self.path
        kind = "block device" if stat.S_ISBLK(mode) else "socket" if stat.S_ISSOCK(mode) else "special file"
        raise OptionError(f"{self.option}: is a {kind}; only a regular file, a FIFO, a character device or - "
                          "(stdout) can take the output")

    def add(self, text: str) -> None:
        """Write one more part: appended to a stream, or the regular file rewritten with every part so far."""
        if self.kind == "file":
            self.parts.append(text)
            atomic_write(self.target, "".join(self.parts))
            return
        try:
            if self.kind == "stdout":
                handle = sys.stdout
            else:
                if self.handle is None:
                    self.handle = open(self.path, "a", encoding="utf-8")
                handle = self.handle
            handle.write(text)
            handle.flush()
        except OSError as e:
            raise OutputError(f"{self.path}: cannot write ({e.strerror or e})") from e

    def close(self) -> None:
        """Close a stream opened by `add` (a file or stdout needs nothing)."""
        if self.handle is not None:
            self.handle.close()
            self.handle = None

    def __enter__(self) -> "TextOutput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
