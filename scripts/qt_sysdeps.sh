#!/bin/sh
# Installs the system libraries Qt needs when they are missing: every library
# PySide6's xcb platform plugin (the Linux desktop), its wayland and offscreen
# plugins and QtWidgets link, found by running ldd on those files, so a PySide6
# upgrade that links something new cannot slip past. Before PySide6 is
# installed (a fresh clone) it checks the list below instead.
#
#   sh scripts/qt_sysdeps.sh                     the desktop's libraries
#   sh scripts/qt_sysdeps.sh --with-xvfb         those, plus Xvfb and xauth (the tests)
#   sh scripts/qt_sysdeps.sh --packages-for SONAME...   print each one's package, exit
#
# Debian/Ubuntu: apt-get as root, or through sudo. Elsewhere it names the
# packages and what to do, and carries on. Silent when nothing is missing.
# PY=path/to/python picks the Python whose PySide6 is walked (default .venv's).
set -u
here=$(cd "$(dirname "$0")" && pwd)

# The libraries PySide6 6.12's xcb plugin and QtWidgets link (the fallback
# before PySide6 exists; the ldd walk supersedes it).
KNOWN="libEGL.so.1 libGL.so.1 libGLX.so.0 libfontconfig.so.1 libfreetype.so.6 libdbus-1.so.3
libglib-2.0.so.0 libxkbcommon.so.0 libxkbcommon-x11.so.0 libX11.so.6 libX11-xcb.so.1 libxcb.so.1
libxcb-cursor.so.0 libxcb-icccm.so.4 libxcb-image.so.0 libxcb-keysyms.so.1 libxcb-randr.so.0
libxcb-render.so.0 libxcb-render-util.so.0 libxcb-shape.so.0 libxcb-shm.so.0 libxcb-sync.so.1
libxcb-util.so.1 libxcb-xfixes.so.0 libxcb-xkb.so.1"

# soname -> Debian/Ubuntu package: Debian's rule (libfoo.so.N -> libfooN, with
# a hyphen when foo ends in a digit), except these. app/ui/platform_check.py
# has the same table; tests/ui/test_startup.py checks they agree.
package_for() {
    case $1 in
        libz.so.1) echo zlib1g ;;
        libglib-2.0.so.0|libgthread-2.0.so.0|libgobject-2.0.so.0|libgio-2.0.so.0|libgmodule-2.0.so.0)
            echo libglib2.0-0 ;;
        libGLdispatch.so.0) echo libglvnd0 ;;
        libbrotlidec.so.1|libbrotlicommon.so.1) echo libbrotli1 ;;
        libharfbuzz.so.0) echo libharfbuzz0b ;;
        libc.so.6|libm.so.6|libdl.so.2|libpthread.so.0|librt.so.1) echo libc6 ;;
        lib*.so.[0-9]*)
            name=$(echo "$1" | sed 's/^lib//; s/\.so\..*$//' | tr 'A-Z_' 'a-z-')
            major=$(echo "$1" | sed 's/^.*\.so\.\([0-9]*\).*$/\1/')
            case $name in *[0-9]) name="$name-" ;; esac
            echo "lib$name$major" ;;
        *) echo "$1" ;;
    esac
}

with_xvfb=no
case "${1:-}" in
    --packages-for) shift; for soname in "$@"; do package_for "$soname"; done; exit 0 ;;
    --with-xvfb) with_xvfb=yes ;;
    "") ;;
    *) echo "usage: sh scripts/qt_sysdeps.sh [--with-xvfb | --packages-for SONAME...]" >&2; exit 2 ;;
esac
[ "$(uname -s)" = Linux ] || exit 0

# Missing sonames: ldd on PySide6's own files when it is installed.
PY=${PY:-$here/../.venv/bin/python}
qt=""
[ -x "$PY" ] && qt=$("$PY" -c 'import importlib.util as u; s = u.find_spec("PySide6"); print(s.submodule_search_locations[0] if s else "")' 2>/dev/null)
sonames=""
if [ -n "$qt" ] && [ -f "$qt/Qt/plugins/platforms/libqxcb.so" ] && command -v ldd >/dev/null 2>&1; then
    for file in "$qt/Qt/plugins/platforms/libqxcb.so" "$qt/Qt/plugins/platforms/libqwayland.so" \
                "$qt/Qt/plugins/platforms/libqoffscreen.so" "$qt"/QtWidgets*.so; do
        [ -f "$file" ] || continue
        sonames="$sonames $(ldd "$file" 2>/dev/null | awk '$2 == "=>" && $3 == "not" { print $1 }')"
    done
else
    [ -n "$qt" ] && echo "qt_sysdeps: no xcb plugin to walk in $qt (or no ldd); checking the built-in list instead"
    LDCONFIG=$(command -v ldconfig || echo /sbin/ldconfig)
    have=$("$LDCONFIG" -p 2>/dev/null | awk '{ print $1 }')
    for soname in $KNOWN; do
        echo "$have" | grep -qxF "$soname" || sonames="$sonames $soname"
    done
fi
sonames=$(echo $sonames | tr ' ' '\n' | sort -u | tr '\n' ' ')
sonames=${sonames% }

packages=""
for soname in $sonames; do packages="$packages $(package_for "$soname")"; done
# Qt draws no text without at least one font.
fonts=$(find /usr/share/fonts /usr/local/share/fonts -name '*.[ot]t[fc]' 2>/dev/null | head -n 1)
[ -n "$fonts" ] || packages="$packages fonts-dejavu-core"
if [ "$with_xvfb" = yes ]; then
    command -v Xvfb >/dev/null 2>&1 || packages="$packages xvfb"
    command -v xauth >/dev/null 2>&1 || packages="$packages xauth"
fi
packages=$(echo $packages | tr ' ' '\n' | sort -u | tr '\n' ' ')
packages=${packages% }
[ -z "$packages" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "Qt needs these system packages, which are missing (Debian/Ubuntu names): $packages." \
         "Install what provides them with your package manager${sonames:+ (the libraries: $sonames; Fedora finds each with: sudo dnf install 'SONAME()(64bit)')}."
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        echo "Qt needs these system packages, which are missing: $packages; as root, run: apt-get install $packages"
        exit 0
    fi
fi
echo "Installing system packages for Qt: $packages"
$SUDO apt-get update -qq || exit 1
# A soname whose guessed package apt does not know is named, not passed to apt-get.
known=""
for package in $packages; do
    if apt-cache showpkg "$package" 2>/dev/null | grep -q "^Package: "; then
        known="$known $package"
    else
        echo "No Debian/Ubuntu package named $package is known to apt (it was guessed from a missing library): install whatever provides it."
    fi
done
[ -n "$known" ] || exit 0
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $known
