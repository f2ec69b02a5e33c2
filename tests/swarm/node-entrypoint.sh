#!/bin/sh
# Start a nested dockerd in this container. /sys and the cgroup v1 hierarchies are mounted
# read-only into an unprivileged container: remount them read-write first (the container has the
# capabilities for it, but not --privileged, which this sandbox refuses).
set -e
mount -o remount,rw /sys 2>/dev/null || true
for d in /sys/fs/cgroup/*; do
    [ -d "$d" ] && mount -o remount,bind,rw "$d" 2>/dev/null || true
done
mount -o remount,rw /sys/fs/cgroup 2>/dev/null || true
if [ "$1" = registry ]; then
    exec /usr/bin/docker-registry serve /etc/dockertask/registry.yml
fi
exec dockerd --host unix:///var/run/docker.sock --host tcp://0.0.0.0:2375 "$@"
