import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))  # `from helpers import ...`

# The test models are tiny: one thread is as fast as two, and it keeps the suite's speed steady
# on a shared 2-core machine (oversubscribed intra-op threads slowed it several-fold in a trial).
torch.set_num_threads(1)
