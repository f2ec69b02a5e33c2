"""The run record on a real engine: what a program's calls leave behind after it has exited, read with the
command line as a user would, and resuming a failed program."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROGRAM = textwrap.dedent('''
    import os, sys
    import dockertask
    from dockertask import Secret, map_task, task

    @task(secret_requests=[Secret("api", "token")])
    def score(x: int) -> int:
        print(f"scoring {x}")
        if x == 3:
            print("the token is", dockertask.current_context().secrets.get("api", "token"))
            raise ValueError(f"cannot score {x}")
        return x * 10

    @task
    def last(total: int, fail: bool) -> int:
        if fail:
            raise RuntimeError("the flag file says fail")
        return total + 1

    if __name__ == "__main__":
        scores = map_task(score, min_success_ratio=0.5)(x=[1, 2, 3, 4])
        print("scores", scores)
        print("last", last(sum(s or 0 for s in scores), os.path.exists(sys.argv[1])))
''')


def _env(db: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "DOCKERTASK_RUNS_DB": str(db), "DOCKERTASK_SECRET_API_TOKEN": "tok-9f8e7d6c5b",
            "PYTHONPATH": str(ROOT), **extra}


def _cli(db: Path, *args: str) -> Any:
    done = subprocess.run([sys.executable, "-m", "dockertask", *args], capture_output=True, text=True,
                          env=_env(db), timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done.stdout


def _program(tmp_path: Path, text: str = PROGRAM) -> Path:
    program = tmp_path / "program.py"
    program.write_text(text)
    return program


def _run(db: Path, program: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(program), *args], capture_output=True, text=True,
                          env=_env(db, **extra), timeout=300, cwd=program.parent)


def test_a_failed_map_item_is_shown_with_its_error_and_output_after_the_program_exited(tmp_path: Path) -> None:
    """The item's failure is one line as it happens, and after exit `show` and `logs` give its error and
    output from the record; the secret it printed is masked there; evidence of each attempt is kept."""
    db, program = tmp_path / "runs.db", _program(tmp_path)
    done = _run(db, program, str(tmp_path / "no-flag"))
    assert done.returncode == 0, done.stderr
    assert "[score[2]] failed: ValueError: cannot score 3" in done.stderr
    [run] = _cli(db, "runs", "--json")
    assert run["status"] == "succeeded" and run["name"] == "program.py"
    shown = _cli(db, "show", run["id"], "--json")
    item = next(c for c in shown["calls"] if c["map_index"] == 2)
    assert item["status"] == "failed" and item["error_type"] == "ValueError" and item["error"] == "cannot score 3"
    one = _cli(db, "show", item["call_id"], "--json")
    assert f'{program}", line 11, in score' in one["traceback"]  # the real file and line
    assert 'raise ValueError(f"cannot score {x}")' in one["traceback"]  # with its source line
    attempt = item["attempts"][0]
    assert attempt["image_id"].startswith("sha256:") and attempt["container_id"]
    assert attempt["peak_memory"] > 1_000_000 and attempt["cpu_seconds"] > 0
    logs = _cli(db, "logs", item["call_id"])
    assert "scoring 3" in logs and "the token is ***" in logs and "tok-9f8e7d6c5b" not in logs
    assert "tok-9f8e7d6c5b" not in db.read_bytes().decode("latin-1")
    assert "cannot score 3" in _cli(db, "show", item["call_id"])


def test_call_ids_are_the_same_in_two_runs_of_one_program(tmp_path: Path) -> None:
    """The same program making the same calls with the same inputs: the same call ids."""
    db, program = tmp_path / "runs.db", _program(tmp_path)
    for _ in range(2):
        assert _run(db, program, str(tmp_path / "no-flag")).returncode == 0
    first, second = (_cli(db, "show", r["id"], "--json") for r in _cli(db, "runs", "--json"))
    assert first["id"] != second["id"]
    assert sorted(c["call_id"] for c in first["calls"]) == sorted(c["call_id"] for c in second["calls"])
    assert len(first["calls"]) == 6  # the map, its 4 items, the last call


def _containers_made(label: str, since: float, expected: int) -> int:
    """How many containers carrying `label` were created since `since`. Podman writes its events log
    after the fact (CI once read 0 of 2 right after the program exited): asked again until `expected`
    show or 15 s pass, and then once more, so that one too many still counts."""
    import docker

    client, deadline = docker.from_env(), time.time() + 15

    def count() -> int:
        events = client.api.events(since=int(since), until=int(time.time()) + 1, decode=True,
                                   filters={"type": "container", "event": "create", "label": label})
        return sum(1 for _ in events)

    made = count()
    while made < expected and time.time() < deadline:
        time.sleep(0.5)
        made = count()
    return made


NAMED = PROGRAM.replace('''if __name__ == "__main__":
''', '''if __name__ == "__main__":
  with dockertask.Run("nightly"):
''')


@pytest.mark.parametrize("text", [PROGRAM, NAMED], ids=["default-run", "named-run"])
def test_rerun_runs_only_the_failed_and_never_run_calls(tmp_path: Path, text: str) -> None:
    """A failed program, resumed: calls that succeeded come from the record (no container); the failed
    call runs again; the last line of the failure says how to look at it and how to resume. A program
    whose calls are in a named `Run` resumes the same way."""
    db, program, flag = tmp_path / "runs.db", _program(tmp_path, text), tmp_path / "flag"
    flag.write_text("fail")
    label = f"runs-test={uuid.uuid4().hex}"
    labels = f"{os.environ.get('DOCKERTASK_LABELS', '')},{label}"
    failed = _run(db, program, str(flag), DOCKERTASK_LABELS=labels)
    assert failed.returncode == 1 and "RuntimeError: the flag file says fail" in failed.stderr
    [run] = _cli(db, "runs", "--json")
    hint = failed.stderr.strip().splitlines()[-1]
    assert f"dockertask rerun {run['id']}" in hint and "dockertask show " in hint
    flag.unlink()
    time.sleep(2.1)  # events are asked for by whole seconds: none of the first run's may count
    since = time.time()
    resumed = subprocess.run([sys.executable, "-m", "dockertask", "rerun", run["id"]], capture_output=True,
                             text=True, env={**_env(db), "DOCKERTASK_LABELS": labels, "DOCKERTASK_PRECREATE": "0"},
                             timeout=300, cwd=ROOT)  # no spare made ahead: every container made runs a call
    assert resumed.returncode == 0, resumed.stderr
    assert "last 71" in resumed.stdout  # 10 + 20 + 40 (+ the failed item's None) + 1
    # The failed map item (x=3) and the failed call run again; the three items that succeeded do not.
    assert _containers_made(label, since, 2) == 2
    newest = _cli(db, "runs", "--json")[0]
    assert newest["resumed_from"] == run["id"] and newest["status"] == "succeeded"
    calls = _cli(db, "show", newest["id"], "--json")["calls"]
    assert sorted(c["map_index"] for c in calls if c["replayed"]) == [0, 1, 3]


OOM_AND_TIMEOUT = textwrap.dedent('''
    from dockertask import Resources, task

    @task(limits=Resources(mem="64Mi"))
    def hog() -> int:
        blocks = []
        while True:
            blocks.append(bytearray(8 << 20))

    @task(timeout=2)
    def slow() -> None:
        data = bytearray(30 << 20)
        import time
        time.sleep(60)

    for t in (hog, slow):
        try:
            t()
        except Exception as exc:
            print(type(exc).__name__)
''')


def test_oom_and_timeout_are_recorded_as_such_with_peak_memory(tmp_path: Path) -> None:
    """OOM-killed and timed-out attempts carry those flags and the memory they had reached."""
    db = tmp_path / "runs.db"
    done = _run(db, _program(tmp_path, OOM_AND_TIMEOUT))
    assert done.stdout.split() == ["TaskOOMError", "TaskTimeoutError"], done.stderr
    [run] = _cli(db, "runs", "--json")
    calls = {c["task"].rsplit(".", 1)[-1]: c for c in _cli(db, "show", run["id"], "--json")["calls"]}
    hog, slow = calls["hog"]["attempts"][0], calls["slow"]["attempts"][0]
    assert hog["oom_killed"] == 1 and hog["peak_memory"] >= 48 << 20, hog
    assert slow["timed_out"] == 1 and slow["peak_memory"] >= 30 << 20, slow
    assert calls["hog"]["error_type"] == "TaskOOMError"


FOREVER = textwrap.dedent('''
    from dockertask import task

    @task
    def forever() -> None:
        print("started", flush=True)
        import time
        time.sleep(120)

    forever()
''')


def test_a_program_killed_with_sigkill_is_shown_interrupted(tmp_path: Path, api: Any) -> None:
    """kill -9 of the host mid-call: the next `runs` shows the run interrupted, not running forever."""
    db = tmp_path / "runs.db"
    proc = subprocess.Popen([sys.executable, str(_program(tmp_path, FOREVER))], env=_env(db),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        assert "started" in proc.stdout.readline()
        time.sleep(0.5)  # the writer's batch reaches the file
        [run] = _cli(db, "runs", "--json")
        assert run["status"] == "running"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        [run] = _cli(db, "runs", "--json")
        assert run["status"] == "interrupted"
        assert _cli(db, "show", run["id"], "--json")["calls"][0]["status"] == "interrupted"
    finally:
        proc.kill()
        proc.wait(30)
        subprocess.run([sys.executable, "-m", "dockertask", "gc"], env=_env(db), capture_output=True, timeout=120)


MANY = textwrap.dedent('''
    from datetime import timedelta
    from dockertask import ReusePolicy, map_task, task

    @task(reusable=ReusePolicy(replicas=2, idle_ttl=timedelta(seconds=30)))
    def echo(x: int) -> int:
        print("line", x)
        return x

    assert map_task(echo, concurrency=4)(x=list(range(40))) == list(range(40))
''')


def test_four_processes_recording_at_once_lose_no_row(tmp_path: Path) -> None:
    """Four programs writing the one record at once: every run, call and output line is there."""
    db, program = tmp_path / "runs.db", _program(tmp_path, MANY)
    procs = [subprocess.Popen([sys.executable, str(program)], env=_env(db), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path) for _ in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    runs = _cli(db, "runs", "--json")
    assert len(runs) == 4 and {r["status"] for r in runs} == {"succeeded"}
    for r in runs:
        calls = _cli(db, "show", r["id"], "--json")["calls"]
        assert len(calls) == 41 and {c["status"] for c in calls} == {"succeeded"}
        assert _cli(db, "logs", r["id"]).count("line ") == 40


def test_a_damaged_record_is_one_warning_and_the_program_still_gets_its_results(tmp_path: Path) -> None:
    """A record that is not a database: the calls run and return; one warning says so."""
    db = tmp_path / "runs.db"
    db.write_bytes(b"\x00garbage" * 1000)
    done = _run(db, _program(tmp_path), str(tmp_path / "no-flag"))
    assert done.returncode == 0, done.stderr
    assert "last 71" in done.stdout
    assert done.stderr.count("RuntimeWarning: dockertask: the run record at") == 1


def test_ctrl_c_is_a_few_lines_and_the_run_reads_interrupted(tmp_path: Path) -> None:
    """Ctrl-C mid-call: the user's line and what happened, not the docker SDK's frames; recorded as such."""
    db = tmp_path / "runs.db"
    proc = subprocess.Popen([sys.executable, str(_program(tmp_path, FOREVER))], env=_env(db), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout is not None
    assert "started" in proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert len(lines) <= 8 and "docker" not in err.replace("dockertask", ""), err
    assert lines[-1] == "KeyboardInterrupt: task __main__.forever: its container was killed and removed"
    [run] = _cli(db, "runs", "--json")
    assert run["status"] == "interrupted"
    assert _cli(db, "show", run["id"], "--json")["calls"][0]["status"] == "interrupted"


SLOW_LINES = textwrap.dedent('''
    from dockertask import task

    @task
    def ticks(n: int) -> int:
        import time
        for i in range(n):
            print(f"tick {i}", flush=True)
            time.sleep(0.4)
        return n

    print("started", flush=True)
    ticks(8)
''')


def test_logs_follow_prints_lines_as_they_come_and_ends_with_the_run(tmp_path: Path) -> None:
    """`dockertask logs -f RUN` while the program runs: the lines arrive before the run ends, and it exits
    once the run has ended, with every line."""
    db = tmp_path / "runs.db"
    proc = subprocess.Popen([sys.executable, str(_program(tmp_path, SLOW_LINES))], env=_env(db),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        assert proc.stdout is not None and "started" in proc.stdout.readline()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the run's row is written with its first call
            if db.exists() and _cli(db, "runs", "--json"):
                break
            time.sleep(0.2)
        [run] = _cli(db, "runs", "--json")
        follower = subprocess.Popen([sys.executable, "-m", "dockertask", "logs", "-f", run["id"]], env=_env(db),
                                    stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert follower.stdout is not None
        first = follower.stdout.readline()
        assert "tick" in first and proc.poll() is None  # a line came while the program was still running
        rest, _ = follower.communicate(timeout=60)
        assert follower.returncode == 0 and proc.wait(60) == 0
        assert [line.split("] ", 1)[1] for line in (first + rest).splitlines()] == [f"tick {i}" for i in range(8)]
    finally:
        proc.kill()


PREEMPTED = textwrap.dedent('''
    from dockertask import current_context, task

    @task(interruptible=True)
    def nap() -> int:
        ballast = bytearray(40 << 20)
        ballast[::4096] = b"x" * len(ballast[::4096])  # touched: resident, so counted
        if current_context().attempt == 1:
            print("started", flush=True)
            import time
            time.sleep(60)
        return current_context().attempt

    print("attempts", nap())
''')


def test_a_preempted_attempt_is_recorded_as_such_with_its_peak_memory(tmp_path: Path, api: Any) -> None:
    """An interruptible call stopped from outside (`docker stop`): its attempt is recorded as preempted, with
    the memory it had reached; the re-run attempt that succeeded follows it."""
    db = tmp_path / "runs.db"
    label = f"runs-test={uuid.uuid4().hex}"
    env = {**_env(db), "DOCKERTASK_LABELS": f"{os.environ.get('DOCKERTASK_LABELS', '')},{label}"}
    proc = subprocess.Popen([sys.executable, str(_program(tmp_path, PREEMPTED))], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert proc.stdout is not None
    assert "started" in proc.stdout.readline()
    [container] = api.containers(filters={"label": label})
    api.stop(container["Id"], timeout=5)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "attempts 2" in out, err
    [run] = _cli(db, "runs", "--json")
    [call] = _cli(db, "show", run["id"], "--json")["calls"]
    first, second = call["attempts"]
    assert first["preempted"] == 1 and first["peak_memory"] >= 40 << 20, first
    assert second["preempted"] == 0 and call["status"] == "succeeded"
