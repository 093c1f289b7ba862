"""Two report.json files compared field by field: what a refactor must leave unchanged (apart from
provenance and timing), shown as a diff. `python -m hansprobe.report.compare BEFORE AFTER` prints
one line per added, removed or changed field and exits 1 when a field changed or was removed."""
from __future__ import annotations

import json
import sys
from pathlib import Path

IGNORED = ("provenance", "hansprobe")  # where and by which version it was measured, not what was measured


def differences(before, after, path: str = "", ignore=IGNORED) -> list[tuple[str, str, object, object]]:
    """(kind, path, before, after) for every field "added", "removed" or "changed"; lists compare
    item by item when their lengths agree (checkpoints, rows), else as one value."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for k in sorted(set(before) | set(after)):
            if k in ignore:
                continue
            p = f"{path}/{k}"
            if k not in before:
                out.append(("added", p, None, after[k]))
            elif k not in after:
                out.append(("removed", p, before[k], None))
            else:
                out += differences(before[k], after[k], p, ignore)
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [d for i, (u, v) in enumerate(zip(before, after)) for d in differences(u, v, f"{path}[{i}]", ignore)]
    return [] if before == after else [("changed", path, before, after)]


def _short(v) -> str:
    s = json.dumps(v, sort_keys=True)
    return s if len(s) <= 100 else s[:97] + "..."


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m hansprobe.report.compare BEFORE/report.json AFTER/report.json", file=sys.stderr)
        return 2
    before, after = (json.loads(Path(a).read_text()) for a in args)
    diffs = differences(before, after)
    for kind, path, u, v in diffs:
        print(f"{kind:8s} {path}: " + (_short(v) if kind == "added" else _short(u) if kind == "removed"
                                       else f"{_short(u)} -> {_short(v)}"))
    print(f"{len(diffs)} difference(s): " + ", ".join(f"{sum(d[0] == k for d in diffs)} {k}" for k in ("added", "removed", "changed")))
    return 1 if any(d[0] != "added" for d in diffs) else 0


if __name__ == "__main__":
    sys.exit(main())
