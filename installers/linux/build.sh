#!/bin/sh
# Build the Linux bundle: one-folder PyInstaller app, a .tar.gz of it, and an
# AppImage when appimagetool is available. Then run the frozen binary's
# --self-test; the build fails if it fails.
# Usage: installers/linux/build.sh   (from the repository root, inside `make dist`)
set -eu
PY=${PY:-.venv/bin/python}
VERSION=$($PY -c "import app; print(app.__version__)")
ARCH=$(uname -m)
OUT=dist
BUNDLE=build/dist/Camelid

$PY installers/make_icons.py --out build/icons >/dev/null
$PY -m PyInstaller --noconfirm --log-level WARN --distpath build/dist --workpath build/work installers/camelid.spec
$PY installers/relink_libs.py "$BUNDLE/_internal/llama_cpp/lib"
# The bundle must run on any x86-64 CPU, not only on the one that built it.
case "$ARCH" in x86_64) $PY installers/check_portable.py "$BUNDLE/_internal/llama_cpp/lib";; esac

if command -v desktop-file-validate >/dev/null 2>&1; then
    desktop-file-validate installers/linux/camelid.desktop
else
    echo "desktop-file-validate not found (package desktop-file-utils): .desktop file checked by the tests only"
fi

echo "Self-test of the frozen app:"
CAMELID_HOME=$(mktemp -d) QT_QPA_PLATFORM=offscreen "$BUNDLE/camelid" --self-test

mkdir -p "$OUT"
tar -C build/dist -czf "$OUT/Camelid-$VERSION-linux-$ARCH.tar.gz" Camelid
echo "bundle: $(du -sh "$BUNDLE" | cut -f1) on disk, $(du -h "$OUT/Camelid-$VERSION-linux-$ARCH.tar.gz" | cut -f1) as $OUT/Camelid-$VERSION-linux-$ARCH.tar.gz"

# AppImage: an AppDir around the bundle, packed by appimagetool if present.
APPDIR=build/Camelid.AppDir
rm -rf "$APPDIR"
mkdir -p "$APPDIR/usr/lib" "$APPDIR/usr/share/applications" "$APPDIR/usr/share/icons/hicolor/256x256/apps"
cp -a "$BUNDLE" "$APPDIR/usr/lib/camelid"
cp installers/linux/camelid.desktop "$APPDIR/camelid.desktop"
cp installers/linux/camelid.desktop "$APPDIR/usr/share/applications/camelid.desktop"
cp build/icons/camelid-256.png "$APPDIR/camelid.png"
cp build/icons/camelid-256.png "$APPDIR/usr/share/icons/hicolor/256x256/apps/camelid.png"
cat > "$APPDIR/AppRun" <<'RUN'
#!/bin/sh
HERE=$(dirname "$(readlink -f "$0")")
exec "$HERE/usr/lib/camelid/camelid" "$@"
RUN
chmod +x "$APPDIR/AppRun"
TOOL=${APPIMAGETOOL:-$(command -v appimagetool || true)}
if [ -n "$TOOL" ]; then
    ARCH=$ARCH "$TOOL" "$APPDIR" "$OUT/Camelid-$VERSION-$ARCH.AppImage"
    echo "AppImage: $OUT/Camelid-$VERSION-$ARCH.AppImage"
else
    echo "appimagetool not found: the AppDir is ready in $APPDIR; set APPIMAGETOOL=/path/to/appimagetool to pack it."
fi
