"""Resources: parsing, validation naming the field, and the mapping to Docker HostConfig."""

from __future__ import annotations

import pytest

from dockertask import Resources, ResourceSpecError, task
from dockertask.spec.resources import host_config_kwargs


@pytest.mark.parametrize("value,cores", [("500m", 0.5), ("0.5", 0.5), (2, 2.0), ("2", 2.0), (0.25, 0.25)])
def test_cpu_quantities(value: object, cores: float) -> None:
    """CPU accepts millicores, decimal strings and numbers."""
    assert Resources(cpu=value).cpu_cores == cores  # type: ignore[arg-type]


@pytest.mark.parametrize("value,n", [("64Mi", 64 * 2**20), ("1Gi", 2**30), ("512M", 512 * 10**6),
                                     ("1G", 10**9), (1024, 1024), ("1.5Gi", int(1.5 * 2**30))])
def test_memory_quantities(value: object, n: int) -> None:
    """Memory accepts binary and decimal suffixes, and plain bytes."""
    assert Resources(mem=value).mem_bytes == n  # type: ignore[arg-type]


@pytest.mark.parametrize("field,value", [("cpu", "fast"), ("cpu", "-1"), ("cpu", True), ("cpu", "0"),
                                         ("mem", "64XB"), ("mem", "lots"), ("mem", -5), ("mem", 1.5),
                                         ("gpu", "one"), ("ephemeral_storage", "10 bananas")])
def test_bad_values_raise_naming_the_field(field: str, value: object) -> None:
    """A bad value raises ResourceSpecError (a ValueError) naming field, value and what was expected."""
    with pytest.raises(ResourceSpecError, match=rf"Resources\.{field}=.*expected") as info:
        Resources(**{field: value})  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert repr(value) in str(info.value)


def test_mapping_to_host_config() -> None:
    """Limits are hard (NanoCpus, Memory=MemorySwap); requests are weights and reservations."""
    kw = host_config_kwargs(Resources(cpu="250m", mem="32Mi"), Resources(cpu="2", mem="1Gi", gpu=1))
    assert kw["nano_cpus"] == 2_000_000_000
    assert kw["mem_limit"] == kw["memswap_limit"] == 2**30
    assert kw["cpu_shares"] == 256
    assert kw["mem_reservation"] == 32 * 2**20
    assert kw["device_requests"] == [{"Driver": "", "Count": 1, "Capabilities": [["gpu"]]}]


def test_missing_limit_defaults_to_request() -> None:
    """As in Kubernetes, a request without a limit is also its limit."""
    kw = host_config_kwargs(Resources(cpu="1", mem="1Gi"), None)
    assert kw["nano_cpus"] == 10**9 and kw["mem_limit"] == 2**30


def test_interruptible_gets_lowest_priority() -> None:
    """Interruptible containers get the lowest CPU weight and are first to be OOM-killed."""
    kw = host_config_kwargs(Resources(cpu="2"), None, interruptible=True)
    assert kw["cpu_shares"] == 2 and kw["oom_score_adj"] == 1000


def test_ephemeral_storage_maps_to_storage_opt() -> None:
    """ephemeral_storage becomes the StorageOpt size."""
    assert host_config_kwargs(None, Resources(ephemeral_storage="1Gi"))["storage_opt"] == {"size": str(2**30)}


def test_request_above_limit_raises_at_decoration() -> None:
    """A request above its limit is refused when the task is decorated."""
    with pytest.raises(ResourceSpecError, match="requests.mem='2Gi' is above limits.mem='1Gi'"):
        @task(requests=Resources(mem="2Gi"), limits=Resources(mem="1Gi"))
        def f() -> None: ...


@pytest.mark.parametrize("field, value, match", [
    ("cpu", "1e309", "between 1m"), ("cpu", "1e-12", "between 1m"), ("cpu", 10**7, "between 1m"),
    ("mem", 10**30, "at most 8Ei"), ("gpu", 10**6, "at most 1024"),
])
def test_numbers_that_cannot_work_are_refused_when_constructed(field: str, value: object, match: str) -> None:
    """Overflowing or vanishing quantities are a ResourceSpecError naming the field, never a late OverflowError."""
    with pytest.raises(ResourceSpecError, match=rf"Resources\.{field}=.*{match}"):
        Resources(**{field: value})


def test_limits_docker_cannot_enforce_are_refused_at_decoration() -> None:
    """A CPU limit under 10m (NanoCpus would round to 0: no limit at all) or memory under 6Mi fails at decoration."""
    from dockertask import task

    with pytest.raises(ResourceSpecError, match="at least 0.01 cores"):
        task(limits=Resources(cpu="5m"))(lambda: None)
    with pytest.raises(ResourceSpecError, match="at least 6Mi"):
        task(requests=Resources(mem="1Mi"))(lambda: None)
    task(requests=Resources(cpu="5m"), limits=Resources(cpu="1"))(lambda: None)  # a tiny request is a fine weight


def test_job_options_translate_to_one_engines_settings() -> None:
    """A job's typed resources and Docker(...) options become the engine's HostConfig and create kwargs."""
    from dockertask import Docker
    from dockertask.backends.base import ContainerJob, JobResources, StdinPieces
    from dockertask.backends.engine_config import create_kwargs, host_config
    from dockertask.plugins import DEFAULT_PIDS_LIMIT, options_for

    opts = options_for(Docker(shm_size="128m", user="7:8", network="none", cap_add=["NET_ADMIN"],
                              volumes=["/a:/b:ro"], platform="linux/amd64"))
    job = ContainerJob("img", ["python3"], StdinPieces(()), options=opts,
                       resources=JobResources(None, Resources(cpu="1", mem="64Mi"), secrets_mib=5))
    hc = host_config(job)
    assert hc["shm_size"] == 128 * 2**20 and hc["network_mode"] == "none" and hc["cap_add"] == ["NET_ADMIN"]
    assert hc["binds"] == ["/a:/b:ro"] and hc["nano_cpus"] == 10**9 and hc["mem_limit"] == 64 * 2**20
    assert hc["pids_limit"] == DEFAULT_PIDS_LIMIT and hc["init"] is True and hc["log_config"] == {"type": "none"}
    assert hc["tmpfs"] == {"/etc/secrets": "rw,noexec,nosuid,nodev,size=5m,mode=1777"}
    assert create_kwargs(job) == {"user": "7:8", "platform": "linux/amd64"}
    unlimited = ContainerJob("img", ["python3"], StdinPieces(()), options=options_for(Docker(pids_limit=0)))
    assert host_config(unlimited)["pids_limit"] == -1


def test_shm_size_spellings() -> None:
    """Docker(shm_size=) takes bytes or docker's '64m'; anything else is refused when decorating."""
    from dockertask import Docker
    from dockertask.errors import TaskDefinitionError
    from dockertask.plugins import options_for

    assert options_for(Docker(shm_size="1g")).shm_bytes == 2**30
    assert options_for(Docker(shm_size=4096)).shm_bytes == 4096
    with pytest.raises(TaskDefinitionError, match="shm_size='lots'"):
        options_for(Docker(shm_size="lots"))


@pytest.mark.parametrize(("given", "expected"), [("512m", 512 << 20), ("1g", 1 << 30), ("2t", 2 << 40)])
def test_docker_s_lowercase_memory_sizes_are_binary_as_docker_reads_them(given: str, expected: int) -> None:
    """`docker run -m 1g` is 1 GiB: the same spelling means the same here."""
    assert Resources(mem=given).mem_bytes == expected
