"""One error type per layer, all under `MlxDiarError`.

Each is raised with the file (or option) and the problem in its message, so that the
command lines print it as one line without a traceback (`--debug` shows the traceback).
The Python API raises the same types.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import traceback
import warnings
from typing import Callable, Iterator, NoReturn


class MlxDiarError(Exception):
    """Base class of the errors a user can act on."""


class OptionError(MlxDiarError, ValueError):
    """An option, parameter or output path that cannot be used, naming it."""


class AudioError(MlxDiarError, ValueError):
    """Audio that cannot be used, naming the file and the problem."""


class CheckpointError(MlxDiarError, RuntimeError):
    """A checkpoint or checkpoint source that cannot be used, with what to do about it."""


class UnsafeSourceError(CheckpointError):
    """A pipeline directory, config or index that tries to leave its directory or run code."""


class ModelDirError(MlxDiarError, RuntimeError):
    """A converted model directory that cannot be loaded, naming the file and the problem."""


class OutputError(MlxDiarError, OSError):
    """An output file that cannot be written (disk full, permissions, ...), naming the file."""


# What a command line shows as one line: our errors, and the OS refusing a read or write.
USER_ERRORS: tuple[type[BaseException], ...] = (MlxDiarError, OSError)


def report(error: BaseException, debug: bool = False, context: str = "") -> int:
    """Print `error` on stderr as one line `error: CONTEXT...` (the traceback first under --debug); returns 1."""
    if debug:
        traceback.print_exception(error, file=sys.stderr)
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"error: {context}{message}", file=sys.stderr)
    return 1


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its errors as one line, `error: ... (see --help)`, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def bounded_number(low: float, integer: bool = False, strict: bool = False) -> Callable[[str], float]:
    """argparse `type=`: a finite number >= low (> low when `strict`); integers when `integer`."""
    def parse(text: str) -> float:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if integer else 'a number'}, "
                                             f"got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            bound = f" {'>' if strict else '>='} {low:g}" if math.isfinite(low) else ""
            raise argparse.ArgumentTypeError(f"must be a finite number{bound}, got {text!r}")
        return value
    return parse


@contextlib.contextmanager
def warnings_as_lines(*categories: type[Warning]) -> Iterator[None]:
    """Warnings of `categories` raised inside the block are printed as they come, one line each,
    `warning: MESSAGE`, on stderr (not Python's two lines with the source line); others as before."""
    with warnings.catch_warnings():
        for category in categories:
            warnings.simplefilter("always", category)
        show = warnings.showwarning

        def one_line(message, category, filename, lineno, file=None, line=None) -> None:
            if issubclass(category, categories):
                print(f"warning: {message}", file=sys.stderr)
            else:
                show(message, category, filename, lineno, file, line)

        warnings.showwarning = one_line
        yield
