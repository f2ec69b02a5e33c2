"""A first dockertask: each call below runs in its own fresh container.

    ./dev.sh example          (or: python examples/hello.py, with dockertask installed)
"""

from __future__ import annotations

import platform
import sys
from datetime import timedelta

from dockertask import Resources, task


@task(limits=Resources(cpu="1", mem="256Mi"), timeout=timedelta(minutes=1), environment={"GREETING": "Hello"})
def greet(name: str, times: int = 1) -> str:
    import os

    for i in range(times):
        print(f"[{i + 1}/{times}] {os.environ['GREETING']} from {platform.node()}")  # streams to the host live
    return f"{os.environ['GREETING']}, {name}! (Python {platform.python_version()} in a container)"


if __name__ == "__main__":
    print(f"host: {platform.node()}, Python {platform.python_version()}", file=sys.stderr)
    print(greet("world", times=3))
