"""Type and range checks for values that come from files or users (config.json, resume state,
imported configs), so a damaged or hand-edited value is one line naming the field, never a
traceback from deep inside torch. Depends on nothing else in hansprobe but errors."""
from __future__ import annotations

import math

from hansprobe.errors import ConfigError

SEED_MAX = 2**63 - 1  # numpy's SeedSequence and torch.manual_seed both take 0..2^63-1


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_int(name: str, v, lo: int | None = None, hi: int | None = None, error=ConfigError) -> int:
    """`v` must be an integer (not a bool, not 2.0, not "2") in [lo, hi]."""
    if not _is_int(v):
        raise error(f"{name} must be an integer, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"at least {lo}" if hi is None else f"in {lo}..{hi}" if lo is not None else f"at most {hi}"
        raise error(f"{name} must be {rng}, got {v}")
    return v


def check_float(name: str, v, lo: float | None = None, hi: float | None = None, error=ConfigError) -> float:
    """`v` must be a finite number (ints allowed, bools not) in [lo, hi]."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise error(f"{name} must be a finite number, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise error(f"{name} must be in [{lo}, {hi}], got {v}")
    return v


def check_choice(name: str, v, choices, error=ConfigError):
    if not isinstance(v, (str, type(None))) or v not in choices:
        shown = ", ".join("none" if c is None else str(c) for c in choices)
        raise error(f"{name} must be one of {shown}; got {v!r}")
    return v


def check_bool(name: str, v, error=ConfigError) -> bool:
    if not isinstance(v, bool):
        raise error(f"{name} must be true or false, got {v!r}")
    return v


def check_seed(name: str, v, error=ConfigError) -> int:
    return check_int(name, v, 0, SEED_MAX, error)


def check_mapping(name: str, v, error=ConfigError) -> dict:
    if not isinstance(v, dict):
        raise error(f"{name} must be a JSON object, got {type(v).__name__} {str(v)[:40]!r}")
    return v


MAX_SMALL_FILE = 16 << 20  # config files and sweep specs: far above any real one, and bounded


def read_text_bounded(path, what: str, max_bytes: int = MAX_SMALL_FILE, error=ConfigError) -> str:
    """The UTF-8 text of a small input file, read at most `max_bytes` (+1) bytes, so that a device or
    FIFO that never ends (/dev/zero) is refused instead of filling memory. OSError and decoding
    errors become one-line `error`s that name the file."""
    from pathlib import Path

    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror}") from None
    if len(data) > max_bytes:
        raise error(f"{what} {path} is larger than {max_bytes} bytes; give the file itself, not a device or a stream")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} {path}: byte 0x{data[e.start]:02x} at offset {e.start} is not UTF-8 text") from None


def read_json_bounded(path, what: str, max_bytes: int = MAX_SMALL_FILE, error=ConfigError, hint: str = ""):
    """A small JSON file, read bounded (read_text_bounded); invalid JSON, nesting deeper than the
    parser's stack and integers longer than Python converts are one-line `error`s naming the file."""
    import json

    text = read_text_bounded(path, what, max_bytes, error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON ({e}){hint}") from None
    except RecursionError:
        raise error(f"{path} nests deeper than a {what} can{hint}") from None
    except ValueError as e:  # e.g. an integer of thousands of digits
        raise error(f"{path} holds a value no {what} has ({str(e).split(';')[0]}){hint}") from None


def number_ranges(ids: list[int], dash: str = "-") -> str:
    """[0, 1, 2, 5] -> "0-2, 5": sorted integers as runs, for messages that name many of them."""
    out, i = [], 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else f"{ids[i]}{dash}{ids[j]}")
        i = j + 1
    return ", ".join(out)
