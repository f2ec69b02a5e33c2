"""The pytest plugin (registered as ``dockertask`` in pytest11): plugin.py (options, markers, fixtures),
suite.py (tests run by pytest in containers, reported here), checkout.py (the suite image)."""
