"""The pytest plugin (registered as ``dockertask`` in pytest11): markers, fixtures, what of a test is
shipped into its container, and its tracebacks re-made as the host's frames."""
