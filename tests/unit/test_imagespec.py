"""ImageSpec without an engine: validation, canonical tags, generated Dockerfile, pip settings."""

from __future__ import annotations

import configparser

import pytest

from dockertask import ImageSpec
from dockertask.images.imagespec import build_context, host_pip_settings


def test_equal_specs_equal_tags_and_any_change_a_new_one() -> None:
    """image_name() is name:<hash>; equal specs share it, each field changes it."""
    base = {"name": "team/t", "packages": ["a==1"], "apt_packages": ["jq"], "env": {"A": "1"}, "commands": ["true"]}
    tag = ImageSpec(**base).image_name()  # type: ignore[arg-type]
    assert tag.startswith("team/t:") and tag == ImageSpec(**base).image_name()  # type: ignore[arg-type]
    for change in ({"packages": ["a==2"]}, {"apt_packages": ["curl"]}, {"env": {"A": "2"}},
                   {"commands": ["false"]}, {"base_image": "debian:12"}):
        assert ImageSpec(**{**base, **change}).image_name() != tag  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs,match", [
    ({"name": "Bad Name"}, "name='Bad Name'"),
    ({"name": "x", "packages": "numpy"}, "packages='numpy'"),
    ({"name": "x", "env": {"A": 1}}, "env="),
    ({"name": "x", "python_version": "2.7"}, "python_version='2.7'"),
    ({"name": "x", "copy": ["/no/such/file"]}, "/no/such/file"),
])
def test_bad_specs_are_refused_when_built(kwargs: dict, match: str) -> None:  # type: ignore[type-arg]
    """A bad field raises when the ImageSpec is constructed, naming field and value."""
    with pytest.raises((TypeError, ValueError), match=match):
        ImageSpec(**kwargs)


def test_dockerfile_installs_packages_in_a_discarded_stage() -> None:
    """pip runs in a separate stage; the final stage only copies the installed packages."""
    df = ImageSpec(name="x", packages=["six"], apt_packages=["jq"], env={"K": "v"}).dockerfile()
    stages = df.split("\nFROM ")[1:]
    assert len(stages) == 3
    assert "pip install" in stages[1] and "dockertask-pip" in stages[1]
    assert "dockertask-pip" not in stages[2] and "COPY --from=packages" in stages[2]
    assert "apt-get install -y --no-install-recommends jq" in stages[0]


def test_host_pip_settings_carry_urls_and_ca_but_not_host_paths(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Index URLs and the CA bundle are carried; file:// indexes are left out with a note."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("PIP_INDEX_URL", "https://user:tok@pypi.internal/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///opt/pypi/simple https://mirror/simple")
    monkeypatch.setenv("PIP_CERT", str(ca))
    conf_text, ca_bytes, notes = host_pip_settings()
    conf = configparser.ConfigParser()
    conf.read_string(conf_text)
    assert conf["global"]["index-url"] == "https://user:tok@pypi.internal/simple"
    assert conf["global"]["extra-index-url"] == "https://mirror/simple"
    assert conf["global"]["cert"] == "/tmp/dockertask-pip/ca.pem" and ca_bytes == ca.read_bytes()
    assert any("file:///opt/pypi/simple" in n for n in notes)
    context, _ = build_context(ImageSpec(name="x", packages=["six"]))
    assert b"pypi.internal" in context  # in the build context, for the discarded stage only


def test_spec_on_default_base_builds_the_default_image_first(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """On a fresh engine, an ImageSpec on the default base builds the default image, then itself
    (the two builds share one lock, which must not be taken twice)."""
    from dockertask.images.imagespec import build
    from dockertask.images.refs import HOST_PYTHON, default_image_ref

    from ..fakes import FakeBackend

    monkeypatch.setattr("platformdirs.user_cache_dir", lambda *a, **k: str(tmp_path))

    class Engine(FakeBackend):
        def __init__(self) -> None:
            super().__init__()
            self.images_present = {f"python:{HOST_PYTHON}-slim"}  # a base to build the default on
            self.built: list[str] = []

        def build(self, context: bytes, tag: str, *a: object, **k: object) -> None:
            self.built.append(tag)
            assert self.images_present is not None
            self.images_present.add(tag)

    engine = Engine()
    spec = ImageSpec(name="team/fresh", env={"A": "1"})
    assert build(spec, engine, progress=lambda line: None) is True  # type: ignore[arg-type]
    assert engine.built == [default_image_ref(), spec.image_name()]
