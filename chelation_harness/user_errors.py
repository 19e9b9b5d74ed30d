"""What a user's settings, paths, URIs, models or data files cause ends an entry point with one
line on stderr and exit code 2 (the traceback only with HYDRA_FULL_ERROR=1); any other exception
is a bug and keeps its traceback."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

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
    sys.stdout.flush()
    print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
    sys.exit(USER_ERROR_EXIT)
