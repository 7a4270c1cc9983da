#!/usr/bin/env bash
# Puts a release of meetperry in place for systemd: the binaries,
# pipeline.sh, changeset.sql and the units, which then run these installed
# files and never build or install packages.
#
#   scripts/install.sh                 build if needed, install under /usr/local/lib/meetperry
#   PREFIX=/opt/mp scripts/install.sh  another place
#   DESTDIR=/tmp/stage scripts/install.sh   stage into a directory (packaging, tests)
#   SYSTEMD_UNIT_DIR, MEETPERRY_ENV_FILE, MEETPERRY_JETSTREAM_ENV_FILE: where the units
#   and the two env files go (/etc/systemd/system, /etc/meetperry.env, /etc/meetperry-jetstream.env)
#
# Then, once: edit /etc/meetperry.env (installed when absent), and
#   systemctl daemon-reload && systemctl enable --now meetperry meetperry-reporter.timer
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
LIB=$PREFIX/lib/meetperry
UNITS=${SYSTEMD_UNIT_DIR:-/etc/systemd/system}
ENV_FILE=${MEETPERRY_ENV_FILE:-/etc/meetperry.env}

log() { printf '%s install: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S%z)" "$*" >&2; }

# MEETPERRY_BUILD_DIR: take the binaries from there (the tests install their own build).
BUILD=${MEETPERRY_BUILD_DIR:-.build/release}
if [ ! -x "$BUILD/receiver" ] || [ ! -x "$BUILD/applier" ] || [ ! -x "$BUILD/reporter" ]; then
    [ -z "${MEETPERRY_BUILD_DIR:-}" ] || { echo "install: no receiver, applier and reporter in $BUILD" >&2; exit 1; }
    scripts/setup.sh
fi

install -d "$DESTDIR$LIB/bin" "$DESTDIR$LIB/scripts" "$DESTDIR$UNITS" "$DESTDIR/etc"
for program in receiver applier reporter; do
    install -m 0755 "$BUILD/$program" "$DESTDIR$LIB/bin/$program"
done
# What the binaries load at run time: libpq5 and libnats3.4 from Debian (the
# Swift runtime is linked in). A library this host lacks is named, with its package.
missing=$(for program in receiver applier reporter; do ldd "$DESTDIR$LIB/bin/$program" 2>/dev/null | awk '/not found/ { print $1 }'; done | sort -u)
if [ -n "$missing" ]; then
    log "error: the binaries need libraries this host lacks: $(echo $missing) (Debian: apt-get install libpq5 libnats3.4)"
    exit 1
fi
if ldd "$DESTDIR$LIB/bin/receiver" 2>/dev/null | grep -q '/opt/swift\|libswiftCore'; then
    log "warning: these binaries load the Swift runtime from the toolchain; build with scripts/setup.sh (--static-swift-stdlib) for a server without it"
fi
install -m 0755 pipeline.sh "$DESTDIR$LIB/pipeline.sh"
install -m 0755 scripts/postgres.sh "$DESTDIR$LIB/scripts/postgres.sh"
install -m 0644 changeset.sql "$DESTDIR$LIB/changeset.sql"
# The units name the installed files.
# The JetStream units too (receiver and applier hosts enable one of them instead of meetperry.service).
# The .socket units hold the webhook port across restarts (optional; deploy/README.md).
for unit in deploy/meetperry.service deploy/meetperry.socket deploy/meetperry-reporter.service deploy/meetperry-reporter.timer \
    deploy/jetstream/meetperry-receiver.service deploy/jetstream/meetperry-receiver.socket deploy/jetstream/meetperry-applier.service; do
    sed "s|@LIB@|$LIB|g" "$unit" > "$DESTDIR$UNITS/$(basename "$unit")"
    chmod 0644 "$DESTDIR$UNITS/$(basename "$unit")"
done
# meetperry.service and the reporter run as the system user meetperry (the
# JetStream units have dynamic users of their own): made on a real install (as
# root, no DESTDIR, the units in /etc/systemd/system), when it is missing.
if [ -z "$DESTDIR" ] && [ "$UNITS" = /etc/systemd/system ] && [ "$(id -u)" = 0 ] && ! getent passwd meetperry >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/meetperry --no-create-home --shell /usr/sbin/nologin meetperry
    log "created the system user meetperry (meetperry.service and the reporter run as it)"
fi
JETSTREAM_ENV_FILE=${MEETPERRY_JETSTREAM_ENV_FILE:-/etc/meetperry-jetstream.env}
if [ ! -e "$DESTDIR$JETSTREAM_ENV_FILE" ]; then
    install -m 0640 deploy/jetstream/jetstream.env "$DESTDIR$JETSTREAM_ENV_FILE"
fi
if [ ! -e "$DESTDIR$ENV_FILE" ]; then
    install -m 0640 deploy/meetperry.env "$DESTDIR$ENV_FILE"
    log "installed $ENV_FILE: set DATABASE_URL (or DB_*) and REPORT_DIR there"
fi
log "installed into $DESTDIR$LIB; units in $DESTDIR$UNITS"
