"""flytekit code ported by changing its import (contract: "Composing tasks"): flyteorg/flytesnacks'
examples (tests/integration/flytesnacks, unchanged) run on the engine with `from flytekit import` made
`from dockertask import`, and give what flytekit 1.16.31's own local run of the same files printed (see
that folder's README). What cannot mean the same here is a TaskDefinitionError naming the construct."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = Path(__file__).resolve().parent / "flytesnacks"


@pytest.fixture(scope="module")
def ported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The examples with each `from flytekit import ...` changed to dockertask, and nothing else."""
    root = tmp_path_factory.mktemp("flytesnacks")
    for package in ("basics", "advanced_composition"):
        shutil.copytree(EXAMPLES / package, root / package)
        for source in (root / package).glob("*.py"):
            text = source.read_text()
            source.write_text(re.sub(r"^from flytekit import", "from dockertask import", text, flags=re.M))
    return root


def _python(ported: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ported,
                          env={**__import__("os").environ, "PYTHONPATH": f"{ported}:{ROOT}",
                               "DOCKERTASK_PROGRESS": "0"})


def _module(ported: Path, module: str) -> subprocess.CompletedProcess[str]:
    """`python -m module`, as the example's own `if __name__ == "__main__"` block runs it."""
    return _python(ported, f"import runpy; runpy.run_module({module!r}, run_name='__main__')")


# What flytekit 1.16.31 printed running each example's main block locally (the README's command).
MAIN_BLOCKS = {
    "basics.hello_world": "Running hello_world_wf() Hello, World!",
    "basics.task": "-1.5",
    "basics.workflow": "Running simple_wf() 3.0",
    "basics.named_outputs": "Running simple_wf_with_named_outputs() slope_and_intercept_values(slope=-1.5, "
                            "intercept=3.0)",
}


@pytest.mark.parametrize("module", sorted(MAIN_BLOCKS))
def test_an_example_s_main_block_prints_what_flytekit_s_local_run_printed(ported: Path, module: str) -> None:
    done = _module(ported, module)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == MAIN_BLOCKS[module]


def test_workflows_without_a_main_block_give_flytekit_s_values(ported: Path) -> None:
    """The three documented workflows, the partial one and the dynamic one: flytekit gave (-1.5, 3.0) for each
    Tuple[float, float] workflow (as its DefaultNamedTupleOutput(o0=-1.5, o1=3.0), equal to that tuple), -1.5
    and 3; each ran as one run of the record named after it."""
    done = _python(ported, "\n".join([
        "from basics import documenting_workflows as d, workflow as w",
        "from advanced_composition import dynamic_workflow as dyn",
        "print([d.sphinx_docstring_wf(), d.numpy_docstring_wf(), d.google_docstring_wf()])",
        "print(w.simple_wf_with_partial(x=[-3, 0, 3], y=[7, 4, -2]))",
        "print(dyn.dynamic_wf(s1='Pear', s2='Earth'))",
    ]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-3:] == ["[(-1.5, 3.0), (-1.5, 3.0), (-1.5, 3.0)]", "-1.5", "3"]


@pytest.mark.parametrize(("code", "says"), [
    ("import basics.launch_plan", r"TaskDefinitionError: LaunchPlan \(a workflow's launch plan on a Flyte cluster\)"),
    ("import basics.imperative_workflow", r"TaskDefinitionError: Workflow\(\.\.\.\) \(flytekit's imperative"),
    ("from advanced_composition import chain_entities as c; c.chain_tasks_wf()",
     r"TaskDefinitionError: workflow advanced_composition.chain_entities.chain_tasks_wf: `>>` \(line 29\) orders"),
    ("from advanced_composition import dynamic_workflow as d; d.merge_sort(numbers=[3, 1, 2], numbers_count=3)",
     r"TaskDefinitionError: workflow advanced_composition.dynamic_workflow.merge_sort: conditional\(\) builds"),
])
def test_what_cannot_mean_the_same_is_a_definition_error_naming_it(ported: Path, code: str, says: str) -> None:
    """Launch plans, imperative workflows, `>>` and conditional(): refused by name, before any task runs."""
    done = _python(ported, code)
    assert done.returncode == 1
    assert re.search(says, done.stderr), done.stderr
    assert "Running t" not in done.stdout  # chain_tasks_wf's tasks print their names: none ran
