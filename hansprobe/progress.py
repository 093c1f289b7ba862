"""Progress for long work, one implementation for training, analyses and the report: a tqdm bar at
a terminal, one plain flushed line per step on stderr otherwise (nohup, CI, Slurm logs: a command
silent for minutes looks hung), nothing when quiet (`--json`, `--quiet`). Depends on nothing else in
hansprobe."""
from __future__ import annotations

import sys
import time


# Inside a report's analysis ("heartbeat" progress): a line at most this often, so that an analysis
# of a large model (half an hour at 124M parameters on a CPU) is not silent, and a short one adds none.
HEARTBEAT_S = 60.0


class LineProgress:
    """tqdm's `update` / `set_postfix_str` / `close`, as one line on stderr per update:
    `DESC: DONE/TOTAL WHAT (E s elapsed, ~R s left)`, WHAT the postfix + " done" where one is set,
    else the unit counted. `every` > 0: an update prints only once `every` seconds have passed since
    the start or the last line (a heartbeat)."""

    def __init__(self, total: int, desc: str, unit: str = "step", every: float = 0.0):
        self.total, self.desc, self.unit, self.done, self.text = total, desc, unit, 0, ""
        self.t0 = self.last = time.perf_counter()
        self.every = every

    def set_postfix_str(self, text: str) -> None:
        self.text = text

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if self.every and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.t0
        left = elapsed / self.done * (self.total - self.done)
        what = f"{self.text} done" if self.text else self.unit + ("es" if self.unit.endswith("ch") else "s")
        print(f"{self.desc}: {self.done}/{self.total} {what} ({elapsed:.0f} s elapsed, ~{left:.0f} s left)",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


# True when hansprobe runs as the process itself (the console script, python -m), set by the CLI: a
# Ctrl-C may then end the process at once (decisions.md 68); called in-process (a notebook) it never does.
PROCESS_ENTRY = False
INTERRUPTED = "hansprobe: interrupted"  # the one line a Ctrl-C leaves


def leave(code: int) -> None:
    """End the process now, streams flushed, without the interpreter's exit joins (decisions.md 68)."""
    import os
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def progress_bar(total: int, desc: str, progress: bool | str | None, unit: str = "step", initial: int = 0,
                 leave: bool = False):
    """True: a tqdm bar (kept on screen when done with `leave`); "lines": a LineProgress; "heartbeat":
    a LineProgress that prints at most every HEARTBEAT_S seconds; None: a bar when stderr is a
    terminal; False: a disabled bar (the same calls, no output)."""
    if progress in ("lines", "heartbeat"):
        return LineProgress(total, desc, unit, every=HEARTBEAT_S if progress == "heartbeat" else 0.0)
    from tqdm.auto import tqdm

    enabled = sys.stderr.isatty() if progress is None else bool(progress)
    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit=unit, dynamic_ncols=True,
                leave=leave)


def progress_iter(items, total: int, desc: str, progress: bool | str = False, unit: str = "batch"):
    """`items` with progress_bar(progress) advanced once per item; `items` itself when not asked."""
    if not progress:
        return items

    def advancing():
        bar = progress_bar(total, desc, progress, unit)
        try:
            for item in items:
                yield item
                bar.update(1)
        finally:
            bar.close()
    return advancing()
