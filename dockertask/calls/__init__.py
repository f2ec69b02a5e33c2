"""The call machinery: the runner's policy (runner), where an attempt runs (executors: a fresh container,
one made ahead, a warm replica), what its outcome means (outcomes), what is sent (envelope, pickling,
runtime_zip), and the result cache."""
