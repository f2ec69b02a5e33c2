"""Cache keys (canonical, never pickle bytes) and the host-side secret providers."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from dockertask import Secret, SecretNotFoundError
from dockertask import secrets as secrets_mod
from dockertask.cache import Cache, NotHashable, cache_key, hash_inputs


@dataclasses.dataclass
class P:
    a: int
    b: list[str]


def test_equal_values_equal_keys_in_another_process() -> None:
    """The input hash is the same in a fresh interpreter (no hash randomisation, no pickle bytes)."""
    value = {"s": {3, 1, 2}, "d": {"z": 1, "a": [1.5, None, True]}, "t": (1, "x"), "b": b"\x00\x01"}
    here = hash_inputs(value)
    code = ("from dockertask.cache import hash_inputs; "
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
    """dockertask.cache.list_entries()/clear() work on $DOCKERTASK_CACHE_DIR."""
    from dockertask import cache

    monkeypatch.setenv("DOCKERTASK_CACHE_DIR", str(tmp_path / "c"))
    Cache().put("k", 1, "m.f", "v1")
    assert [(e.task, e.cache_version) for e in cache.list_entries()] == [("m.f", "v1")]
    assert cache.clear() == 1 and cache.list_entries() == []
