"""Inside the container: run one pytest test body sent by the ``dockertask`` pytest plugin.

The plugin sends three things as the task's arguments:

- ``archive``: a zip of the project's Python sources (those under pytest's rootdir), so that the
  code under test is importable here, including by an ``import`` written inside the test body;
- ``roots``: where the host imports that code from, relative to the rootdir (``""``, ``"src"``,
  ``"tests"``...), in the host's ``sys.path`` order: each becomes ``<zip>/<root>`` on ours;
- ``blob``: the test function (with pytest's rewritten asserts) and its fixture values, pickled
  on the host with project modules *by reference*, so they resolve to the archive's copies, and
  pytest's assertion helpers as ``dockertask.runtime.assertrepr`` (see ``pytest/shipping``).

Only the stdlib and cloudpickle are used here: the image needs neither pytest nor dockertask.
"""

from __future__ import annotations

import os
import sys
import types
from typing import Any


def mount_project(archive: bytes, roots: list[str]) -> None:
    if not archive:
        return
    # A name of our own in /tmp rather than tempfile, whose import alone costs ~5 ms per test.
    where = os.path.join(os.environ.get("TMPDIR") or "/tmp", f"dockertask-project-{os.getpid()}")
    try:
        os.mkdir(where, 0o700)
    except OSError:  # not writable, or taken: let tempfile find a place
        import tempfile

        where = tempfile.mkdtemp(prefix="dockertask-project-")
    path = os.path.join(where, "project.zip")
    with open(path, "wb") as f:
        f.write(archive)
    sys.path[0:0] = [path if not root else f"{path}/{root}" for root in roots]


def run_test(blob: Any, archive: bytes, roots: list[str]) -> None:
    """Run the test function with its fixture values; its exceptions go back to the host as they are.
    ``blob``: their pickle, as bytes or as a File (the host pickles to a file and sends it as one, so a
    large fixture value is not held in memory twice more on its way)."""
    mount_project(archive, roots)
    import cloudpickle

    if isinstance(blob, (bytes, bytearray)):
        function, kwargs = cloudpickle.loads(blob)
    else:
        with open(os.fspath(blob), "rb") as f:
            function, kwargs = cloudpickle.load(f)
    result: Any = function(**kwargs)
    if isinstance(result, types.CoroutineType):  # an async test body: run it to completion here
        import asyncio

        asyncio.run(result)
