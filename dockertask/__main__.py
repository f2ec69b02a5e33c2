"""``python -m dockertask``: the command line, where the console script is not on PATH."""

from dockertask.cli.commands import main

main(prog_name="dockertask")
