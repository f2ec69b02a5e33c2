"""The ``dockertask`` command line (click): run, inspect, images, cache, gc, doctor.

Mistakes a user can fix (a bad option value, a missing file, an unknown image name) print
``ErrorType: message`` on stderr and exit 2 with no host traceback; a failing task prints the
container's traceback and ``ErrorType: message`` and exits 1.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Any, NoReturn

import click

from dockertask import __version__
from dockertask.cli.loading import load_module
from dockertask.errors import (
    DockerTaskError,
    ImageResolutionError,
    RemoteTraceback,
    ResourceSpecError,
    SecretNotFoundError,
    TaskDefinitionError,
    TaskInputError,
)

if typing.TYPE_CHECKING:
    from dockertask.tasks import Task

# Errors the user fixes by changing the command or configuration (a bad pyproject.toml, DOCKER_HOST or
# DOCKERTASK_* setting is a TaskDefinitionError): no traceback, exit 2.
USER_ERRORS = (TaskInputError, ImageResolutionError, SecretNotFoundError, ResourceSpecError, TaskDefinitionError)


def _fail(exc: BaseException, code: int, shown: str = "") -> NoReturn:
    """The error's line (unless ``shown``, the traceback just printed, already ends with it), its notes, exit."""
    line = f"{type(exc).__name__}: {exc}"
    if not shown.rstrip().endswith(line):
        click.echo(line, err=True)
    for note in getattr(exc, "__notes__", None) or ():  # the record's hint comes last: how to see and resume it
        click.echo(str(note), err=True)
    sys.exit(code)


# -- loading FILE.py:TASK (the file itself: cli/loading) -------------------------------------

def load_task(target: str) -> Task[Any, Any]:
    from dockertask.tasks import Task  # here, not at the top: `runs`, `show` and `logs` start faster without it

    file, sep, name = target.rpartition(":")
    if not sep or not file or not name:
        raise click.UsageError(f"{target!r}: expected FILE.py:TASK")
    try:
        module = load_module(file)
    except USER_ERRORS as exc:  # a task the file defines wrongly (or a bad project default): the user's to fix
        _fail(exc, 2)
    obj = getattr(module, name, None)
    if not isinstance(obj, Task):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, Task))
        raise click.UsageError(f"{file} has no task named {name!r}; tasks there: {', '.join(found) or 'none'}")
    return obj


# -- task parameters as options ------------------------------------------------------------

def from_json(value: Any, tp: Any) -> Any:
    """Shape parsed JSON into the annotated type (dataclasses, NamedTuples, tuples, sets)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if value is None:
        return None
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arm in args:
            if arm is not type(None):
                try:
                    return from_json(value, arm)
                except (TypeError, ValueError):
                    continue
        return value
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        hints = typing.get_type_hints(tp)
        cls: Any = tp
        return cls(**{k: from_json(v, hints.get(k, Any)) for k, v in value.items()})
    if isinstance(tp, type) and issubclass(tp, tuple) and hasattr(tp, "_fields"):
        hints = typing.get_type_hints(tp)
        items = value.items() if isinstance(value, dict) else zip(tp._fields, value, strict=False)
        return tp(**{k: from_json(v, hints.get(k, Any)) for k, v in items})
    if origin in (list, set, frozenset) and isinstance(value, list):
        return origin(from_json(v, args[0] if args else Any) for v in value)
    if origin is tuple and isinstance(value, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_json(v, args[0]) for v in value)
        return tuple(from_json(v, a) for v, a in zip(value, args or [Any] * len(value), strict=False))
    if origin is dict and isinstance(value, dict):
        return {k: from_json(v, args[1] if args else Any) for k, v in value.items()}
    return value


class JsonType(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """A value given as JSON (lists, dicts, dataclasses...), shaped into its annotation."""

    name = "json"

    def __init__(self, annotation: Any, fallback_to_str: bool = False) -> None:
        self.annotation = annotation
        self.fallback_to_str = fallback_to_str

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            parsed = json.loads(value)
        except ValueError as exc:
            if self.fallback_to_str:
                return value
            self.fail(f"{value!r} is not valid JSON ({exc})", param, ctx)
        try:
            return from_json(parsed, self.annotation)
        except (TypeError, ValueError) as exc:
            self.fail(f"{value!r} does not fit {self.annotation}: {exc}", param, ctx)


def _click_type(annotation: Any) -> Any:
    if annotation is inspect.Parameter.empty:
        return JsonType(Any, fallback_to_str=True)
    annotation = _unwrap_optional(annotation)  # Optional[X] and X | None take what X takes: a bare string for str
    from dockertask.files import Directory, File

    # A File or Directory is given as a path (the task checks it exists, and sends it).
    simple = {int: click.INT, float: click.FLOAT, str: click.STRING, bool: click.BOOL, File: click.STRING,
              Directory: click.STRING}
    return simple.get(annotation) or JsonType(annotation)


def task_command(t: Task[Any, Any]) -> click.Command:
    from dockertask.files import Directory, File
    from dockertask.spec.interface import type_name

    params: list[click.Parameter] = []
    made: dict[str, Any] = {}  # dataclass parameters whose every field has a default: made when not given
    for p in t.interface.params:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        names = [p.name] + ([p.name.replace("_", "-")] if "_" in p.name else [])
        kind = "any (JSON or text)" if p.annotation is inspect.Parameter.empty else type_name(p.annotation)
        shown = "" if p.required else f" [default: {p.default!r}]"
        required, metavar = p.required, None
        if p.annotation is bool:  # --flag / --no-flag, as a shell user expects of a boolean
            params.append(click.Option(
                [p.name, *(f"--{n}/--no-{n}" for n in names)], required=p.required, default=None,
                help=f"bool{shown}"))
            continue
        if _unwrap_optional(p.annotation) in (File, Directory):
            is_file = _unwrap_optional(p.annotation) is File
            metavar, kind = "PATH", ("a file" if is_file else "a directory") + " on this host, sent to the task"
        elif dataclasses.is_dataclass(p.annotation):
            metavar, kind = "JSON", _dataclass_help(p.annotation)
            if p.required and _all_defaulted(p.annotation):
                required, made[p.name] = False, p.annotation
                shown = f" [default: {getattr(p.annotation, '__name__', 'it')}()]"
        params.append(click.Option(
            [p.name, *(f"--{n}" for n in names)], type=_click_type(p.annotation), required=required, default=None,
            metavar=metavar, help=f"{kind}{shown}",
        ))

    def values(**given: Any) -> dict[str, Any]:
        return {**given, **{name: cls() for name, cls in made.items() if given.get(name) is None}}

    return click.Command(t.name, params=params, callback=values,
                         help=(t.function.__doc__ or "").strip() or f"Run task {t.name} in a container.")


def _unwrap_optional(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation


def _all_defaulted(cls: Any) -> bool:
    return all(f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
               for f in dataclasses.fields(cls) if f.init)


def _dataclass_help(cls: Any) -> str:
    """A dataclass parameter's help: its fields, with their types and defaults, as the JSON object to give."""
    from dockertask.spec.interface import type_name

    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = (f" = {f.default!r}" if f.default is not dataclasses.MISSING
                   else " = (made)" if f.default_factory is not dataclasses.MISSING else "")
        fields.append(f'"{f.name}": {type_name(hints.get(f.name, Any))}{default}')
    return f"{cls.__name__} as a JSON object: {{{', '.join(fields)}}}"


def _result_text(value: Any) -> str:
    from dockertask.files import is_path_value

    if is_path_value(value):  # a returned File/Directory: where it is on this host, ready for the shell
        return str(os.fspath(value))

    def default(o: Any) -> Any:
        if is_path_value(o):
            return os.fspath(o)
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return dataclasses.asdict(o)
        if isinstance(o, (set, frozenset)):
            return sorted(o, key=repr)
        if isinstance(o, bytes):
            return o.decode("utf-8", errors="replace")
        raise TypeError
    try:
        return json.dumps(value, default=default)
    except (TypeError, ValueError):
        return repr(value)


# -- commands ------------------------------------------------------------------------------

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dockertask")
def main() -> None:
    """Run Python functions decorated with @task, each in its own Docker container."""


@main.command(context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True})
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the result (JSON) to this file instead of stdout.")
@click.argument("target", metavar="FILE.py:TASK")
@click.argument("task_args", nargs=-1, type=click.UNPROCESSED)
def run(target: str, task_args: tuple[str, ...], output: str | None) -> None:
    """Run TASK from FILE.py in a container; --PARAM VALUE for each task parameter.

    Values are parsed from the annotations: numbers and text as given, lists, dicts and
    dataclasses as JSON, booleans as --flag/--no-flag. The result is printed on stdout as JSON
    when it can be, and nothing else is: what the task prints goes to stderr, so
    `x=$(dockertask run ...)` captures the result alone. `dockertask run FILE.py:TASK --help`
    lists the task's parameters.
    """
    from dockertask.calls import progress
    from dockertask.runs import record

    progress.task_stdout_to_stderr()
    record.DEFAULT_NAME = target
    t = load_task(target)
    try:
        values = task_command(t).main(list(task_args), prog_name=f"dockertask run {target}", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        _fail(TaskInputError(exc.format_message()), 2)
    if not isinstance(values, dict):
        sys.exit(0)
    kwargs = {k: v for k, v in values.items() if v is not None}
    try:
        result = t(**kwargs)
    except USER_ERRORS as exc:
        _fail(exc, 2)
    except DockerTaskError as exc:
        _fail(exc, 1)
    except Exception as exc:
        cause = exc.__cause__
        shown = cause.tb.rstrip() if isinstance(cause, RemoteTraceback) else ""
        if shown:
            click.echo(shown, err=True)
        _fail(exc, 1, shown)
    text = _result_text(result)
    if output is None:
        click.echo(text)
    else:
        Path(output).write_text(text + "\n")


@main.command(name="inspect")
@click.argument("target", metavar="FILE.py:TASK")
def inspect_cmd(target: str) -> None:
    """Print TASK's spec as JSON, with the resolved image and the Docker constraints."""
    t = load_task(target)
    try:
        spec = t.spec.to_dict()
    except USER_ERRORS as exc:
        _fail(exc, 2)
    spec["docker"] = {"image": spec["image"], "host_config": t.spec.docker_constraints(),
                      **({"task_config": t.container_options.describe()}
                         if t.spec.task_config is not None else {})}
    click.echo(json.dumps(spec, indent=2, default=str))


@main.group()
def images() -> None:
    """Build and list the images dockertask makes."""


@images.command(name="build")
@click.argument("file", metavar="FILE.py")
def images_build(file: str) -> None:
    """Build every ImageSpec that FILE.py's tasks (or module-level names) use."""
    from dockertask.backends import default_backend
    from dockertask.images.imagespec import ImageSpec, build
    from dockertask.tasks import Task

    module = load_module(file)
    specs: dict[str, ImageSpec] = {}
    for value in vars(module).values():
        spec = value.image_spec if isinstance(value, Task) else value
        if isinstance(spec, ImageSpec):
            specs[spec.image_name()] = spec
    if not specs:
        click.echo(f"{file}: no ImageSpec found (use container_image=ImageSpec(...) on a task)", err=True)
        sys.exit(1)
    try:
        for ref, spec in specs.items():
            built = build(spec, default_backend())
            click.echo(f"{ref}\t{'built' if built else 'exists'}")
    except DockerTaskError as exc:
        _fail(exc, 1)


@images.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array (ref, kind, size, id, created).")
def images_list(as_json: bool) -> None:
    """List the images dockertask built (default runtime and ImageSpecs)."""
    from dockertask.backends import default_backend
    from dockertask.images.refs import MANAGED_LABEL

    try:
        found = default_backend().images(f"{MANAGED_LABEL}=true")
    except DockerTaskError as exc:
        _fail(exc, 1)
    rows: list[dict[str, Any]] = [
        {"ref": ref, "kind": img.labels.get("dockertask.kind", ""), "size": img.size, "id": img.id,
         "created": img.created}
        for img in sorted(found, key=lambda i: i.ref) for ref in img.tags or (img.ref,)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['ref']}\t{row['kind']}\t{int(row['size']) / 1e6:.0f} MB")


@images.command(name="rm")
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
def images_rm(refs: tuple[str, ...]) -> None:
    """Remove images dockertask made (a reference or id; not an image it did not make)."""
    from dockertask.backends import default_backend
    from dockertask.images.prune import SUITE_LABEL
    from dockertask.images.refs import MANAGED_LABEL

    try:
        backend = default_backend()
        failed = False
        for ref in refs:
            info = backend.image_info(ref)
            if info is None:
                click.echo(f"{ref}: no such image", err=True)
                failed = True
            elif info.labels.get(MANAGED_LABEL) != "true" and SUITE_LABEL not in info.labels:
                click.echo(f"{ref}: not an image dockertask made (docker rmi removes it)", err=True)
                failed = True
            elif (why := backend.remove_image(ref)) is not None:
                click.echo(f"{ref}: not removed: {why}", err=True)
                failed = True
            else:
                click.echo(f"removed {ref}")
    except DockerTaskError as exc:
        _fail(exc, 1)
    sys.exit(1 if failed else 0)


@images.command(name="prune")
@click.argument("files", nargs=-1, metavar="[FILE.py...]")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def images_prune(files: tuple[str, ...], dry_run: bool) -> None:
    """Remove the images dockertask made that nothing names any more: suite images, older builds of each
    ImageSpec (with FILE.py: those its ImageSpecs do not build), older default runtime images."""
    from dockertask.backends import default_backend
    from dockertask.images.imagespec import ImageSpec
    from dockertask.images.prune import SUITE_LABEL, unused
    from dockertask.images.refs import MANAGED_LABEL, default_image_ref
    from dockertask.tasks import Task

    keep: set[str] | None = None
    if files:
        keep = set()
        for file in files:
            for value in vars(load_module(file)).values():
                spec = value.image_spec if isinstance(value, Task) else value
                if isinstance(spec, ImageSpec):
                    keep.add(spec.image_name())
    try:
        backend = default_backend()
        found = {i.id: i for label in (f"{MANAGED_LABEL}=true", SUITE_LABEL) for i in backend.images(label)}
        removed = kept = 0
        for image, why in unused(list(found.values()), default_image_ref(), keep):
            name = image.tags[0] if image.tags else image.id[:19]
            if dry_run:
                click.echo(f"would remove {name}\t{why}")
                continue
            refused = None
            for ref in image.tags or (image.id,):
                refused = backend.remove_image(ref) or refused
            if refused is None:
                removed += 1
                click.echo(f"removed {name}\t{why}")
            else:
                kept += 1
                click.echo(f"kept {name}: {refused}", err=True)
    except DockerTaskError as exc:
        _fail(exc, 1)
    if not dry_run:
        click.echo(f"removed {removed} image(s)" + (f", {kept} in use kept" if kept else ""))


def _label_filter(values: tuple[str, ...]) -> list[tuple[str, str]]:
    wanted = []
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r}: expected KEY=VALUE", param_hint="--label")
        wanted.append((key, val))
    return wanted


def _carries(labels: dict[str, str], wanted: list[tuple[str, str]]) -> bool:
    """Every KEY=VALUE is on it: as given, or as the user label DOCKERTASK_LABELS made of it."""
    return all(labels.get(key) == val or labels.get(f"dockertask.user.{key}") == val for key, val in wanted)


def _whose(removed: Any) -> str:
    labels = removed.labels
    if not labels:
        return f"{removed.kind} {removed.id[:12]} (its removal had failed when the engine was lost)"
    task = labels.get("dockertask.task") or ("a reusable replica" if labels.get("dockertask.replica") else "?")
    return (f"{removed.kind} {removed.id[:12]}: task {task}, host {labels.get('dockertask.host', '?')}, "
            f"process {labels.get('dockertask.host-pid', '?')}")


@main.command()
@click.option("--all-hosts", is_flag=True, help="Also remove containers started from other hosts.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="Only what carries this label (as given, or set through DOCKERTASK_LABELS); repeatable.")
def gc(all_hosts: bool, labels: tuple[str, ...]) -> None:
    """Remove containers (and their volumes) left by a host process that died (kill -9).

    Each is named with whose it was: the task, the host and the process that started it. Also
    removes the test networks of the pytest plugin (dockertask_network) left by such a process,
    with every container attached to them. Those of processes still running are never touched.
    """
    from dockertask.backends import default_backend
    from dockertask.host.owner import is_orphan

    wanted = _label_filter(labels)

    def orphan(found: dict[str, str]) -> bool:
        return is_orphan(found, all_hosts=all_hosts) and _carries(found, wanted)

    try:
        backend = default_backend()
        removed = backend.gc(orphan)
        # Test networks (pytest plugin) with the service containers on them: what Ryuk would reap.
        networks = backend.gc_networks(orphan)
    except DockerTaskError as exc:
        _fail(exc, 1)
    for gone in removed:
        click.echo(f"removed {_whose(gone)}", err=True)
    for name in networks:
        click.echo(f"removed network {name}", err=True)
    click.echo(f"removed {len(removed)} container(s)")
    if networks:
        click.echo(f"removed {len(networks)} network(s) with their containers")


@main.command()
@click.option("--fix", is_flag=True, help="Build the default image when it is missing.")
def doctor(fix: bool) -> None:
    """Check the engine, the default image, and the host and image Python versions."""
    from dockertask.cli.doctor import run_checks

    sys.exit(run_checks(fix=fix))


if __name__ == "__main__":
    main()


from dockertask.cli import cache as _cache  # noqa: E402 - `cache list|clear|prune` join this group
from dockertask.cli import runs as _runs  # noqa: E402 - its commands join this group (runs, show, logs, rerun)

_runs.register(main)
_cache.register(main)
