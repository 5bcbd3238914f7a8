#!/bin/sh
# Build Camelid.app and a .dmg on macOS (Apple Silicon: Metal build of llama.cpp).
# Signing and notarization run only when their variables are set:
#   CAMELID_CODESIGN_IDENTITY  "Developer ID Application: Name (TEAMID)"
#   APPLE_ID, APPLE_TEAM_ID, APPLE_APP_PASSWORD  for notarytool
# Usage: installers/macos/build.sh   (from the repository root, inside `make dist`)
set -eu
PY=${PY:-.venv/bin/python}
VERSION=$($PY -c "import app; print(app.__version__)")
APP=build/dist/Camelid.app
OUT=dist

$PY installers/make_icons.py --out build/icons >/dev/null
CAMELID_VERSION=$VERSION $PY -m PyInstaller --noconfirm --log-level WARN --distpath build/dist \
    --workpath build/work installers/camelid.spec
plutil -lint "$APP/Contents/Info.plist"

echo "Self-test of the frozen app:"
CAMELID_HOME=$(mktemp -d) QT_QPA_PLATFORM=offscreen "$APP/Contents/MacOS/camelid" --self-test

if [ -n "${CAMELID_CODESIGN_IDENTITY:-}" ]; then
    codesign --deep --force --timestamp --options runtime \
        --entitlements installers/macos/entitlements.plist \
        --sign "$CAMELID_CODESIGN_IDENTITY" "$APP"
    codesign --verify --deep --strict --verbose=2 "$APP"
else
    echo "CAMELID_CODESIGN_IDENTITY is not set: the app is not signed (Gatekeeper will ask users to allow it)."
fi

mkdir -p "$OUT"
DMG="$OUT/Camelid-$VERSION-macos-$(uname -m).dmg"
rm -f "$DMG"
STAGE=$(mktemp -d)
cp -R "$APP" "$STAGE/"
ln -s /Applications "$STAGE/Applications"
hdiutil create -volname Camelid -srcfolder "$STAGE" -ov -format UDZO "$DMG"
rm -rf "$STAGE"

if [ -n "${CAMELID_CODESIGN_IDENTITY:-}" ]; then
    codesign --force --timestamp --sign "$CAMELID_CODESIGN_IDENTITY" "$DMG"
fi
if [ -n "${CAMELID_CODESIGN_IDENTITY:-}" ] && [ -n "${APPLE_ID:-}" ] && [ -n "${APPLE_TEAM_ID:-}" ] && [ -n "${APPLE_APP_PASSWORD:-}" ]; then
    xcrun notarytool submit "$DMG" --apple-id "$APPLE_ID" --team-id "$APPLE_TEAM_ID" \
        --password "$APPLE_APP_PASSWORD" --wait
    xcrun stapler staple "$DMG"
else
    echo "Notarization skipped: set CAMELID_CODESIGN_IDENTITY, APPLE_ID, APPLE_TEAM_ID and APPLE_APP_PASSWORD to notarize."
fi
echo "app: $(du -sh "$APP" | cut -f1), dmg: $(du -h "$DMG" | cut -f1) at $DMG"
