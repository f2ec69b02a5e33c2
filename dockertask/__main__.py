"""``python -m dockertask``: the command line, where the console script is not on PATH."""

from .cli import main

main(prog_name="dockertask")
