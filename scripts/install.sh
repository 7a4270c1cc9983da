#!/usr/bin/env bash
# Puts a release of meetperry in place for systemd: the binaries,
# pipeline.sh, changeset.sql and the units, which then run these installed
# files and never build or install packages.
#
#   scripts/install.sh                 build if needed, install under /usr/local/lib/meetperry
#   PREFIX=/opt/mp scripts/install.sh  another place
#   DESTDIR=/tmp/stage scripts/install.sh   stage into a directory (packaging, tests)
#
# Then, once: edit /etc/meetperry.env (installed when absent), and
#   systemctl daemon-reload && systemctl enable --now meetperry meetperry-reporter.timer
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
LIB=$PREFIX/lib/meetperry
UNITS=${SYSTEMD_UNIT_DIR:-/etc/systemd/system}
ENV_FILE=/etc/meetperry.env

log() { printf '%s install: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S%z)" "$*" >&2; }

if [ ! -x .build/release/receiver ] || [ ! -x .build/release/applier ] || [ ! -x .build/release/reporter ]; then
    scripts/setup.sh
fi

install -d "$DESTDIR$LIB/bin" "$DESTDIR$LIB/scripts" "$DESTDIR$UNITS" "$DESTDIR/etc"
for program in receiver applier reporter; do
    install -m 0755 ".build/release/$program" "$DESTDIR$LIB/bin/$program"
done
install -m 0755 pipeline.sh "$DESTDIR$LIB/pipeline.sh"
install -m 0755 scripts/postgres.sh "$DESTDIR$LIB/scripts/postgres.sh"
install -m 0644 changeset.sql "$DESTDIR$LIB/changeset.sql"
# The units name the installed files.
for unit in deploy/meetperry.service deploy/meetperry-reporter.service deploy/meetperry-reporter.timer; do
    sed "s|@LIB@|$LIB|g" "$unit" > "$DESTDIR$UNITS/$(basename "$unit")"
    chmod 0644 "$DESTDIR$UNITS/$(basename "$unit")"
done
if [ ! -e "$DESTDIR$ENV_FILE" ]; then
    install -m 0640 deploy/meetperry.env "$DESTDIR$ENV_FILE"
    log "installed $ENV_FILE: set DATABASE_URL (or DB_*) and REPORT_DIR there"
fi
log "installed into $DESTDIR$LIB; units in $DESTDIR$UNITS"
