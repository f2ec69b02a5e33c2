"""Containers whose removal failed because the engine was lost: removed once it is back.

When the engine dies mid-task, the ``finally`` that removes the container cannot reach it. Its
id is recorded here, one file per container, named by id and holding the engine's address; the
next run on that engine (from any process) and ``dockertask gc`` remove them, even while the
process that started them still lives (its own removal already failed, so nothing else would).
The directory is ``$DOCKERTASK_STATE_DIR/abandoned`` (default: the platform's user state dir).
"""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    configured = os.environ.get("DOCKERTASK_STATE_DIR")
    if configured:
        return Path(configured)
    from dockertask.host.paths import user_state_dir

    return user_state_dir()


def _dir() -> Path:
    return state_dir() / "abandoned"


def record(container_id: str, engine: str) -> None:
    """Remember ``container_id`` on ``engine`` for removal (best effort: never raises)."""
    try:
        d = _dir()
        d.mkdir(parents=True, exist_ok=True)
        (d / container_id).write_text(engine)
    except OSError:
        pass


def pending(engine: str) -> list[str]:
    """Ids recorded for ``engine`` (cheap when there are none: one failed listdir)."""
    try:
        names = os.listdir(_dir())
    except OSError:
        return []
    out = []
    for name in names:
        try:
            if (_dir() / name).read_text() == engine:
                out.append(name)
        except OSError:
            continue
    return out


def done(container_id: str) -> None:
    try:
        (_dir() / container_id).unlink()
    except OSError:
        pass
