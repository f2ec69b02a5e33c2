"""Property tests (hypothesis): whatever a user passes, the answer is a working value or a dockertask
error naming it; never a bare ValueError, OverflowError, docker or pickle exception later."""

from __future__ import annotations

import datetime as dt
import math
import os
from typing import Any

import docker.utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dockertask import DockerTaskError, Resources, TaskInputError, task
from dockertask.spec.resources import MAX_BYTES
from dockertask.tasks import MAX_TIMEOUT_SECONDS

# DOCKERTASK_PROPERTY_EXAMPLES=5000 searches deeper (the suite's 300 keep it quick).
# In CI the examples are derandomized: a landing must not depend on luck (local runs keep exploring).
PROPERTY = settings(max_examples=int(os.environ.get("DOCKERTASK_PROPERTY_EXAMPLES", "300")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow], derandomize=os.environ.get("CI") == "true")

anything = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**40), max_value=10**40),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=24), st.binary(max_size=8),
                     st.lists(st.integers(), max_size=2))
quantity = st.one_of(anything, st.from_regex(r"\s?-?[0-9]{0,4}(\.[0-9]{0,3})?(e-?[0-9]{1,3})?(m|Ki|Mi|Gi|M|G|E|x)?",
                                             fullmatch=True))


def _f(x: int) -> int:
    return x


@PROPERTY
@given(cpu=quantity, mem=quantity, gpu=quantity, storage=quantity, as_limit=st.booleans())
def test_resources_give_enforceable_numbers_or_a_dockertask_error(cpu: Any, mem: Any, gpu: Any, storage: Any,
                                                                 as_limit: bool) -> None:
    """Any Resources fields: refused (DockerTaskError) or mapped to integers the engine accepts, never a no-op limit."""
    try:
        res = Resources(cpu=cpu, mem=mem, gpu=gpu, ephemeral_storage=storage)
        t = task(**({"limits": res} if as_limit else {"requests": res}))(_f)
    except DockerTaskError:
        return
    constraints = t.spec.docker_constraints()
    for name in ("nano_cpus", "mem_limit", "memswap_limit", "mem_reservation", "cpu_shares"):
        if name in constraints:
            assert isinstance(constraints[name], int) and 0 < constraints[name] <= MAX_BYTES, (name, constraints)
    if "nano_cpus" in constraints:
        assert constraints["nano_cpus"] >= 10_000_000  # 0.01 cores: less is no limit at all on Docker


@PROPERTY
@given(timeout=st.one_of(anything, st.timedeltas(), st.floats(min_value=-1e12, max_value=1e12)))
def test_timeouts_are_finite_and_bounded_or_refused(timeout: Any) -> None:
    """Any timeout: a finite number of seconds in [0, a year], or a DockerTaskError at decoration."""
    try:
        t = task(timeout=timeout)(_f)
    except DockerTaskError:
        return
    assert math.isfinite(t.spec.timeout_seconds) and 0 <= t.spec.timeout_seconds <= MAX_TIMEOUT_SECONDS
    assert isinstance(timeout, (int, float, dt.timedelta)) and not isinstance(timeout, bool)


@PROPERTY
@given(env=st.one_of(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
                     st.dictionaries(st.one_of(st.none(), st.integers(), st.text(max_size=4)), anything, max_size=2),
                     anything))
def test_environments_are_passable_to_a_container_or_refused(env: Any) -> None:
    """Any environment: names and values runc can set (str, no NUL, no '=' in names), or a DockerTaskError."""
    try:
        t = task(environment=env)(_f)
    except DockerTaskError:
        return
    for k, v in t.spec.environment.items():
        assert isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\x00" not in k + v


@PROPERTY
@given(ref=st.one_of(st.text(max_size=80),
                     st.from_regex(r"([a-z0-9.-]{1,12}(:[0-9]{1,5})?/)?[a-z0-9._/-]{1,20}(:[\w.-]{1,10})?",
                                   fullmatch=True),
                     st.just("x" * 10_000), anything))
def test_image_references_are_valid_or_refused(ref: Any) -> None:
    """Any container_image: one the engine can parse, or a DockerTaskError at decoration (never an APIError later)."""
    try:
        t = task(container_image=ref)(_f)
    except DockerTaskError:
        return
    if ref and "{" not in ref:
        repo, tag = docker.utils.parse_repository_tag(t.spec.resolved_image())
        assert repo and repo == repo.lower() and " " not in repo and len(ref) <= 512


@task
def typed(a: int, b: list[str], c: dict[str, float] | None = None, d: tuple[int, ...] = ()) -> None:
    return None


values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
                      lambda inner: st.one_of(st.lists(inner, max_size=3), st.tuples(inner, inner),
                                              st.dictionaries(st.text(max_size=3), inner, max_size=3)),
                      max_leaves=8)


@PROPERTY
@given(a=values, b=values, c=values, d=values)
def test_interface_checks_accept_or_name_the_parameter(a: Any, b: Any, c: Any, d: Any) -> None:
    """Any arguments: bound, or a TaskInputError naming the parameter; the checks never raise anything else."""
    try:
        typed.interface.bind((a, b), {"c": c, "d": d})
    except TaskInputError as exc:
        assert any(f"{quote}{p}" in str(exc) for p in "abcd" for quote in "'\""), exc  # repr's quotes vary
