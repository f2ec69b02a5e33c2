"""This host process: its owner labels, its signal handling (Ctrl-C kills what it started), its
cache and state directories, and the removals it still owes an engine it lost."""
