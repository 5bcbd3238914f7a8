#!/bin/sh
# Installs the system libraries Qt needs (even offscreen) when they are missing.
# Debian/Ubuntu only; elsewhere it says what is missing and carries on.
missing=""
for pair in libEGL.so.1:libegl1 libGL.so.1:libgl1 libxkbcommon.so.0:libxkbcommon0 \
            libfontconfig.so.1:libfontconfig1 libdbus-1.so.3:libdbus-1-3; do
    lib=${pair%%:*}; pkg=${pair##*:}
    ldconfig -p 2>/dev/null | grep -q "$lib" || missing="$missing $pkg"
done
[ -d /usr/share/fonts/truetype/dejavu ] || missing="$missing fonts-dejavu-core"
[ "$(uname -s)" = Linux ] || exit 0
[ -z "$missing" ] && exit 0
if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "Installing Qt system libraries:$missing"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
else
    echo "Qt needs these system packages, which are missing:$missing (install them with your package manager)"
fi
