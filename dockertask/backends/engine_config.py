"""A job's resources and options as one Docker engine's container settings (docker SDK kwargs).

Kept apart from ``docker.py`` so the translation is a pure function: unit-tested without an engine,
and shared by anything else that creates a container on one engine.
"""

from __future__ import annotations

from typing import Any

from dockertask.backends.base import ContainerJob
from dockertask.spec.resources import host_config_kwargs
from dockertask.spec.secrets import tmpfs_of


def host_config(job: ContainerJob) -> dict[str, Any]:
    """``create_host_config`` kwargs: limits, init, pids, secrets tmpfs, and the task_config's options."""
    res, opt = job.resources, job.options
    kw: dict[str, Any] = {
        # No log driver: output is streamed live over the attach socket, and the control channel
        # (the result included) must not be written to a log file on the engine's disk.
        "log_config": {"type": "none"},
        "init": True,  # an init as PID 1: `docker stop` (preemption) then ends the task at once
        **host_config_kwargs(res.requests, res.limits, interruptible=res.interruptible),
    }
    kw["pids_limit"] = opt.effective_pids_limit or -1  # -1: the engine's "unlimited"
    if opt.network is not None:
        kw["network_mode"] = opt.network
    if opt.shm_bytes is not None:
        kw["shm_size"] = opt.shm_bytes
    if opt.binds:
        kw["binds"] = list(opt.binds)
    if opt.devices:
        kw["devices"] = list(opt.devices)
    if opt.cap_add:
        kw["cap_add"] = list(opt.cap_add)
    if res.secrets_mib:
        kw["tmpfs"] = tmpfs_of(res.secrets_mib)
    kw.update(opt.host_config)
    return kw


# The bootstrap runs the call in a watched child where the engine cannot report OOM kills (runtime/bootstrap.main).
WATCH_CALL = {"DOCKERTASK_WATCH_CALL": "1"}


def create_kwargs(job: ContainerJob) -> dict[str, Any]:
    """``create_container`` kwargs beyond image, command, environment and labels."""
    kw: dict[str, Any] = {}
    if job.options.user is not None:
        kw["user"] = job.options.user
    if job.options.platform is not None:
        kw["platform"] = job.options.platform
    kw.update(job.options.create)
    return kw
