"""Processes that can be killed, without a fresh interpreter each."""
from __future__ import annotations

from pathlib import Path

import torch


def forkserver():
    """multiprocessing's forkserver, its server having imported hansprobe and TransformerLens once:
    each child is a fork of it (a process of its own, killable, sharing nothing with the test's), not
    a fresh interpreter that imports them again (~9 s each on this project's CPU machine)."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["helpers", "hansprobe.cli", "hansprobe.train", "transformer_lens.model_bridge"])
    return ctx


def cli_child(argv: list[str], kill_at_write: int | None = None) -> None:
    """A forked child's work: `hansprobe ARGV` on one thread (as the in-process references), its
    output discarded, exiting with the command's code. `kill_at_write`: die by SIGKILL halfway through
    the N-th atomic file write, leaving the temporary file half written and the rename undone,
    exactly as a kill during a checkpoint write leaves it."""
    import os
    import signal
    import sys
    import tempfile

    import hansprobe.storage as storage
    from hansprobe.cli import main

    torch.set_num_threads(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    if kill_at_write is not None:
        calls, real = [0], storage.atomic_write_bytes

        def write(path, data):
            calls[0] += 1
            if calls[0] == kill_at_write:
                fd, _ = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{Path(path).name}.{storage.TMP_MARK}",
                                         suffix=".tmp")  # named as the writer names its temporaries
                os.write(fd, data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path, data)
        storage.atomic_write_bytes = write
    sys.exit(main(argv))
