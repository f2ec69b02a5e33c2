"""Two real projects' own test suites, nobody here wrote them (issue 18): each sdist is downloaded from the
package index at test time (pinned), run on the host and with --dockertask-image, and the outcomes are
compared test by test. boltons: plain functions, unittest classes, data files beside the tests;
more-itertools: every test a unittest.TestCase, with subtests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dockertask.images.refs import default_image_ref

pytestmark = pytest.mark.docker

SUITES = {
    "boltons==26.2.0": ("boltons-26.2.0", ["tests"], 500),
    "more-itertools==11.2.1": ("more_itertools-11.2.1", ["tests"], 700),
}


def _outcomes(junit: Path) -> dict[str, str]:
    outcomes: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = kinds[0] if kinds else "passed"
    return outcomes


def _sentinel(root: Path) -> None:
    """A conftest beside the suite's own that records, per test, whether it ran in a container (this
    host's name is in the checkout; a container's hostname is its own). The suite itself is unchanged."""
    (root / "host.txt").write_text(socket.gethostname())
    conftest = root / "conftest.py"
    assert not conftest.exists()
    conftest.write_text(
        "import socket\nfrom pathlib import Path\n\nimport pytest\n\n"
        "HOST = (Path(__file__).parent / 'host.txt').read_text()\n\n\n"
        "@pytest.fixture(autouse=True)\n"
        "def _where(record_property):\n"
        "    record_property('in_container', socket.gethostname() != HOST)\n")


def _where(junit: Path) -> set[str]:
    return {p.get("value") or "" for c in ET.parse(junit).getroot().iter("testcase") for p in c.iter("property")
            if p.get("name") == "in_container"}


@pytest.mark.parametrize("requirement", sorted(SUITES))
def test_a_real_suite_has_the_same_outcomes_in_the_image(requirement: str, tmp_path: Path) -> None:
    folder, paths, at_least = SUITES[requirement]
    download = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               "-q", "-d", str(tmp_path), requirement], capture_output=True, text=True, timeout=300)
    assert download.returncode == 0, download.stderr
    (sdist,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / folder
    _sentinel(root)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest", *paths]
    host = subprocess.run([*base, f"--junitxml={tmp_path / 'host.xml'}"], cwd=root, capture_output=True, text=True,
                          timeout=600, env=env)
    image = subprocess.run([*base, f"--junitxml={tmp_path / 'image.xml'}", f"--dockertask-image={default_image_ref()}",
                            "-n", "2"], cwd=root, capture_output=True, text=True, timeout=600, env=env)
    assert image.returncode == host.returncode, image.stdout[-3000:] + image.stderr[-3000:]
    on_host, in_image = _outcomes(tmp_path / "host.xml"), _outcomes(tmp_path / "image.xml")
    assert len(on_host) >= at_least
    different = {k: (on_host.get(k), in_image.get(k)) for k in on_host.keys() | in_image.keys()
                 if on_host.get(k) != in_image.get(k)}
    assert not different, different
    assert _where(tmp_path / "host.xml") == {"False"}
    assert _where(tmp_path / "image.xml") == {"True"}, "a test ran on the host"
