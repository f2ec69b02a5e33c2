"""The user's own package, installed with `pip install .` (not -e), on a real engine: it travels with the
call as the project's modules do; one installed from a wheel travels once the project names it in
[tool.dockertask] by_value. Each in a virtual environment of its own, as a user's project would be."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PACKAGE = {
    "pyproject.toml": textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=61", "wheel"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "salesreport"
        version = "0.1"

        [tool.setuptools]
        packages = ["salesreport"]
    '''),
    "salesreport/__init__.py": "def total(rows):\n    return sum(r['amount'] for r in rows)\n",
}

FLOW = textwrap.dedent('''
    from dockertask import task
    from salesreport import total

    @task
    def report(rows: list[dict]) -> float:
        return total(rows)

    if __name__ == "__main__":
        print(report([{"amount": 2.5}, {"amount": 4}]))
''')


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path]:
    """(the venv's python, the project directory): a venv that sees dockertask and its dependencies (this
    one's site-packages, by a .pth file) and the package's source, not yet installed."""
    for name, text in PACKAGE.items():
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / name).write_text(text)
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "flow.py").write_text(FLOW)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    python = tmp_path / "venv" / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    import sysconfig

    Path(site, "outer.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n{ROOT}\n")
    return python, tmp_path


def _pip(python: Path, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                           *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def _flow(python: Path, where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "flow.py"], capture_output=True, text=True, cwd=where, timeout=300)


def test_a_package_installed_from_a_local_directory_travels_by_value(project: tuple[Path, Path]) -> None:
    """`pip install ./src` puts salesreport in site-packages with a direct_url.json naming the directory:
    the task that imports it runs in an image that has never heard of it (it failed with
    `No module named 'salesreport'` and a hint to pip-install it from the index)."""
    python, root = project
    _pip(python, str(root / "src"))
    done = _flow(python, root / "proj")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6.5"


def test_a_package_installed_from_a_wheel_travels_once_by_value_names_it(project: tuple[Path, Path]) -> None:
    """From a wheel the installer records no local directory: the image lacks it, and the hint does not tell
    the user to install their own package from the index; `by_value = ["salesreport"]` sends it."""
    python, root = project
    wheels = root / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                            str(root / "src")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    _pip(python, str(next(wheels.glob("salesreport-*.whl"))))
    failed = _flow(python, root / "proj")
    assert failed.returncode == 1 and "No module named 'salesreport'" in failed.stderr
    # Its distribution on this host, named as it is, and how to send it if it is the user's own
    assert "packages=['salesreport']" in failed.stderr and "[tool.dockertask] by_value" in failed.stderr
    (root / "proj" / "pyproject.toml").write_text('[tool.dockertask]\nby_value = ["salesreport"]\n')
    done = _flow(python, root / "proj")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6.5"
