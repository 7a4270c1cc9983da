#!/usr/bin/env bash
# A Debian package of a release: scripts/install.sh staged with PREFIX=/usr,
# the units in /lib/systemd/system and the env files as conffiles, plus
# deploy/debian's maintainer scripts (the system user meetperry; systemd told).
#
#   scripts/package.sh [OUTPUT_DIR]        build if needed, write meetperry_<version>_<arch>.deb
#   MEETPERRY_BUILD_DIR=…                  take the binaries from there (as install.sh does)
#
# Then, on a Debian 12 host: apt install ./meetperry_<version>_amd64.deb (which
# pulls libpq5 and libnats3.4), edit /etc/meetperry.env, and
#   systemctl enable --now meetperry meetperry-reporter.timer   (or the JetStream units)
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:-.}
log() { printf '%s package: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%S%z)" "$*" >&2; }

command -v dpkg-deb >/dev/null || { log "error: dpkg-deb is missing (Debian: apt-get install dpkg)"; exit 1; }
BUILD=${MEETPERRY_BUILD_DIR:-.build/release}
if [ -z "${MEETPERRY_BUILD_DIR:-}" ]; then scripts/setup.sh; fi
version=$("$BUILD/receiver" --version | awk '{ print $2 }')
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage"

DESTDIR=$stage PREFIX=/usr SYSTEMD_UNIT_DIR=/lib/systemd/system MEETPERRY_BUILD_DIR=$BUILD \
    MEETPERRY_ENV_FILE=/etc/meetperry.env MEETPERRY_JETSTREAM_ENV_FILE=/etc/meetperry-jetstream.env \
    scripts/install.sh
# Debug information out (a third of the size), symbols kept: a crash's backtrace still names functions.
for program in receiver applier reporter; do strip --strip-debug "$stage/usr/lib/meetperry/bin/$program"; done
install -d "$stage/DEBIAN" "$stage/usr/share/doc/meetperry"
install -m 0644 README.md "$stage/usr/share/doc/meetperry/README.md"
install -m 0644 deploy/README.md "$stage/usr/share/doc/meetperry/README.deploy.md"
for script in postinst prerm postrm; do install -m 0755 "deploy/debian/$script" "$stage/DEBIAN/$script"; done
printf '%s\n' /etc/meetperry.env /etc/meetperry-jetstream.env > "$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | awk '{ print $1 }')
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" deploy/debian/control > "$stage/DEBIAN/control"
mkdir -p "$OUT"
deb="$OUT/meetperry_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
log "wrote $deb"
echo "$deb"
