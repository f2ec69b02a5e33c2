"""Image names: pyproject configuration, env overrides and {{.image.NAME.*}} templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockertask import ImageResolutionError
from dockertask.images.refs import default_image_ref, resolve, split_ref


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.dockertask.images]\ndefault = "reg.example:5000/team/base:1.2"\ntrainer = "ml/trainer:gpu"\n')
    sub = tmp_path / "src" / "pkg"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    return tmp_path


def test_templates_resolve_from_nearest_pyproject(project: Path) -> None:
    """fqn is the reference without its tag, version its tag (a registry port is not a tag)."""
    assert resolve(None) == "reg.example:5000/team/base:1.2"
    assert resolve("{{.image.trainer.fqn}}:{{.image.trainer.version}}") == "ml/trainer:gpu"
    assert resolve("{{ .image.trainer.fqn }}:v2-{{.image.default.version}}") == "ml/trainer:v2-1.2"


def test_env_overrides_pyproject(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DOCKERTASK_IMAGE_<NAME> wins over pyproject and can add names."""
    monkeypatch.setenv("DOCKERTASK_IMAGE_TRAINER", "other/trainer:3")
    monkeypatch.setenv("DOCKERTASK_IMAGE_EXTRA", "x/y")
    assert resolve("{{.image.trainer.fqn}}:{{.image.trainer.version}}") == "other/trainer:3"
    assert resolve("{{.image.extra.fqn}}:{{.image.extra.version}}") == "x/y:latest"


def test_plain_reference_passes_through(project: Path) -> None:
    """A reference with no template is used unchanged."""
    assert resolve("alpine:3.19") == "alpine:3.19"


def test_unknown_name_lists_known_names(project: Path) -> None:
    """An unknown NAME raises ImageResolutionError (a ValueError) listing the configured names."""
    with pytest.raises(ImageResolutionError, match="'nope'.*known images: default, trainer") as info:
        resolve("{{.image.nope.fqn}}:{{.image.nope.version}}")
    assert isinstance(info.value, ValueError)


def test_malformed_template_is_refused(project: Path) -> None:
    """A template dockertask does not understand is an error, not a literal image name."""
    with pytest.raises(ImageResolutionError, match="cannot understand"):
        resolve("{{.image.default.digest}}")


def test_default_exists_without_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unconfigured, default is dockertask's runtime image for the host's Python."""
    monkeypatch.chdir(tmp_path)
    ref = resolve(None)
    assert ref == default_image_ref() and ref.startswith("dockertask-runtime:py3.")


@pytest.mark.parametrize("ref,parts", [("a/b:1", ("a/b", "1")), ("a/b", ("a/b", "latest")),
                                       ("localhost:5000/a", ("localhost:5000/a", "latest")),
                                       ("localhost:5000/a:2", ("localhost:5000/a", "2"))])
def test_split_ref(ref: str, parts: tuple[str, str]) -> None:
    """References split into repository and tag, registry ports included."""
    assert split_ref(ref) == parts
