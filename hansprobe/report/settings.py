"""What the report measures on (`hansprobe report` builds its options from these fields). Kept apart
from the measuring code (report/run.py) so that the command line reads the defaults without importing
the analyses."""
from __future__ import annotations

from dataclasses import dataclass

from hansprobe.errors import ConfigError
from hansprobe.options import ANALYSIS_SEED, option


MIN_GRAPHS = 10  # the fewest graphs the report measures on, generated (-n) or read (--data) alike


@dataclass
class ReportSettings:
    """What the report measures on. Every checkpoint gets fresh graphs of its own task from `seed`
    (or the graphs of `data`, an NTF file that must fit every checkpoint's task)."""

    n_graphs: int = 2000  # behaviour and entropy (the model cards' sample: same graphs for the same seed)
    mechanism_graphs: int = option("graphs for heads, plan depth and dynamics: the first of the -n graphs",
                                   "positive", 1000)
    patch_pairs: int = option("goal-swap pairs for activation patching: the first of the -n graphs", "positive", 200)
    seed: int = ANALYSIS_SEED
    data: str | None = None
    batch_size: int = 1000
    device: str = "cpu"
    witness: str | None = option("a capacity witness: a checkpoint of the same task and model shape that decides "
                                 "forwards (another objective or prompt layout); the failure verdict then says whether "
                                 "capacity and training length are ruled out (hansprobe/measurements/witness.py)", "text", None,
                                 metavar="CKPT")
    # 1 (the default) measures them one after another in this process: on 2 cores two one-thread
    # processes measured no faster than one two-thread one (docs/decisions.md 44).
    jobs: int = option("checkpoints measured at once, each in its own process with a share of the CPU threads "
                       "(1: one after another in this process; 0: one per CPU thread torch may use, at most one per "
                       "checkpoint, 1 on a GPU)", "count", 1)

    def __post_init__(self):
        if self.n_graphs < MIN_GRAPHS or self.mechanism_graphs < MIN_GRAPHS or self.patch_pairs < 2:
            raise ConfigError("the report needs at least 10 graphs (-n, --mechanism-graphs) and 2 patching pairs (--patch-pairs)")
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 0:
            raise ConfigError(f"--jobs must be a whole number >= 0 (0: as many as the cores allow), got {self.jobs!r}")

    def workers(self, n_checkpoints: int) -> int:
        """How many checkpoints to measure at once: `jobs`, or (0) one per CPU thread torch may use
        (the cores, or OMP_NUM_THREADS where set), at most one per checkpoint; 1 on a GPU."""
        import torch

        if self.jobs:
            return max(1, min(self.jobs, n_checkpoints))
        if not str(self.device).startswith("cpu"):
            return 1
        return max(1, min(n_checkpoints, torch.get_num_threads()))
