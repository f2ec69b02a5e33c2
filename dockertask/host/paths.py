"""Where dockertask keeps its files on the host: the user's cache and state directories.

On Linux these follow the XDG base directory rules, which is all platformdirs does there; reading
them directly spares every fresh process platformdirs' import (~7 ms of a first call, in which the
runtime zip's cache and the abandoned-container records are both looked up). Elsewhere platformdirs
decides. A unit test holds the Linux answers to platformdirs' own.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

APP = "dockertask"


def _xdg(variable: str, default: str) -> Path:
    value = os.environ.get(variable, "")
    return Path(value if value.strip() else os.path.expanduser(default)) / APP


def user_cache_dir() -> Path:
    if sys.platform.startswith("linux"):
        return _xdg("XDG_CACHE_HOME", "~/.cache")
    return _platformdirs("user_cache_dir")


def user_state_dir() -> Path:
    if sys.platform.startswith("linux"):
        return _xdg("XDG_STATE_HOME", "~/.local/state")
    return _platformdirs("user_state_dir")


@functools.cache
def _platformdirs(which: str) -> Path:
    import platformdirs

    return Path(getattr(platformdirs, which)(APP))
