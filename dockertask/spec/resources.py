"""``Resources``: parsed once at construction, and the one owner of the mapping to Docker.

Kubernetes quantities are accepted (``"500m"``, ``"0.5"``, ``2`` for CPU; ``"64Mi"``, ``"1Gi"``,
``"512M"``, ``"1G"`` or an int of bytes for memory and storage). Anything else raises
``ResourceSpecError`` naming the field when the ``Resources`` is built, never later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from dockertask.errors import ResourceSpecError

_MEM_SUFFIXES = {
    "": 1,
    "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    # Docker's spelling (`docker run -m 512m`, `--memory 1g`): lowercase, and binary as Docker reads it
    "m": 2**20, "g": 2**30, "t": 2**40,
}
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")
_EXPECTED_MEM = "bytes as an int, or a string like '64Mi', '1Gi', '512M', '1G' or Docker's '512m', '1g'"
_EXPECTED_CPU = "a number of cores like 2, '0.5' or '500m'"
MIN_CPU = Decimal("0.001")
MAX_CPU = Decimal(1_000_000)
MAX_BYTES = 2**63 - 1
# What Docker itself refuses below (it checks at create, after the task was already accepted).
MIN_CPU_LIMIT = 0.01
MIN_MEM_LIMIT = 6 * 2**20


def parse_cpu(fieldname: str, value: object) -> float:
    """Cores as a float from ``2``, ``"0.5"`` or ``"500m"``; raise naming ``fieldname`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ResourceSpecError(f"Resources.{fieldname}={value!r}: expected {_EXPECTED_CPU}")
    text = str(value).strip()
    try:
        cores = Decimal(text[:-1]) / 1000 if text.endswith("m") else Decimal(text)
    except InvalidOperation:
        raise ResourceSpecError(f"Resources.{fieldname}={value!r}: expected {_EXPECTED_CPU}") from None
    if not cores.is_finite() or cores <= 0:
        raise ResourceSpecError(f"Resources.{fieldname}={value!r}: expected a positive number of cores")
    if cores < MIN_CPU or cores > MAX_CPU:
        # Below 1m rounds to nothing (NanoCpus=0 would mean *no* limit); above, no machine has it.
        raise ResourceSpecError(f"Resources.{fieldname}={value!r}: expected between 1m (0.001) and "
                                f"{MAX_CPU:,} cores")
    return float(cores)


def parse_bytes(fieldname: str, value: object) -> int:
    """Bytes as an int from ``1024``, ``"64Mi"``, ``"1G"``...; raise naming ``fieldname`` otherwise."""
    if isinstance(value, bool):
        raise ResourceSpecError(f"Resources.{fieldname}={value!r}: expected {_EXPECTED_MEM}")
    if isinstance(value, int):
        amount = value
    elif isinstance(value, str) and (m := _QUANTITY.match(value)) and m.group(2) in _MEM_SUFFIXES:
        amount = int(Decimal(m.group(1)) * _MEM_SUFFIXES[m.group(2)])
    else:
        raise ResourceSpecError(f"Resources.{fieldname}={value!r}: expected {_EXPECTED_MEM}")
    if amount <= 0:
        raise ResourceSpecError(f"Resources.{fieldname}={value!r}: expected a positive amount")
    if amount > MAX_BYTES:
        raise ResourceSpecError(f"Resources.{fieldname}={value!r}: expected at most 8Ei (the engine's int64)")
    return amount


def parse_gpu(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise ResourceSpecError(f"Resources.gpu={value!r}: expected a whole number of GPUs like 1")
    if int(value) > 1024:
        raise ResourceSpecError(f"Resources.gpu={value!r}: expected at most 1024 GPUs")
    return int(value)


@dataclass(frozen=True)
class Resources:
    """CPU, memory, GPU and ephemeral storage, as in flytekit; validated when constructed.

    The raw values are kept for display; ``cpu_cores``, ``mem_bytes``... hold the parsed ones.
    """

    cpu: str | int | float | None = None
    mem: str | int | None = None
    gpu: str | int | None = None
    ephemeral_storage: str | int | None = None
    cpu_cores: float | None = field(init=False, repr=False, compare=False)
    mem_bytes: int | None = field(init=False, repr=False, compare=False)
    gpu_count: int | None = field(init=False, repr=False, compare=False)
    storage_bytes: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parsed = {
            "cpu_cores": None if self.cpu is None else parse_cpu("cpu", self.cpu),
            "mem_bytes": None if self.mem is None else parse_bytes("mem", self.mem),
            "gpu_count": None if self.gpu is None else parse_gpu(self.gpu),
            "storage_bytes": None
            if self.ephemeral_storage is None
            else parse_bytes("ephemeral_storage", self.ephemeral_storage),
        }
        for name, value in parsed.items():
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (("cpu", self.cpu), ("mem", self.mem), ("gpu", self.gpu),
                         ("ephemeral_storage", self.ephemeral_storage))
            if v is not None
        }


# The lowest weight Docker accepts; interruptible tasks get it so any other work wins the CPU.
LOWEST_CPU_SHARES = 2


def check_enforceable(requests: Resources | None, limits: Resources | None) -> None:
    """Limits the engine would refuse at every call (or silently not apply): refuse them when decorated."""
    for label, res in (("limits", limits), ("requests", requests)):
        if res is None or (label == "requests" and limits is not None and limits.cpu_cores is not None):
            continue
        # A missing limit defaults to the request, so a request can become a limit.
        if res.cpu_cores is not None and res.cpu_cores < MIN_CPU_LIMIT and (label == "limits" or limits is None
                                                                             or limits.cpu_cores is None):
            raise ResourceSpecError(f"{label}.cpu={res.cpu!r}: a CPU limit must be at least 0.01 cores (10m); "
                                    "Docker cannot enforce less")
    for label, res in (("limits", limits), ("requests", requests)):
        if res is None or (label == "requests" and limits is not None and limits.mem_bytes is not None):
            continue
        if res.mem_bytes is not None and res.mem_bytes < MIN_MEM_LIMIT:
            raise ResourceSpecError(f"{label}.mem={res.mem!r}: a memory limit must be at least 6Mi; "
                                    "Docker refuses less")


def check_request_within_limit(requests: Resources | None, limits: Resources | None) -> None:
    """A request above its limit cannot be scheduled anywhere; say so at decoration time."""
    check_enforceable(requests, limits)
    if requests is None or limits is None:
        return
    pairs = (("cpu", requests.cpu_cores, limits.cpu_cores), ("mem", requests.mem_bytes, limits.mem_bytes),
             ("gpu", requests.gpu_count, limits.gpu_count),
             ("ephemeral_storage", requests.storage_bytes, limits.storage_bytes))
    for name, req, lim in pairs:
        if req is not None and lim is not None and req > lim:
            raise ResourceSpecError(
                f"requests.{name}={getattr(requests, name)!r} is above limits.{name}="
                f"{getattr(limits, name)!r}: expected a request no larger than its limit"
            )


def limit_of(requests: Resources | None, limits: Resources | None, attr: str) -> Any:
    """A limit as enforced (``attr`` of Resources: cpu_cores, mem_bytes, gpu_count, storage_bytes): as in
    Kubernetes, a missing limit defaults to the request."""
    for r in (limits, requests):
        if r is not None and getattr(r, attr) is not None:
            return getattr(r, attr)
    return None


def host_config_kwargs(
    requests: Resources | None, limits: Resources | None, *, interruptible: bool = False
) -> dict[str, Any]:
    """Docker Engine HostConfig settings (docker SDK ``create_host_config`` names).

    As in Kubernetes a missing limit defaults to the request. A CPU limit is a hard
    ``NanoCpus`` quota; a CPU request is only a relative ``CpuShares`` weight.
    """
    req = requests or Resources()
    cpu_limit = limit_of(requests, limits, "cpu_cores")
    mem_limit = limit_of(requests, limits, "mem_bytes")
    gpus = limit_of(requests, limits, "gpu_count")
    storage = limit_of(requests, limits, "storage_bytes")
    kw: dict[str, Any] = {}
    if cpu_limit is not None:
        kw["nano_cpus"] = int(round(cpu_limit * 1e9))
    if mem_limit is not None:
        kw["mem_limit"] = mem_limit
        kw["memswap_limit"] = mem_limit  # equal to the limit: no swap beyond it
    if req.cpu_cores is not None:
        kw["cpu_shares"] = max(LOWEST_CPU_SHARES, round(req.cpu_cores * 1024))
    if req.mem_bytes is not None:
        kw["mem_reservation"] = req.mem_bytes
    if gpus:
        kw["device_requests"] = [{"Driver": "", "Count": gpus, "Capabilities": [["gpu"]]}]
    if storage is not None:
        kw["storage_opt"] = {"size": str(storage)}
    if interruptible:
        kw["cpu_shares"] = LOWEST_CPU_SHARES
        kw["oom_score_adj"] = 1000
    return kw


def describe_bytes(n: int) -> str:
    for unit, size in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n} bytes"
