"""dockertask's own XDG lookup gives platformdirs' answers on Linux (it exists only to skip its import)."""

from __future__ import annotations

import sys

import platformdirs
import pytest

from dockertask.host import paths


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the XDG rules are Linux's")
@pytest.mark.parametrize("value", [None, "", "   ", "/srv/xdg"], ids=["unset", "empty", "blank", "set"])
def test_cache_and_state_dirs_match_platformdirs(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    for variable in ("XDG_CACHE_HOME", "XDG_STATE_HOME"):
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value)
    assert str(paths.user_cache_dir()) == platformdirs.user_cache_dir("dockertask")
    assert str(paths.user_state_dir()) == platformdirs.user_state_dir("dockertask")
