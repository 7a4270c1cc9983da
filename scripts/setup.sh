#!/usr/bin/env bash
# Developer set-up: what this machine needs to build and run meetperry, then
# the release binaries. pipeline.sh runs it when it is not given prebuilt
# binaries (MEETPERRY_BIN_DIR); a production host never does (scripts/install.sh).
#
#   scripts/setup.sh [--with-postgres]
#
# Checks (as root: installs with apt-get) libpq-dev and libnats-dev, which the
# binaries link, and with --with-postgres the PostgreSQL server for a private
# cluster; then `swift build -c release --static-swift-stdlib` (seconds when up to date).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '%s setup: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S%z)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

missing=()
pkg-config --exists libpq 2>/dev/null || [ -f /usr/include/postgresql/libpq-fe.h ] || missing+=(libpq-dev)
pkg-config --exists libnats 2>/dev/null || [ -f /usr/include/nats/nats.h ] || missing+=(libnats-dev)
if [ "${1:-}" = --with-postgres ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then missing+=(postgresql); fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
            || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } \
            || die "apt-get install ${missing[*]} failed"
    else
        die "missing packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})"
    fi
fi

command -v swift >/dev/null || die "swift is not on PATH (https://swift.org/install)"
# Current binaries need no build (a restart then takes a second, and never waits for a
# build lock another build holds): all three there with the runtime linked in, and no
# source newer than the newest of them (a build relinks what a changed source is in).
release=${MEETPERRY_SCRATCH_PATH:-.build}/release
current=yes newest=
for program in receiver applier reporter; do
    if [ ! -x "$release/$program" ] || ldd "$release/$program" 2>/dev/null | grep -q libswiftCore; then current=no; fi
    if [ -z "$newest" ] || [ "$release/$program" -nt "$newest" ]; then newest=$release/$program; fi
done
if [ "$current" = yes ] && [ -n "$(find Sources Package.swift -newer "$newest" -print -quit)" ]; then current=no; fi
if [ "$current" = yes ]; then
    log "release binaries are current ($release)"
    exit 0
fi
log "building release binaries (the first build takes a few minutes)"
# The Swift runtime linked in: the binaries run on a server without the toolchain,
# needing only libpq5 and libnats3.4 (and libc, libstdc++) from Debian.
# MEETPERRY_SCRATCH_PATH: build there instead of .build (binaries in its release/).
swift build -c release --static-swift-stdlib ${MEETPERRY_SCRATCH_PATH:+--scratch-path "$MEETPERRY_SCRATCH_PATH"} >&2
