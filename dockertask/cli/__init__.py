"""The ``dockertask`` command line (commands) and its setup checks (doctor)."""
