#!/bin/sh
# Build a minimal Debian base image with Python, with no container registry at all.
#
# Why this exists: dockertask's default runtime image normally starts FROM python:X.Y-slim,
# but air-gapped machines (and CI here) cannot pull anything. Debian's own packages can still
# be reached (a mirror or a local apt proxy), so we debootstrap a minbase root file system with
# python3 and hand the root file system, as a tar, to the engine to import (dockertask does it
# through the API, so no docker CLI is needed). Debian's python3 decides the version:
#   bullseye -> 3.9, bookworm -> 3.11, trixie -> 3.13.
#
# usage: bootstrap-base.sh SUITE OUT.tar [MIRROR]
# Needs root and debootstrap on the host. Leaves nothing behind but OUT.tar.
set -eu
suite=$1
out=$2
mirror=${3:-}
if [ -z "$mirror" ]; then
    # Reuse the host's apt mirror: it is the one that is known to be reachable.
    mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
             | grep -v security | head -n 1)
    [ -n "$mirror" ] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
fi
if [ "$(id -u)" != 0 ]; then
    echo "bootstrap-base.sh: debootstrap needs root (run as root, or build the default image where python:X.Y-slim can be pulled)" >&2
    exit 2
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        echo "installing debootstrap" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2 \
            || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2; }
    else
        echo "bootstrap-base.sh: debootstrap is not installed" >&2
        exit 2
    fi
fi
root=$(mktemp -d "${TMPDIR:-/tmp}/dockertask-rootfs.XXXXXX")
trap 'rm -rf "$root"' EXIT INT TERM
echo "debootstrap $suite from $mirror (about a minute)" >&2
debootstrap --variant=minbase --include=python3,ca-certificates "$suite" "$root" "$mirror" >&2
# Keep the image small: apt lists and caches are not needed at run time.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
       "$root"/usr/share/man/* "$root"/usr/share/locale/*
tar -C "$root" -c -f "$out" .
echo "$out"
