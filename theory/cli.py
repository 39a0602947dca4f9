"""Command-line plumbing every command shares, ``python -m theory.latex`` and the ``verify`` commands alike.

Bad input is one line on stderr and exit code 2, never a traceback: argparse's usage errors are raised as
``InvalidInputError`` like every other refused value, and one handler turns them into that line.  It lives
here, below both packages, because ``theory`` must not import ``verify``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from numerics.markov import InvalidInputError


class Parser(argparse.ArgumentParser):
    """argparse with usage errors raised as InvalidInputError (one stderr line, exit 2)."""

    def error(self, message: str):  # one line, exit 2
        raise InvalidInputError(message)


def check_writable(path: str) -> None:
    """An output file must be creatable before any computation starts: its folder exists and is
    writable, and the file itself, if present, is a writable file."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise InvalidInputError(f"{path} is a folder, not a file")
    if not folder.is_dir():
        raise InvalidInputError(f"cannot write {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise InvalidInputError(f"cannot write {path}: permission denied")


def bad_input(err: Exception) -> int:
    """One line on stderr, exit code 2."""
    print(f"error: {err}", file=sys.stderr)
    return 2
