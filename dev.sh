#!/usr/bin/env bash
# dockertask's two commands, from a clean clone with nothing installed by hand:
#
#   ./dev.sh example   run examples/hello.py: a real task in a container, on the default image
#   ./dev.sh test      run the whole test suite (extra arguments go to pytest)
#   ./dev.sh lint      ruff and mypy --strict over the package
#   ./dev.sh test-podman  the single-engine integration tests again, on Podman's Docker API (CI runs it)
#
# Both first make sure of what they need: a venv with dockertask installed (.venv), a reachable
# Docker engine (installed with apt and started when none is reachable and we are root), and
# dockertask's default image (built once; with no registry, from Debian packages).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${DOCKERTASK_VENV:-.venv}
say() { printf 'dev.sh: %s\n' "$*" >&2; }
as_root() { [ "$(id -u)" = 0 ]; }
apt_install() {
    as_root || { say "need root to install $*; install them and run again"; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 || {
        apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

ensure_venv() {
    local py=${PYTHON:-python3}
    command -v "$py" >/dev/null || { say "no $py found: install Python 3.11 or newer"; exit 1; }
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV"
        if ! "$py" -m venv "$VENV" 2>/dev/null; then
            rm -rf "$VENV"
            # Debian's python3 has no venv module until python3-venv is installed.
            apt_install "python3-venv"
            "$py" -m venv "$VENV"
        fi
    fi
    # Reinstall only when the project's metadata changed since the last install.
    local stamp="$VENV/.dockertask-installed"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        say "installing dockertask and its test tools into $VENV"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]'
        touch "$stamp"
    fi
}

engine_up() { "$VENV/bin/python" -c 'import docker; docker.from_env(timeout=5).ping()' >/dev/null 2>&1; }

ensure_engine() {
    engine_up && return 0
    if ! as_root; then
        say "no Docker engine is reachable; start one (sudo systemctl start docker) or set DOCKER_HOST"
        return 1
    fi
    command -v dockerd >/dev/null || { say "installing docker.io"; apt_install docker.io; }
    say "starting dockerd (log: /var/log/dockertask-dockerd.log)"
    # setsid + nohup: the engine outlives this script, as a service would.
    setsid nohup dockerd >/var/log/dockertask-dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 1 60); do
        engine_up && return 0
        sleep 1
    done
    say "dockerd did not come up in 60 s; see /var/log/dockertask-dockerd.log"
    tail -n 20 /var/log/dockertask-dockerd.log >&2 || true
    return 1
}

# The dashboard's tests drive Debian's headless Chromium through its chromedriver: installed from Debian's
# packages, never downloaded by a test at run time.
ensure_browser() {
    command -v chromium >/dev/null && command -v chromedriver >/dev/null && return 0
    if as_root; then
        say "installing chromium and chromium-driver (the dashboard's browser tests)"
        apt_install chromium chromium-driver
    else
        say "chromium and chromium-driver are missing: the dashboard's browser tests will fail (apt-get install them)"
    fi
}

ensure_default_image() {
    "$VENV/bin/dockertask" doctor --fix >&2
}

# Podman's Docker-compatible API as the engine: its own service on a private socket and configuration
# (this sandbox refuses Podman's default ulimits), with Docker's default image loaded into it.
PODMAN_PID=
PODMAN_DIR=
stop_podman() {
    if [ -n "$PODMAN_PID" ]; then kill "$PODMAN_PID" 2>/dev/null || true; wait "$PODMAN_PID" 2>/dev/null || true; fi
    if [ -n "$PODMAN_DIR" ]; then rm -rf "$PODMAN_DIR"; fi
    PODMAN_PID=
    PODMAN_DIR=
}

podman_tests() {
    command -v podman >/dev/null && command -v catatonit >/dev/null \
        || { say "installing podman and catatonit"; apt_install podman catatonit; }
    local sock ref rc=0
    PODMAN_DIR=$(mktemp -d /tmp/dockertask-podman.XXXXXX)
    trap stop_podman EXIT  # whatever happens below (set -e included), the service and its directory go
    sock="$PODMAN_DIR/podman.sock"
    printf '[containers]\ndefault_ulimits = []\n' > "$PODMAN_DIR/containers.conf"
    CONTAINERS_CONF="$PODMAN_DIR/containers.conf" setsid podman system service --time=0 "unix://$sock" \
        >"$PODMAN_DIR/service.log" 2>&1 < /dev/null &
    PODMAN_PID=$!
    for _ in $(seq 1 30); do [ -S "$sock" ] && break; sleep 0.5; done
    [ -S "$sock" ] || { say "podman's API service did not start:"; cat "$PODMAN_DIR/service.log" >&2; return 1; }
    ref=$("$VENV/bin/python" -c 'from dockertask.images.refs import default_image_ref; print(default_image_ref())')
    # The default image, and the registry-free Debian base it was made from where there is one (a test
    # builds an ImageSpec on it): loaded from Docker, since building them again would repeat debootstrap.
    for image in "$ref" dockertask-base:bookworm; do
        if ! podman image exists "$image" && docker image inspect "$image" >/dev/null 2>&1; then
            say "loading $image into podman"
            docker save "$image" | podman load -q >/dev/null
        fi
    done
    say "integration tests on podman $(podman --version | awk '{print $3}') at unix://$sock"
    CONTAINERS_CONF="$PODMAN_DIR/containers.conf" DOCKER_HOST="unix://$sock" \
        "$VENV/bin/python" -m pytest tests/integration "$@" || rc=$?
    stop_podman
    return "$rc"
}

cmd=${1:-help}
shift || true
case "$cmd" in
    example)
        ensure_venv
        ensure_engine
        ensure_default_image
        exec "$VENV/bin/python" examples/hello.py "$@"
        ;;
    test)
        ensure_venv
        ensure_browser
        if ensure_engine; then
            ensure_default_image
        else
            say "integration tests will be skipped (each says why): no engine"
        fi
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    test-podman)
        ensure_venv
        ensure_browser
        ensure_engine
        ensure_default_image
        podman_tests "$@"
        ;;
    lint)
        ensure_venv
        "$VENV/bin/ruff" check dockertask tests bench
        exec "$VENV/bin/mypy" dockertask
        ;;
    *)
        sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
        [ "$cmd" = help ] || exit 2
        ;;
esac
