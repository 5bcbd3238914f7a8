"""Starting the desktop: the platform check before QApplication, the real window on a real X
server (Xvfb, the xcb plugin), the one-sentence refusals, and scripts/qt_sysdeps.sh."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.ui import platform_check
from app.ui.platform_check import package_for, problem, requested_platforms
from app.ui.screenshot import SIZE
from tests.fixtures import REPO_ROOT as REPO

SCRIPT = REPO / "scripts" / "qt_sysdeps.sh"
LINUX = sys.platform.startswith("linux")
MISSING_ICCCM = "libxcb-icccm.so.4: cannot open shared object file: No such file or directory"


def camelid(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment with no display, no platform choice and no plugin-path override."""
    env = {k: v for k, v in os.environ.items()
           if k not in {"DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM", "XDG_SESSION_TYPE",
                        "QT_QPA_PLATFORM_PLUGIN_PATH", "QT_PLUGIN_PATH"}}
    env.update(extra)
    return env


def assert_one_sentence(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 2 (not a signal), nothing on stdout, one line on stderr, no traceback, no core."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "core dumped" not in result.stderr
    assert "qt.qpa" not in result.stderr  # Qt never got far enough to print its own hint
    assert result.stdout == ""
    return lines[0]


# --- the check, with fake inputs ---------------------------------------------------------------
@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    """A Qt plugin folder holding (empty) xcb, wayland and offscreen platform plugins."""
    platforms = tmp_path / "plugins" / "platforms"
    platforms.mkdir(parents=True)
    for name in ("libqxcb.so", "libqwayland.so", "libqoffscreen.so"):
        (platforms / name).write_bytes(b"")
    return platforms.parent


def loader(failures: dict[str, str]):
    """A fake dlopen: raises OSError(text) for plugin files named in `failures`, records the rest."""
    loaded: list[str] = []

    def load(path: Path) -> None:
        if path.name in failures:
            raise OSError(failures[path.name])
        loaded.append(path.name)

    load.loaded = loaded  # type: ignore[attr-defined]
    return load


def check(env: dict[str, str], plugins: Path, load, **kw) -> str | None:
    kw.setdefault("list_missing", lambda path: [])
    kw.setdefault("display_answers", lambda display: True)
    return problem(env, system="linux", plugins_dir=plugins, load=load, apt=True, checkout=True,
                   root=False, **kw)


def test_a_missing_library_becomes_the_package_sentence(plugins: Path) -> None:
    load = loader({"libqxcb.so": MISSING_ICCCM})
    sentence = check({"DISPLAY": ":0"}, plugins, load,
                     list_missing=lambda path: ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"])
    assert sentence == ("The desktop needs these system packages: libxcb-icccm4 libxcb-keysyms1 "
                        "(install them with `sudo apt install libxcb-icccm4 libxcb-keysyms1`, "
                        "or run `make run`, which installs them).")


def test_without_ldd_the_sentence_names_the_library_dlopen_named(plugins: Path) -> None:
    sentence = check({"DISPLAY": ":0"}, plugins, loader({"libqxcb.so": MISSING_ICCCM}))
    assert sentence is not None and "packages: libxcb-icccm4 (" in sentence


def test_the_package_sentence_fits_where_it_is_read() -> None:
    frozen_root = platform_check.packages_sentence(["libxcb-keysyms.so.1"], apt=True, checkout=False,
                                                   root=True)
    assert "`apt install libxcb-keysyms1`" in frozen_root and "make run" not in frozen_root
    other = platform_check.packages_sentence(["libxcb-keysyms.so.1"], apt=False, checkout=True,
                                             root=False)
    assert "libxcb-keysyms.so.1" in other and "libxcb-keysyms1" in other and "apt" not in other


def test_no_display_is_said_before_any_plugin_is_loaded(plugins: Path) -> None:
    load = loader({"libqxcb.so": MISSING_ICCCM})
    assert check({}, plugins, load) == ("No display found: use `camelid chat` in a terminal, "
                                        "or set DISPLAY.")
    assert check({"QT_QPA_PLATFORM": "xcb"}, plugins, load).startswith("No display found")
    assert load.loaded == []


def test_offscreen_needs_no_display_and_is_respected(plugins: Path) -> None:
    load = loader({"libqxcb.so": MISSING_ICCCM})
    assert check({"QT_QPA_PLATFORM": "offscreen"}, plugins, load) is None
    assert load.loaded == ["libqoffscreen.so"]


def test_offscreen_with_a_missing_library_is_named_too(plugins: Path) -> None:
    load = loader({"libqoffscreen.so": "libEGL.so.1: cannot open shared object file: No such file"})
    sentence = check({"QT_QPA_PLATFORM": "offscreen"}, plugins, load)
    assert sentence is not None and "packages: libegl1 " in sentence


def test_a_wayland_session_falls_back_to_xcb_like_qt(plugins: Path) -> None:
    env = {"XDG_SESSION_TYPE": "wayland", "WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}
    assert requested_platforms(env) == ["wayland", "xcb"]
    missing_cursor = "libwayland-cursor.so.0: cannot open shared object file: No such file"
    assert check(env, plugins, loader({"libqwayland.so": missing_cursor})) is None
    # Without XWayland the wayland plugin was the only way: its library is what to install.
    sentence = check({**env, "DISPLAY": ""}, plugins, loader({"libqwayland.so": missing_cursor}))
    assert sentence is not None and "libwayland-cursor0" in sentence


def test_qt_qpa_platform_lists_and_options_are_read_like_qt() -> None:
    assert requested_platforms({"QT_QPA_PLATFORM": "wayland;xcb"}) == ["wayland", "xcb"]
    assert requested_platforms({"QT_QPA_PLATFORM": "vnc:size=800x600"}) == ["vnc"]
    assert requested_platforms({"XDG_SESSION_TYPE": "x11"}) == ["xcb"]


def test_a_display_nobody_answers_at_is_said(plugins: Path) -> None:
    sentence = check({"DISPLAY": ":7"}, plugins, loader({}), display_answers=lambda d: False)
    assert sentence is not None and sentence.startswith("No display found: nothing answers at DISPLAY=:7")
    # Remote displays (SSH forwarding) cannot be told apart from here: Qt tries them.
    assert check({"DISPLAY": "host:10.0"}, plugins, loader({}), display_answers=lambda d: None) is None


def test_an_unknown_platform_names_the_ones_there_are(plugins: Path) -> None:
    sentence = check({"QT_QPA_PLATFORM": "bogus"}, plugins, loader({}))
    assert sentence is not None
    assert "QT_QPA_PLATFORM=bogus" in sentence and "offscreen, wayland, xcb" in sentence


def test_a_plugin_that_fails_for_another_reason_is_said_as_is(plugins: Path) -> None:
    sentence = check({"DISPLAY": ":0"}, plugins,
                     loader({"libqxcb.so": "libqxcb.so: undefined symbol: xcb_frobnicate"}))
    assert sentence == ("The desktop cannot start: Qt's xcb platform plugin does not load "
                        "(libqxcb.so: undefined symbol: xcb_frobnicate).")


def test_macos_and_windows_only_notice_a_missing_plugin(tmp_path: Path) -> None:
    platforms = tmp_path / "platforms"
    platforms.mkdir()
    assert "libqcocoa.dylib" in problem({}, system="darwin", plugins_dir=tmp_path)
    (platforms / "libqcocoa.dylib").write_bytes(b"")
    assert problem({}, system="darwin", plugins_dir=tmp_path) is None
    assert problem({}, system="win32", plugins_dir=tmp_path / "nowhere") is None


@pytest.mark.skipif(not LINUX, reason="X11 sockets are a Linux matter")
def test_x_display_answers_only_where_a_server_listens(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(tmp_path / "X5"))
        server.listen(1)
        assert platform_check.x_display_answers(":5", tmp_path) is True
        assert platform_check.x_display_answers("unix:5.0", tmp_path) is True
        assert platform_check.x_display_answers(":6", tmp_path) is False
    assert platform_check.x_display_answers("localhost:10.0", tmp_path) is None


def test_the_real_offscreen_plugin_loads_here() -> None:
    """The suite runs offscreen, so the real loader must accept the real offscreen plugin."""
    assert problem({"QT_QPA_PLATFORM": "offscreen"}) is None


def test_the_self_test_reports_a_refusal_instead_of_aborting(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import selftest

    monkeypatch.setattr(platform_check, "problem", lambda: "The desktop needs these system packages: libegl1.")
    with pytest.raises(RuntimeError, match="libegl1"):
        selftest._check_gui()


# --- soname -> package: the script and the module agree ------------------------------------------
SONAMES = [*platform_check.PACKAGE_EXCEPTIONS, "libxcb-icccm.so.4", "libxcb-keysyms.so.1",
           "libX11.so.6", "libX11-xcb.so.1", "libxkbcommon-x11.so.0", "libdbus-1.so.3", "libGL.so.1",
           "libgcc_s.so.1", "libpcre2-8.so.0", "libxcb-render-util.so.0", "libpng16.so.16.39.0"]


def test_package_names_follow_debian() -> None:
    assert package_for("libxcb-icccm.so.4") == "libxcb-icccm4"
    assert package_for("libX11.so.6") == "libx11-6"
    assert package_for("libxkbcommon-x11.so.0") == "libxkbcommon-x11-0"
    assert package_for("libglib-2.0.so.0") == "libglib2.0-0"
    assert package_for("libpng16.so.16.39.0") == "libpng16-16"


def test_the_script_maps_sonames_like_the_module() -> None:
    out = subprocess.run(["sh", str(SCRIPT), "--packages-for", *SONAMES], capture_output=True,
                         text=True, check=True, timeout=30).stdout.split()
    assert out == [package_for(name) for name in SONAMES]


# --- scripts/qt_sysdeps.sh with fake ldd and apt --------------------------------------------------
FAKE_TOOLS = {
    "ldd": 'for s in $FAKE_LDD_MISSING; do printf "\\t%s => not found\\n" "$s"; done',
    "apt-get": 'echo "DEBIAN_FRONTEND=${DEBIAN_FRONTEND:-} $*" >> "$FAKE_APT_LOG"',
    "apt-cache": 'case $2 in *nosuch*) ;; *) echo "Package: $2" ;; esac',
    "id": "echo 0",
    "ldconfig": 'for s in $FAKE_LDCONFIG_HAS; do printf "\t%s (libc6,x86-64) => /lib/%s\n" "$s" "$s"; done',
}
REAL_TOOLS = ("dirname", "uname", "sed", "tr", "awk", "sort", "grep", "find", "head", "env", "cat")


def run_script(tmp_path: Path, *args: str, missing: str = "", apt: bool = True,
               python: str = sys.executable, has: str = ""):
    """qt_sysdeps.sh with only the tools it uses on PATH: fakes for ldd, apt and id (root)."""
    if not shutil.which("ldd"):
        pytest.skip("qt_sysdeps.sh walks the plugin with ldd, which this system lacks")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in FAKE_TOOLS.items():
        if name.startswith("apt") and not apt:
            continue
        tool = bin_dir / name
        tool.write_text(f"#!/bin/sh\n{body}\n")
        tool.chmod(0o755)
    for name in REAL_TOOLS:
        if not (bin_dir / name).exists():
            (bin_dir / name).symlink_to(shutil.which(name))
    log = tmp_path / "apt.log"
    env = {"PATH": str(bin_dir), "PY": python, "FAKE_LDD_MISSING": missing, "FAKE_LDCONFIG_HAS": has,
           "FAKE_APT_LOG": str(log), "HOME": str(tmp_path)}
    result = subprocess.run([shutil.which("sh"), str(SCRIPT), *args], capture_output=True, text=True,
                            env=env, timeout=60)
    return result, (log.read_text().splitlines() if log.exists() else [])


@pytest.mark.skipif(not LINUX, reason="the script installs nothing outside Linux")
def test_script_installs_what_ldd_says_is_missing_plus_xvfb_when_asked(tmp_path: Path) -> None:
    result, apt = run_script(tmp_path, "--with-xvfb", missing="libxcb-keysyms.so.1 libxcb-icccm.so.4")
    assert result.returncode == 0, result.stderr
    assert apt == ["DEBIAN_FRONTEND= update -qq",
                   "DEBIAN_FRONTEND=noninteractive install -y -qq --no-install-recommends "
                   "libxcb-icccm4 libxcb-keysyms1 xauth xvfb"]


@pytest.mark.skipif(not LINUX, reason="the script installs nothing outside Linux")
def test_script_before_pyside6_exists_checks_its_own_list(tmp_path: Path) -> None:
    """A fresh clone (.ci/run runs the script before the venv): the built-in list, via ldconfig."""
    result, apt = run_script(tmp_path, python=str(tmp_path / "no-python"), has="libEGL.so.1 libGL.so.1")
    assert result.returncode == 0, result.stderr
    installed = apt[-1].split()
    assert {"libxcb-icccm4", "libxcb-keysyms1", "libxcb-cursor0", "libxkbcommon-x11-0"} <= set(installed)
    assert "libegl1" not in installed and "libgl1" not in installed


@pytest.mark.skipif(not LINUX, reason="the script installs nothing outside Linux")
def test_script_is_silent_and_installs_nothing_when_nothing_is_missing(tmp_path: Path) -> None:
    result, apt = run_script(tmp_path)  # no Xvfb on this PATH, but it was not asked for
    assert (result.returncode, result.stdout, result.stderr, apt) == (0, "", "", [])


@pytest.mark.skipif(not LINUX, reason="the script installs nothing outside Linux")
def test_script_names_a_library_apt_has_no_package_for(tmp_path: Path) -> None:
    result, apt = run_script(tmp_path, missing="libnosuchthing.so.3 libxcb-icccm.so.4")
    assert "No Debian/Ubuntu package named libnosuchthing3" in result.stdout
    assert apt[-1].endswith("--no-install-recommends libxcb-icccm4")


@pytest.mark.skipif(not LINUX, reason="the script installs nothing outside Linux")
def test_script_without_apt_says_what_to_install(tmp_path: Path) -> None:
    result, apt = run_script(tmp_path, missing="libxcb-icccm.so.4", apt=False)
    assert result.returncode == 0 and apt == []
    assert "libxcb-icccm4" in result.stdout and "package manager" in result.stdout


# --- the real entry point -----------------------------------------------------------------------
@pytest.mark.skipif(not LINUX, reason="DISPLAY and WAYLAND_DISPLAY are how Linux finds a display")
@pytest.mark.parametrize("args", [("gui",), ()], ids=["camelid gui", "camelid"])
def test_no_display_is_one_sentence_not_a_core_dump(args: tuple[str, ...]) -> None:
    line = assert_one_sentence(camelid(*args, env=clean_env()))
    assert line == "camelid: No display found: use `camelid chat` in a terminal, or set DISPLAY."


@pytest.fixture
def plugin_missing_a_library(tmp_path: Path) -> tuple[Path, str]:
    """A copy of PySide6's xcb plugin whose first libxcb-* dependency names a library no system has."""
    plugins = platform_check.qt_plugins_dir()
    if plugins is None or not (plugins / "platforms" / "libqxcb.so").is_file():
        pytest.skip("this PySide6 has no xcb plugin")
    data = (plugins / "platforms" / "libqxcb.so").read_bytes()
    needed = re.search(rb"\x00(libxcb-[a-z-]+\.so\.\d+)\x00", data)
    assert needed, "the xcb plugin names no libxcb-* library"
    real = needed.group(1)
    fake = real.replace(b"libxcb-", b"libzzz-")
    platforms = tmp_path / "plugins" / "platforms"
    platforms.mkdir(parents=True)
    (platforms / "libqxcb.so").write_bytes(data.replace(b"\x00" + real + b"\x00",
                                                        b"\x00" + fake + b"\x00"))
    (tmp_path / "lib").symlink_to(plugins.parent / "lib")  # its RUNPATH: $ORIGIN/../../lib
    return platforms, fake.decode()


@pytest.mark.skipif(not LINUX, reason="the xcb plugin is Linux's")
def test_a_missing_system_library_is_one_sentence_naming_its_package(plugin_missing_a_library) -> None:
    platforms, soname = plugin_missing_a_library
    env = clean_env(QT_QPA_PLATFORM="xcb", DISPLAY=":0", QT_QPA_PLATFORM_PLUGIN_PATH=str(platforms))
    line = assert_one_sentence(camelid("gui", env=env))
    assert line.startswith("camelid: The desktop needs these system packages: ")
    assert package_for(soname) in line and "apt install" in line and "make run" in line


@pytest.fixture
def xvfb() -> Iterator[str]:
    """A real X server on a free display (Xvfb picks it: -displayfd), gone after the test."""
    if not LINUX:
        pytest.skip("Xvfb is an X11 server for Linux")
    binary = shutil.which("Xvfb")
    if binary is None:
        pytest.skip("Xvfb is not installed: `make test` installs it (scripts/qt_sysdeps.sh --with-xvfb)")
    read_end, write_end = os.pipe()
    server = subprocess.Popen([binary, "-displayfd", str(write_end), "-nolisten", "tcp",
                               "-screen", "0", "1600x1000x24"],
                              pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 30)
        number = os.read(read_end, 64).decode().strip() if ready else ""
        if not number:
            server.kill()
            pytest.fail(f"Xvfb did not start: {server.communicate(timeout=10)[1].decode()[-2000:]}")
        yield f":{number}"
    finally:
        os.close(read_end)
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if server.stderr:
            server.stderr.close()


def test_the_window_opens_on_a_real_x_server(xvfb: str, tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "hardware.png"
    env = clean_env(QT_QPA_PLATFORM="xcb", DISPLAY=xvfb)
    result = camelid("gui", "--screenshot", str(out), "--page", "hardware", env=env)
    assert result.returncode == 0, result.stderr
    assert "qt.qpa" not in result.stderr, result.stderr
    with Image.open(out) as image:
        assert image.size == SIZE
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    # Text, bars and buttons: a drawn window, not a blank or single-colour rectangle.
    assert colours is not None and len(colours) > 50
    assert max(count for count, _ in colours) < 0.9 * SIZE[0] * SIZE[1]
