"""Can Qt open a window here? Asked before the QApplication exists.

When no Qt platform plugin can start, Qt aborts the process (exit 134, a core
dump) with a misleading hint ("xcb-cursor0 is needed"). This module asks the
same question first and answers in one sentence: no display, or the system
packages the plugin's missing libraries come from. It imports no Qt module:
it finds PySide6's folder with importlib and dlopens the plugin file, the
same way Qt would, so the verdict is the dynamic loader's own.

`problem()` is the whole check; its inputs (environment, OS, plugin folder,
loader) can be replaced, so tests feed it fake ones. `gate()` prints the
sentence and returns the exit code for the command-line front door.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

#: Exit code when the desktop cannot start (the CLI's code for a user-facing error).
EXIT_CODE = 2

#: Platforms that draw without a display server.
HEADLESS = frozenset({"offscreen", "minimal", "minimalegl", "vnc", "linuxfb", "eglfs",
                      "vkkhrdisplay"})

#: Sonames whose Debian/Ubuntu package does not follow the soname rule
#: (libfoo.so.N -> libfooN). scripts/qt_sysdeps.sh has the same table; a test
#: checks they agree.
PACKAGE_EXCEPTIONS = {
    "libz.so.1": "zlib1g",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libgobject-2.0.so.0": "libglib2.0-0",
    "libgio-2.0.so.0": "libglib2.0-0",
    "libgmodule-2.0.so.0": "libglib2.0-0",
    "libGLdispatch.so.0": "libglvnd0",
    "libbrotlidec.so.1": "libbrotli1",
    "libbrotlicommon.so.1": "libbrotli1",
    "libharfbuzz.so.0": "libharfbuzz0b",
    "libc.so.6": "libc6",
    "libm.so.6": "libc6",
    "libdl.so.2": "libc6",
    "libpthread.so.0": "libc6",
    "librt.so.1": "libc6",
}

_MISSING = re.compile(r"([^\s:/]+\.so[.\d]*): cannot open shared object file")
_LOCAL_X_DISPLAY = re.compile(r"(?:unix)?:(\d+)(?:\.\d+)?")

Loader = Callable[[Path], None]


def package_for(soname: str) -> str:
    """The Debian/Ubuntu package that ships `soname` (libxcb-icccm.so.4 -> libxcb-icccm4)."""
    if soname in PACKAGE_EXCEPTIONS:
        return PACKAGE_EXCEPTIONS[soname]
    match = re.fullmatch(r"lib(.+)\.so\.(\d+)(?:\.[\d.]*)?", soname)
    if not match:
        return soname
    name, major = match.group(1).lower().replace("_", "-"), match.group(2)
    # Debian policy: a hyphen between a name that ends in a digit and the version.
    return f"lib{name}{'-' if name[-1].isdigit() else ''}{major}"


def missing_from_error(text: str) -> str | None:
    """The soname a dlopen error says is missing, if that is what it says."""
    match = _MISSING.search(text)
    return match.group(1) if match else None


def requested_platforms(env: Mapping[str, str]) -> list[str]:
    """The platform plugins Qt will try, in order (the same rule as QGuiApplication)."""
    chosen = env.get("QT_QPA_PLATFORM", "").strip()
    if chosen:
        # "wayland;xcb" tries both; "vnc:size=800x600" passes options.
        return [part.split(":", 1)[0].strip() for part in chosen.split(";") if part.strip()]
    if env.get("XDG_SESSION_TYPE") == "wayland":
        return ["wayland", "xcb"]
    return ["xcb"]


def qt_plugins_dir() -> Path | None:
    """PySide6's Qt plugin folder, found without importing any Qt module."""
    try:
        spec = importlib.util.find_spec("PySide6")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    for candidate in (root / "Qt" / "plugins", root / "plugins"):
        if candidate.is_dir():
            return candidate
    return None


def plugin_file(platforms_dir: Path, name: str) -> Path | None:
    """The plugin file that provides platform `name` on Linux, if it is there."""
    direct = platforms_dir / f"libq{name}.so"
    if direct.is_file():
        return direct
    if name.startswith("wayland"):  # wayland, wayland-egl, wayland-brcm: one plugin
        shared = platforms_dir / "libqwayland.so"
        if shared.is_file():
            return shared
    return None


def dlopen(path: Path) -> None:
    """Load `path` the way Qt loads a plugin (lazy symbols); OSError names what is missing."""
    ctypes.CDLL(str(path), mode=os.RTLD_LAZY | os.RTLD_LOCAL)


def ldd_missing(path: Path) -> list[str]:
    """Every soname `path` needs, directly or not, that the loader cannot find (empty without ldd)."""
    ldd = shutil.which("ldd")
    if not ldd:
        return []
    try:
        out = subprocess.run([ldd, str(path)], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split()[0] for line in out.splitlines() if "=> not found" in line]


def x_display_answers(display: str, socket_dir: Path = Path("/tmp/.X11-unix")) -> bool | None:
    """Whether an X server listens at a local DISPLAY (":0", "unix:1.0"); None: cannot tell."""
    match = _LOCAL_X_DISPLAY.fullmatch(display.strip())
    if not match:
        return None  # host:N (SSH forwarding, remote servers): let Qt try
    path = str(socket_dir / f"X{match.group(1)}")
    for address in (path, "\0" + path):  # the socket file, then Linux's abstract socket
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2)
            try:
                probe.connect(address)
            except OSError:
                continue
            return True
    return False


def in_checkout() -> bool:
    """True when running from a source checkout, where `make run` exists."""
    return not getattr(sys, "frozen", False) and (Path(__file__).resolve().parents[2] / "Makefile").is_file()


def packages_sentence(sonames: Iterable[str], *, apt: bool, checkout: bool, root: bool) -> str:
    """One sentence naming what to install for the missing `sonames`."""
    sonames = list(dict.fromkeys(sonames))
    packages = " ".join(dict.fromkeys(package_for(name) for name in sonames))
    if apt:
        command = f"{'' if root else 'sudo '}apt install {packages}"
        make = ", or run `make run`, which installs them" if checkout else ""
        return f"The desktop needs these system packages: {packages} (install them with `{command}`{make})."
    return (f"The desktop needs these system libraries, which are missing: {' '.join(sonames)} "
            f"(install the packages that provide them; on Debian/Ubuntu they are {packages}).")


def problem(env: Mapping[str, str] | None = None, *, system: str | None = None,
            plugins_dir: Path | None = None, load: Loader = dlopen,
            list_missing: Callable[[Path], list[str]] = ldd_missing,
            display_answers: Callable[[str], bool | None] = x_display_answers,
            apt: bool | None = None, checkout: bool | None = None,
            root: bool | None = None) -> str | None:
    """One sentence saying why Qt cannot open a window here, or None when it can.

    Linux: Qt tries the platforms of `requested_platforms` in order; this
    returns None as soon as one of them has what it needs (a display, or
    none needed, and a plugin the loader can open). macOS and Windows ship
    everything inside PySide6, so there it only notices a missing plugin.
    """
    env = os.environ if env is None else env
    system = sys.platform if system is None else system
    override = env.get("QT_QPA_PLATFORM_PLUGIN_PATH")
    platforms: Path | None
    if override:
        platforms = Path(override)
    else:
        plugins = plugins_dir if plugins_dir is not None else qt_plugins_dir()
        platforms = plugins / "platforms" if plugins is not None else None
    if not system.startswith("linux"):
        return _other_os_problem(env, system, platforms)

    missing: list[str] = []
    broken: list[str] = []
    no_display = dead_display = ""
    unknown: list[str] = []
    if platforms is not None and not platforms.is_dir():
        platforms = None
    for name in requested_platforms(env):
        path = plugin_file(platforms, name) if platforms is not None else None
        if platforms is not None and path is None:
            if env.get("QT_PLUGIN_PATH"):
                return None  # it may live in a folder of QT_PLUGIN_PATH: let Qt look
            unknown.append(name)
            continue
        if name not in HEADLESS and not _has_display(name, env):
            no_display = no_display or ("WAYLAND_DISPLAY" if name.startswith("wayland") else "DISPLAY")
            continue
        if path is None:
            return None  # no plugin folder to look in (an unusual layout): let Qt try
        try:
            load(path)
        except OSError as exc:
            first = missing_from_error(str(exc))
            if first is None:
                broken.append(f"Qt's {name} platform plugin does not load ({exc})")
                continue
            missing.extend([first, *(s for s in list_missing(path) if s != first)])
            continue
        if name == "xcb" and display_answers(env["DISPLAY"]) is False:
            dead_display = env["DISPLAY"]
            continue
        return None

    if missing:
        return packages_sentence(
            missing,
            apt=shutil.which("apt-get") is not None if apt is None else apt,
            checkout=in_checkout() if checkout is None else checkout,
            root=(hasattr(os, "geteuid") and os.geteuid() == 0) if root is None else root)
    if broken:
        return f"The desktop cannot start: {broken[0]}."
    if dead_display:
        return (f"No display found: nothing answers at DISPLAY={dead_display}; use `camelid chat` "
                "in a terminal, or set DISPLAY to a running desktop.")
    if no_display:
        return f"No display found: use `camelid chat` in a terminal, or set {no_display}."
    if unknown:
        have = ", ".join(sorted(_platform_names(platforms))) if platforms else "none"
        return (f"QT_QPA_PLATFORM={env.get('QT_QPA_PLATFORM', '')} names no Qt platform plugin "
                f"here (there are: {have}): unset it, or pick one of those.")
    return None


def _has_display(name: str, env: Mapping[str, str]) -> bool:
    if name.startswith("wayland"):
        # Qt's wayland client falls back to the "wayland-0" socket when WAYLAND_DISPLAY is unset.
        runtime = env.get("XDG_RUNTIME_DIR")
        return bool(env.get("WAYLAND_DISPLAY")) or bool(runtime and Path(runtime, "wayland-0").exists())
    return bool(env.get("DISPLAY"))


def _platform_names(platforms: Path) -> set[str]:
    return {p.name[4:].split(".")[0] for p in platforms.glob("libq*.so*")}


def _other_os_problem(env: Mapping[str, str], system: str, platforms: Path | None) -> str | None:
    if env.get("QT_QPA_PLATFORM") or platforms is None or not platforms.is_dir():
        return None
    expected = {"darwin": "libqcocoa.dylib", "win32": "qwindows.dll"}.get(system)
    if expected and not (platforms / expected).is_file():
        return (f"The desktop cannot start: Qt's platform plugin {expected} is missing from "
                f"{platforms}; reinstall Camelid.")
    return None


def gate() -> int | None:
    """None when a window can open; otherwise print the sentence to stderr and return the exit code."""
    sentence = problem()
    if sentence is None:
        return None
    print(f"camelid: {sentence}", file=sys.stderr)
    return EXIT_CODE
