"""Check that a llama.cpp library folder runs on any x86-64 CPU, whatever machine built it.

A portable build (scripts/llama_build.py) holds:

- the core libraries (libggml-base, libggml, libllama, libmtmd, libggml-rpc), which
  every CPU executes, so they may use only baseline x86-64 instructions (SSE2);
- one CPU library per instruction level (libggml-cpu-x64 ... -sapphirerapids), of
  which llama.cpp loads only the best one this CPU supports. Each may use only the
  instructions its level names: the haswell one (what an AVX2-only laptop loads)
  no AVX-512, the x64 one (the fallback for every CPU) nothing past SSE2.

The check disassembles each library with objdump and looks for instructions above
its level. `make dist` runs it on the bundle (installers/linux/build.sh) and the
test suite on the installed build (tests/test_portable_build.py).

Usage: python installers/check_portable.py DIR   (exit 1 and a sentence per problem)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

CORE = ("ggml-base", "ggml", "llama", "mtmd", "ggml-rpc")

# Instruction families by the level that introduced them, as objdump (AT&T) names them.
_SSE3_PLUS = re.compile(
    r"^(pshufb|phadd|phsub|pmaddubsw|pmulhrsw|psign|pabs|palignr"  # SSSE3
    r"|pblend|blendv?p|dpp[sd]|pmins[bd]|pmaxs[bd]|pminu[wd]|pmaxu[wd]|pmulld|pmuldq|ptest|pextr[bdq]"
    r"|pinsr[bdq]|pmov[sz]x|round[ps][sd]|packusdw|pcmpeqq|insertps|extractps|mpsadbw|phminposuw"  # SSE4.1
    r"|pcmp[ei]str[im]|pcmpgtq"  # SSE4.2
    r"|haddp|hsubp|addsubp|movddup|movs[hl]dup|lddqu)"  # SSE3
    # Whole mnemonics (andnps is SSE, andn is BMI1): SSE4.2, ABM, BMI1/2, MOVBE.
    r"|^(crc32|popcnt|lzcnt|movbe|andn|blsr|blsi|blsmsk|bextr|bzhi|pdep|pext|shlx|sarx|shrx|rorx|mulx)[bwlq]?$")
_VEX = re.compile(r"^v(?!er[rw]|m(call|launch|resume|xoff|xon|ptr|read|write|clear|func|run|load|save|mcall))")
_AVX512 = re.compile(r"%zmm|%k[0-7]\b|\{%k[0-7]\}")
_AVX512_MNEMONIC = re.compile(r"^(k[a-z]+[bwdq]|vpternlog|vperm[it]2|vpcompress|vpexpand|vpconflict"
                              r"|vplzcnt|vpmov[a-z]*[bwdq]2m|vfixupimm|vrange|vreduce|vgetexp|vscalef)")

#: Instructions a core library may hold because it runs them only after asking CPUID.
RUNTIME_CHECKED = {
    # miniaudio's FLAC decoder (mtmd's audio input) sets ma_dr_flac__gIsLZCNTSupported from
    # CPUID leaf 0x80000001 and falls back to a portable count-leading-zeros without it.
    ("mtmd", "lzcnt"),
}

#: For each CPU variant, the families its code must not contain.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "x64": ("vex", "sse3+"),
    "sse42": ("vex",),
    "sandybridge": ("avx512",),
    "ivybridge": ("avx512",),
    "piledriver": ("avx512",),
    "haswell": ("avx512",),
    "alderlake": ("avx512",),
}


def families(line: str) -> set[str]:
    """The instruction families one line of `objdump -d` output uses."""
    parts = line.split("\t")  # "  addr:\tmnemonic operands" (raw bytes not shown)
    if len(parts) < 2 or not parts[0].rstrip().endswith(":"):
        return set()
    text = parts[-1].strip()
    mnemonic = text.split(None, 1)[0] if text else ""
    found = set()
    if _VEX.match(mnemonic) or text.startswith("{vex}"):
        found.add("vex")
    if _SSE3_PLUS.match(mnemonic):
        found.add("sse3+")
    if _AVX512.search(text) or _AVX512_MNEMONIC.match(mnemonic):
        found.add("avx512")
    return found


def scan(path: Path, *, allowed: set[str] | None = None) -> dict[str, str]:
    """Family -> the first instruction of it in the library's code (mnemonics in `allowed` skipped)."""
    objdump = shutil.which("objdump")
    if objdump is None:
        raise RuntimeError("objdump is missing: install binutils.")
    out = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(path)], capture_output=True,
                         text=True, check=True, timeout=300).stdout
    first: dict[str, str] = {}
    for line in out.splitlines():
        for family in families(line):
            instruction = line.split("\t")[-1].strip()
            if allowed and instruction.split(None, 1)[0] in allowed:
                continue
            first.setdefault(family, instruction)
    return first


def library(folder: Path, stem: str) -> Path | None:
    for name in (f"lib{stem}.so", f"{stem}.so"):
        if (folder / name).is_file():
            return folder / name
    return None


def problems(folder: Path) -> list[str]:
    """Sentences for every library in the folder that needs more than its level allows."""
    found: list[str] = []
    variants = sorted(p for p in folder.glob("libggml-cpu-*.so"))
    if not variants:
        return [f"{folder} holds no CPU variants (libggml-cpu-*.so): this is not a portable build; "
                "rebuild with scripts/llama_build.py --build portable."]
    for stem in CORE:
        path = library(folder, stem)
        if path is None:
            continue
        used = scan(path, allowed={m for lib, m in RUNTIME_CHECKED if lib == stem})
        for family in ("vex", "sse3+", "avx512"):
            if family in used:
                found.append(f"{path.name} uses {family} instructions ({used[family]}), which a baseline "
                             "x86-64 CPU lacks: it must be built with GGML_NATIVE=OFF.")
    for path in variants:
        name = path.name.removeprefix("libggml-cpu-").removesuffix(".so")
        used = scan(path)
        for family in FORBIDDEN.get(name, ()):
            if family in used:
                found.append(f"the {name} CPU variant uses {family} instructions ({used[family]}) that "
                             f"the CPUs it is chosen for lack.")
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1])
        return 2
    folder = Path(argv[0])
    found = problems(folder)
    for sentence in found:
        print(f"not portable: {sentence}", file=sys.stderr)
    if not found:
        count = len(list(folder.glob("libggml-cpu-*.so")))
        print(f"portable: core libraries use baseline x86-64 only; {count} CPU variants within their levels")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
