"""What a user's settings, paths, URIs, models or data files cause ends an entry point with one
line on stderr and exit code 2 (the traceback only with HYDRA_FULL_ERROR=1); any other exception
is a bug and keeps its traceback. Hydra's own composition errors are held and said in one line
too (held_stderr)."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from chelation.data import DatasetError
from chelation.engine import EngineUnavailable
from chelation.models import ModelUnavailable
from chelation.settings import SettingsError
from chelation.tracking import TrackingUnavailable

USER_ERRORS = (SettingsError, DatasetError, TrackingUnavailable, EngineUnavailable,
               ModelUnavailable)
USER_ERROR_EXIT = 2


def one_line(err: BaseException) -> str:
    """An error's message on one line."""
    return " ".join(str(err).split()) or type(err).__name__


def exit_for(err: BaseException) -> NoReturn:
    """End the process for a user's error: one line, exit code 2; re-raised with
    HYDRA_FULL_ERROR=1."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise err
    release_stderr()
    sys.stdout.flush()
    print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
    sys.exit(USER_ERROR_EXIT)


# --- Hydra's own errors (composing the config: an unknown option, a value of the wrong type) --
# Hydra prints them over several lines before any code of ours runs; `held_stderr` keeps what is
# written to stderr until the config is composed (`release_stderr`) and, when the process ends
# before that with Hydra's exit code 1, prints it as one line with exit code 2.

_held: dict[str, Any] = {}


@contextmanager
def held_stderr() -> Iterator[None]:
    """Hold stderr until `release_stderr` (the config composed); a composition error that ends
    the process first becomes one line and exit code 2."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        yield
        return
    real, buffer = sys.stderr, io.StringIO()
    _held.update(real=real, buffer=buffer)
    sys.stderr = buffer
    try:
        yield
    except SystemExit as err:
        if _held and err.code == 1 and buffer.getvalue().strip():
            _held.clear()
            sys.stderr = real
            print(f"error: {hydra_error_line(buffer.getvalue())}", file=real, flush=True)
            sys.exit(USER_ERROR_EXIT)
        raise
    finally:
        release_stderr()


def release_stderr() -> None:
    """Stop holding stderr: what was held is written out, and stderr is itself again."""
    if not _held:
        return
    held = dict(_held)
    _held.clear()
    sys.stderr = held["real"]
    if held["buffer"].getvalue():
        held["real"].write(held["buffer"].getvalue())
        held["real"].flush()


def hydra_error_line(text: str) -> str:
    """Hydra's multi-line report of a composition error as one line: its message, the options
    it lists and the key (`full_key`), without the search path and the HYDRA_FULL_ERROR hint."""
    parts: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(("Config search path:", "Set the environment variable")):
            break
        if not stripped or stripped.startswith(("object_type=", "reference_type=")):
            continue
        if line.startswith("\t") and options:
            options.append(stripped)
            continue
        if options:
            parts.append(f"{options[0]} {', '.join(options[1:])}")
            options = []
        if stripped.startswith("Available options"):
            options = [stripped[0].lower() + stripped[1:]]
        else:
            parts.append(stripped.rstrip("."))
    if options:
        parts.append(f"{options[0]} {', '.join(options[1:])}")
    return "; ".join(parts) or " ".join(text.split())
