"""ImageSpec builds on a real engine: packages, apt, env, commands, copy; hashing; failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dockertask import ImageBuildError, ImageSpec, task
from dockertask.backends import default_backend
from dockertask.images.imagespec import build

from .conftest import remove_container

HERE = Path(__file__).resolve().parent
EXE = str(Path(sys.executable).parent / "dockertask")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("spec")
    f = d / "model.txt"
    f.write_text("weights v1\n")
    return f


def test_spec_on_default_image_with_pip_apt_env_commands_and_copy(data_file: Path) -> None:
    """A task on an ImageSpec sees its pip and apt packages, env, command output and copied file."""
    spec = ImageSpec(name="dockertask-test/full", packages=["six==1.16.0"], apt_packages=["jq"],
                     env={"STAGE": "test"}, commands=["jq --version > /jq-version"], copy=[str(data_file)])

    @task(container_image=spec)
    def probe() -> dict[str, str]:
        import six

        dest = "/root/" + str(data_file).lstrip("/")
        return {"six": six.__version__, "stage": os.environ["STAGE"], "jq": open("/jq-version").read().strip(),
                "copied": open(dest).read()}

    assert probe() == {"six": "1.16.0", "stage": "test", "jq": "jq-1.6", "copied": "weights v1\n"}
    assert build(spec, default_backend()) is False  # an existing tag is never rebuilt


def test_pip_settings_never_reach_the_final_image(api) -> None:  # type: ignore[no-untyped-def]
    """The host's pip.conf and CA bundle stay in the discarded stage: not in history or the file system."""
    spec = ImageSpec(name="dockertask-test/full-pip", packages=["six==1.16.0"])
    build(spec, default_backend())
    history = json.dumps(api.history(spec.image_name()))
    assert "dockertask-pip" not in history and "ca.pem" not in history
    check = "import os; print(os.path.exists('/tmp/dockertask-pip'))"
    c = api.create_container(spec.image_name(), ["python3", "-c", check], labels={"dockertask.run-id": "test"})
    try:
        api.start(c)
        api.wait(c)
        assert api.logs(c).strip() == b"False"
    finally:
        remove_container(api, c)


def test_bare_python_base_gets_pip_when_needed(api) -> None:  # type: ignore[no-untyped-def]
    """On a base with only Python (no pip, empty apt lists), apt and pip packages still install."""
    base = "dockertask-base:bookworm"
    if not api.images(name=base):
        pytest.skip(f"{base} exists only where the default image was bootstrapped without a registry")
    spec = ImageSpec(name="dockertask-test/bare", base_image=base, packages=["six==1.16.0"], apt_packages=["jq"])

    @task(container_image=spec)
    def versions() -> tuple[str, str]:
        import subprocess

        import six

        jq = subprocess.run(["jq", "--version"], capture_output=True, text=True, check=True).stdout.strip()
        return six.__version__, jq

    assert versions() == ("1.16.0", "jq-1.6")


def test_image_name_is_stable_across_processes_and_changes_with_content(data_file: Path) -> None:
    """Equal specs give equal tags in another process; a changed copied file gives a new one."""
    spec = ImageSpec(name="dockertask-test/hash", packages=["a", "b"], copy=[str(data_file)])
    code = (f"from dockertask import ImageSpec; print(ImageSpec(name='dockertask-test/hash', packages=['a', 'b'], "
            f"copy=[{str(data_file)!r}]).image_name())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == spec.image_name()
    before = spec.image_name()
    data_file.write_text("weights v2\n")
    try:
        assert spec.image_name() != before
    finally:
        data_file.write_text("weights v1\n")


def test_failed_build_raises_with_log_tail_once_per_process_and_leaves_no_image(api) -> None:  # type: ignore[no-untyped-def]
    """A failing step raises ImageBuildError carrying the end of the build log and where the whole log is;
    the same spec again in this process raises at once without building; no untagged step image is left."""
    import time

    spec = ImageSpec(name="dockertask-test/broken", commands=["echo about-to-fail && exit 3"])
    with pytest.raises(ImageBuildError) as info:
        spec.build()
    assert "about-to-fail" in info.value.log_tail
    assert "about-to-fail" in str(info.value) and "\x1b[" not in str(info.value)
    log = Path(str(info.value).split("(its whole log: ", 1)[1].split(")", 1)[0])
    assert "about-to-fail" in log.read_text() and "step 1/" in log.read_text().lower()  # Podman: "STEP 1/"
    started = time.monotonic()
    with pytest.raises(ImageBuildError, match="earlier in this process; not tried again") as again:
        spec.build()
    assert time.monotonic() - started < 0.5 and "about-to-fail" in again.value.log_tail
    tag = spec.image_name().rpartition(":")[2]
    assert api.images(filters={"label": f"dockertask.build={tag}"}) == []


def test_a_pip_build_leaves_no_untagged_image_and_shows_two_lines(api, capfd: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    """The pip stage's image (320-380 MB each build) goes once the image is made; off a terminal, the build
    is a line at its start and one at its end, not the builder's stream."""
    spec = ImageSpec(name="dockertask-test/clean-pip", packages=["six==1.16.0"], env={"RUN": os.urandom(4).hex()})
    assert spec.build() is True
    err = capfd.readouterr().err
    assert "building dockertask-test/clean-pip" in err and "built dockertask-test/clean-pip" in err
    assert "Step " not in err and "Successfully" not in err
    tag = spec.image_name().rpartition(":")[2]
    left = api.images(filters={"label": f"dockertask.build={tag}"})
    # The result alone, by its name (Podman prefixes it with localhost/ or docker.io/)
    assert [t.removeprefix("localhost/").removeprefix("docker.io/") for i in left for t in i["RepoTags"] or ["-"]] \
        == [spec.image_name()]


def test_images_cli_builds_and_lists(tmp_path: Path) -> None:
    """`dockertask images build FILE.py` builds the file's specs; `images list` shows them."""
    f = tmp_path / "flow.py"
    f.write_text("from dockertask import ImageSpec, task\n"
                 "spec = ImageSpec(name='dockertask-test/cli', env={'A': '1'})\n"
                 "@task(container_image=spec)\n"
                 "def t() -> int:\n    return 1\n")
    out = subprocess.run([EXE, "images", "build", str(f)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    ref = out.stdout.split()[0]
    assert ref.startswith("dockertask-test/cli:")
    listed = subprocess.run([EXE, "images", "list"], capture_output=True, text=True, timeout=60).stdout
    assert ref in listed and "imagespec" in listed
