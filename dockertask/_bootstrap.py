"""What runs inside the container: read the envelope, run the function, write the result.

Stdlib only, and written for old Pythons on purpose: it must be able to *say* that the image's
Python is the wrong one before anything newer is imported. The host copies this file, the
runtime zip (cloudpickle + dockertask, no dependencies) and the envelope into RUN_DIR, and
fetches ``RUN_DIR/out/result`` after the container exits.

The exit code is 0 whenever a result was written, including for user exceptions; a non-zero
exit therefore always means an infrastructure failure (OOM kill, signal, crash).

Result file: one line of JSON metadata, then (for "ok" and "error") the pickled payload.
"""

import json
import os
import sys
import traceback

RUN_DIR = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(RUN_DIR, "out")
SECRETS_DIR = "/etc/secrets"


def write_result(meta, payload=b""):
    tmp = os.path.join(OUT_DIR, "result.tmp")
    with open(tmp, "wb") as f:
        f.write(json.dumps(meta).encode("utf-8") + b"\n")
        f.write(payload)
    # rename is atomic: the host never reads half a result, even after a kill mid-write
    os.rename(tmp, os.path.join(OUT_DIR, "result"))


def read_secrets(header):
    """Secrets arrive on stdin (never in the container's config, image or logs)."""
    if not header.get("secrets_on_stdin"):
        return {}
    data = b""
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line or line.strip() == b"--end--":
            break
        data += line
    return json.loads(data.decode("utf-8")) if data.strip() else {}


def install_secrets(secrets):
    for item in secrets:
        if item["mount"] == "env":
            os.environ[item["env_name"]] = item["value"]
            continue
        group_dir = os.path.join(SECRETS_DIR, item["group"])
        if not os.path.isdir(group_dir):
            os.makedirs(group_dir, 0o700)
        path = os.path.join(group_dir, item["key"] or item["group"])
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
        with os.fdopen(fd, "w") as f:
            f.write(item["value"])


def main():
    with open(os.path.join(RUN_DIR, "header.json")) as f:
        header = json.load(f)
    want = header["python"]
    have = "%d.%d" % sys.version_info[:2]
    if want != have:
        write_result({"status": "python_version", "image_python": sys.version.split()[0], "host_python": want})
        return 0
    # Line-buffer so the host sees each line as soon as it is printed, without `-u`'s cost
    # of one write per print fragment.
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    sys.path.insert(0, os.path.join(RUN_DIR, "runtime.zip"))
    try:
        secrets = read_secrets(header)
        install_secrets(secrets)
        import cloudpickle
        from dockertask import context

        context.enter_container(header)
        with open(os.path.join(RUN_DIR, "envelope.pkl"), "rb") as f:
            func, args, kwargs = cloudpickle.load(f)
    except BaseException as exc:  # noqa: B902 - anything here is a load failure to report
        write_result({"status": "load_error", "type": type(exc).__name__, "message": str(exc),
                      "traceback": traceback.format_exc()})
        return 0
    try:
        value = func(*args, **kwargs)
    except BaseException as exc:  # user code may raise anything, SystemExit included
        tb = traceback.format_exc()
        meta = {"status": "error", "type": type(exc).__module__ + "." + type(exc).__qualname__,
                "message": str(exc), "traceback": tb}
        try:
            payload = cloudpickle.dumps(exc, protocol=5)
        except Exception as perr:  # the exception itself is not picklable: send its text only
            meta["pickle_error"] = repr(perr)
            payload = b""
        write_result(meta, payload)
        return 0
    try:
        payload = cloudpickle.dumps(value, protocol=5)
    except Exception as exc:
        write_result({"status": "error", "type": type(exc).__module__ + "." + type(exc).__qualname__,
                      "message": "the return value could not be pickled: %s" % exc,
                      "traceback": traceback.format_exc()})
        return 0
    write_result({"status": "ok"}, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
