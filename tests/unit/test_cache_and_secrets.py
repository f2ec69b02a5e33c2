"""Cache keys (canonical, never pickle bytes) and the host-side secret providers."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dockertask import Secret, SecretNotFoundError
from dockertask.calls.cache import Cache, NotHashable, cache_key, hash_inputs
from dockertask.spec import secrets as secrets_mod


@dataclasses.dataclass
class P:
    a: int
    b: list[str]


def test_equal_values_equal_keys_in_another_process() -> None:
    """The input hash is the same in a fresh interpreter (no hash randomisation, no pickle bytes)."""
    value = {"s": {3, 1, 2}, "d": {"z": 1, "a": [1.5, None, True]}, "t": (1, "x"), "b": b"\x00\x01"}
    here = hash_inputs(value)
    code = ("from dockertask.calls.cache import hash_inputs; "
            "print(hash_inputs({'b': b'\\x00\\x01', 't': (1, 'x'), 'd': {'a': [1.5, None, True], 'z': 1}, "
            "'s': {2, 3, 1}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONHASHSEED": "7"})
    assert out.stdout.strip() == here


@pytest.mark.parametrize("a,b", [(1, 1.0), (1, True), ([1], (1,)), ("1", 1), (P(1, ["x"]), {"a": 1, "b": ["x"]})])
def test_different_types_different_keys(a: object, b: object) -> None:
    """Values that compare equal but differ in type do not share a key."""
    assert hash_inputs({"x": a}) != hash_inputs({"x": b})


def test_key_covers_name_version_and_interface() -> None:
    """Task name, cache_version and the interface signature are each part of the key."""
    base = cache_key("m.f", "1", "sig", {"x": 1})
    assert base != cache_key("m.g", "1", "sig", {"x": 1})
    assert base != cache_key("m.f", "2", "sig", {"x": 1})
    assert base != cache_key("m.f", "1", "sig2", {"x": 1})


def test_unhashable_input_is_said() -> None:
    """An input with no canonical form raises NotHashable naming its type."""
    with pytest.raises(NotHashable, match="object"):
        hash_inputs({"x": object()})


def test_store_put_get_list_clear(tmp_path: Path) -> None:
    """Entries persist as files; list shows them; clear (all or per task) removes them."""
    store = Cache(tmp_path)
    store.put("k1", {"v": 1}, "m.f", "1")
    store.put("k2", 2, "m.g", "")
    assert Cache(tmp_path).get("k1") == (True, {"v": 1})
    assert {e.task for e in store.entries()} == {"m.f", "m.g"}
    assert store.clear("m.f") == 1 and store.get("k1") == (False, None)
    assert store.clear() == 1 and store.entries() == []


def test_secret_from_env_then_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Env DOCKERTASK_SECRET_<GROUP>_<KEY> wins; else $DOCKERTASK_SECRETS_DIR/<group>/<key>."""
    monkeypatch.setenv("DOCKERTASK_SECRETS_DIR", str(tmp_path))
    (tmp_path / "my-db").mkdir()
    (tmp_path / "my-db" / "pass.word").write_text("from-file")
    s = Secret("my-db", "pass.word")
    assert secrets_mod.resolve((s,), "t") == {s: "from-file"}
    monkeypatch.setenv("DOCKERTASK_SECRET_MY_DB_PASS_WORD", "from-env")
    assert secrets_mod.resolve((s,), "t") == {s: "from-env"}


def test_custom_provider_plugs_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """A vault-style provider is one object with get(); it is asked first."""
    class Vault:
        def get(self, group: str, key: str | None) -> str | None:
            return "vault-value" if group == "vault" else None

    monkeypatch.setattr(secrets_mod, "_providers", list(secrets_mod._providers))
    secrets_mod.register_provider(Vault())
    assert secrets_mod.lookup("vault", "k") == "vault-value"


def test_missing_secret_names_group_and_key() -> None:
    """SecretNotFoundError says which secret and where it was looked for."""
    with pytest.raises(SecretNotFoundError, match=r"group='db' key='pw'.*DOCKERTASK_SECRET_DB_PW"):
        secrets_mod.resolve((Secret("db", "pw"),), "t")


@pytest.mark.parametrize("group", ["", "../etc", "a/b", ".."])
def test_secret_names_cannot_escape_the_secrets_dir(group: str) -> None:
    """Group and key are plain names: no path traversal into the host or the container."""
    with pytest.raises(ValueError, match="Secret.group"):
        Secret(group, "k")


def test_module_level_cache_api_uses_the_configured_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dockertask.calls.cache.list_entries()/clear() work on $DOCKERTASK_CACHE_DIR."""
    from dockertask.calls import cache

    monkeypatch.setenv("DOCKERTASK_CACHE_DIR", str(tmp_path / "c"))
    Cache().put("k", 1, "m.f", "v1")
    assert [(e.task, e.cache_version) for e in cache.list_entries()] == [("m.f", "v1")]
    assert cache.clear() == 1 and cache.list_entries() == []


KEY_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
import flows
from dockertask.calls import runner
print(runner.key_for(flows.bump, {{"x": 1}}))
"""


def _key_in_fresh_process(root: Path) -> str:
    out = subprocess.run([sys.executable, "-c", KEY_SCRIPT.format(root=str(root))], capture_output=True, text=True,
                         cwd=root, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_cache_key_changes_with_the_code_in_a_git_checkout_and_out_of_one(tmp_path: Path) -> None:
    """An edit to the task or to a project module it uses gives a new key, even while the version stays '-dirty'."""
    (tmp_path / "helpers.py").write_text("def step():\n    return 1\n")
    (tmp_path / "flows.py").write_text("from dockertask import task\nimport helpers\n\n"
                                       "@task(cache=True)\ndef bump(x: int) -> int:\n    return x + helpers.step()\n")
    first = _key_in_fresh_process(tmp_path)
    assert _key_in_fresh_process(tmp_path) == first  # same code, another process: same key
    for git in (["init", "-q"], ["add", "."], ["-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x"]):
        subprocess.run(["git", *git], cwd=tmp_path, check=True)
    committed = _key_in_fresh_process(tmp_path)
    (tmp_path / "flows.py").write_text((tmp_path / "flows.py").read_text().replace("helpers.step()", "100"))
    edited_task = _key_in_fresh_process(tmp_path)
    (tmp_path / "flows.py").write_text((tmp_path / "flows.py").read_text().replace("100", "helpers.step()"))
    assert _key_in_fresh_process(tmp_path) == committed
    (tmp_path / "helpers.py").write_text("def step():\n    return 2\n")
    edited_helper = _key_in_fresh_process(tmp_path)
    assert len({committed, edited_task, edited_helper}) == 3


@pytest.mark.parametrize("damage", [b"", b"garbage\x00\x01", b"\x80\x05\x95"], ids=["empty", "garbage", "truncated"])
def test_a_damaged_entry_is_a_miss_with_a_warning_and_is_replaced(tmp_path: Path, damage: bytes) -> None:
    """A damaged value file reads as a miss (RuntimeWarning), never an error; the next put replaces it."""
    store = Cache(tmp_path)
    store.put("k", {"v": 1}, "t", "1")
    (tmp_path / "k.pkl").write_bytes(damage)
    with pytest.warns(RuntimeWarning, match="damaged"):
        assert store.get("k") == (False, None)
    store.put("k", {"v": 2}, "t", "1")
    assert store.get("k") == (True, {"v": 2})


def test_temp_files_of_a_killed_cache_write_are_swept(tmp_path: Path) -> None:
    """A .tmp-* file whose writer died is removed by list and clear; a live writer's is left alone."""
    import os

    store = Cache(tmp_path)
    store.put("k", 1, "t", "1")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / f".tmp-{dead}-abc").write_bytes(b"x" * 1000)
    (tmp_path / f".tmp-{os.getpid()}-def").write_bytes(b"y")
    (tmp_path / ".tmp-oldstyle").write_bytes(b"z")
    os.utime(tmp_path / ".tmp-oldstyle", (0, 0))
    assert [e.key for e in store.entries()] == ["k"]
    assert sorted(p.name for p in tmp_path.glob(".tmp-*")) == [f".tmp-{os.getpid()}-def"]


def test_a_binary_secret_file_is_bytes_not_a_decode_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret file that is not UTF-8 (a keystore, a key) resolves to bytes; a text one stays str."""
    monkeypatch.setenv("DOCKERTASK_SECRETS_DIR", str(tmp_path))
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "p12").write_bytes(b"\x00\xff\xfe binary")
    (tmp_path / "tls" / "pem").write_text("-----BEGIN-----")
    p12, pem = Secret("tls", "p12"), Secret("tls", "pem")
    assert secrets_mod.resolve((p12, pem), "t") == {p12: b"\x00\xff\xfe binary", pem: "-----BEGIN-----"}


def test_a_binary_secret_cannot_be_an_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENV_VAR secrets must be text without NUL: said on the host, naming the secret."""
    monkeypatch.setenv("DOCKERTASK_SECRETS_DIR", str(tmp_path))
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "p12").write_bytes(b"\x00\xff")
    with pytest.raises(SecretNotFoundError, match=r"group='tls' key='p12'.*FILE"):
        secrets_mod.resolve((Secret("tls", "p12", Secret.MountType.ENV_VAR),), "t")


def test_a_directory_where_the_secret_should_be_is_a_clear_error(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory at the secret's path names group, key and path, instead of a bare IsADirectoryError."""
    monkeypatch.setenv("DOCKERTASK_SECRETS_DIR", str(tmp_path))
    (tmp_path / "db" / "password").mkdir(parents=True)
    with pytest.raises(SecretNotFoundError, match=r"group='db' key='password'.*is a directory"):
        secrets_mod.resolve((Secret("db", "password"),), "t")


def test_secrets_too_large_for_the_container_are_refused_on_the_host(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets over the in-container limit fail before any container, naming the secret and the limit."""
    monkeypatch.setenv("DOCKERTASK_SECRETS_DIR", str(tmp_path))
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "blob").write_bytes(b"x" * (secrets_mod.MAX_SECRETS_BYTES + 1))
    with pytest.raises(SecretNotFoundError, match=r"too large.*group='big' key='blob'"):
        secrets_mod.resolve((Secret("big", "blob"),), "t")
    assert secrets_mod.tmpfs_mib({Secret("a", "b"): "x" * (6 << 20)}) == 8


def test_the_cache_never_follows_a_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A File that is a link to a host file (a stand-in for ~/.aws/credentials) is not copied into the
    cache as that file's content: the cache keeps the link, and reading it back refuses it (issue 17, B8)."""
    from dockertask import File

    monkeypatch.setenv("DOCKERTASK_OUTPUT_DIR", str(tmp_path / "outputs"))
    secret = tmp_path / "credentials"
    secret.write_text("aws_secret_access_key=hunter2")
    link = tmp_path / "result.csv"
    link.symlink_to(secret)
    store = Cache(tmp_path / "cache")
    with pytest.warns(RuntimeWarning):  # put may keep it, but a hit would hand out a link: it is a miss
        store.put("k", File(str(link)), "m.f", "v1")
        hit, _ = store.get("k", "m.f")
    assert not hit
    stored = [p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file() and not p.is_symlink()]
    assert not any(b"hunter2" in data for data in stored)


def _make_adder(k: int) -> Any:
    from dockertask import task

    @task(cache=True)
    def add_k(x: int) -> int:
        return x + k

    return add_k


def test_tasks_made_by_a_factory_have_their_own_fingerprint_and_cache_entries(
        inproc: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """make_adder(1) and make_adder(100) share their source but not their code: the cache gives each its own
    result (add_100(1) returned add_1's 2 before; issue 17, C11)."""
    monkeypatch.setenv("DOCKERTASK_CACHE_DIR", str(tmp_path))
    add_1, add_100, again_1 = _make_adder(1), _make_adder(100), _make_adder(1)
    assert add_1.code_fingerprint != add_100.code_fingerprint
    assert add_1.code_fingerprint == again_1.code_fingerprint
    assert add_1(1) == 2
    assert add_100(1) == 101


def test_a_task_without_readable_source_is_fingerprinted_by_its_code(inproc: Any, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Defined where no source can be read (exec, a REPL), a redefined task is not its old body: its
    results are its own (the fingerprint was the name alone; issue 17, C12)."""
    monkeypatch.setenv("DOCKERTASK_CACHE_DIR", str(tmp_path))
    made = []
    for body in ("x + 1", "x * 10"):
        namespace: dict[str, Any] = {}
        exec(f"from dockertask import task\n@task(cache=True)\ndef f(x: int) -> int:\n    return {body}\n",
             namespace)
        made.append(namespace["f"])
    assert made[0].spec.source_text == made[1].spec.source_text  # no source: the name stands for it
    assert made[0](3) == 4
    assert made[1](3) == 30


def test_a_full_cache_disk_loses_no_result(inproc: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache is an optimisation: a result that cannot be stored (a full disk) is returned with a warning
    (the caller got a bare OSError after the task ran; issue 17, E18)."""
    import subprocess as sp

    where = tmp_path / "tiny"
    where.mkdir()
    if sp.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True).returncode:
        pytest.skip("a small tmpfs cannot be mounted here (needs root)")
    try:
        monkeypatch.setenv("DOCKERTASK_CACHE_DIR", str(where))
        from dockertask import task

        @task(cache=True)
        def big(n: int) -> bytes:
            return b"x" * n

        with pytest.warns(RuntimeWarning, match="could not be stored in the cache"):
            assert big(1 << 20) == b"x" * (1 << 20)
    finally:
        sp.run(["umount", "-l", str(where)], check=False)


def test_a_cache_dir_that_is_a_file_is_a_typed_error_before_the_task_runs(
        inproc: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DOCKERTASK_CACHE_DIR naming a file: a TaskDefinitionError naming it, and no call (E18)."""
    from dockertask import TaskDefinitionError, task

    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    monkeypatch.setenv("DOCKERTASK_CACHE_DIR", str(a_file))

    @task(cache=True)
    def one() -> int:
        return 1

    with pytest.raises(TaskDefinitionError, match="DOCKERTASK_CACHE_DIR.*not-a-dir.*a file"):
        one()
    assert inproc.jobs == []


@pytest.mark.parametrize("damage", [b"[]", b'{"size": "many"}', b"5", b"\xff\xfe"])
def test_a_damaged_index_file_is_listed_and_cleared(tmp_path: Path, damage: bytes) -> None:
    """One damaged index file: the cache still lists (it is marked damaged) and clear removes it, so the
    tool can repair the cache (list and clear crashed; E19)."""
    store = Cache(tmp_path)
    store.put("good", 1, "m.f", "")
    (tmp_path / "bad.json").write_bytes(damage)
    entries = {e.key: e for e in store.entries()}
    assert entries["good"].task == "m.f" and entries["bad"].damaged
    assert store.clear("m.g") == 1  # a task's clear takes damaged entries too: they belong to nobody
    assert not (tmp_path / "bad.json").exists()
    assert store.clear() == 1 and store.entries() == []
