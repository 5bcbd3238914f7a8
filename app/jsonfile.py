"""Reading small JSON files that a person may have edited by hand, within bounds.

Python's `json` reads any size and nests until RecursionError. A settings file
is a few hundred bytes, so a larger or deeper one is damage, said in a
sentence (`JSONFileError`) rather than a stalled or crashed command. Kept
below `app.core` because `paths` reads the settings file too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

#: Far above any settings file Camelid writes (about 1 KB).
MAX_BYTES = 1 << 20
#: Objects and arrays inside one another; Camelid's own files use 2.
MAX_DEPTH = 32

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


class JSONFileError(ValueError):
    """A JSON file that cannot be used; `reason` says why, in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in `text` (brackets inside strings do not count)."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        if match.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def load_json(path: Path, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The parsed file. Raises OSError when it cannot be read (FileNotFoundError when absent),
    JSONFileError when it is too large, too deep, not UTF-8 or not JSON."""
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise JSONFileError(f"it is larger than {max_bytes // 1024} KiB")
    try:
        text = raw.decode("utf-8-sig")  # tolerate the byte-order mark some Windows editors add
    except UnicodeDecodeError:
        raise JSONFileError("it is not UTF-8 text") from None
    if nesting_depth(text) > max_depth:
        raise JSONFileError(f"it nests more than {max_depth} levels deep")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JSONFileError(f"it is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise JSONFileError(f"it is not usable JSON ({str(exc)[:120]})") from None
