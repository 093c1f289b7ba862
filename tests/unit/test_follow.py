"""The counterfactual-prefix follow rate (hansprobe/mechanics/follow.py) on hand-made models whose rule is
known: one that reads each answer token off the previous one through the edge list (the shortcut:
it follows every swap) and one that answers the true path whatever the prefix (it follows none)."""
import pytest
import torch

from hansprobe.mechanics.follow import measure_follow
from hansprobe.errors import ConfigError
from hansprobe.objectives import get_objective
from hansprobe.tasks import PathStar

from helpers import OracleModel


class LookupModel(torch.nn.Module):
    """At every position, the successor of the input token through the prompt's edges (child, or
    parent under `reverse`); uniform where the token has none."""

    def __init__(self, task, reverse=False):
        super().__init__()
        self.task, self.reverse = task, reverse
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, tokens):
        b, t = tokens.shape
        e, n, v = self.task.n_edges, self.task.n_nodes, self.task.d_vocab
        parent, child = tokens[:, 0:3 * e:3], tokens[:, 1:3 * e:3]
        src, dst = (child, parent) if self.reverse else (parent, child)
        succ = torch.full((b, v), -1).scatter_(1, src, dst)  # (B, V): successor of each node, -1 none
        nxt = succ.gather(1, tokens.clamp(max=v - 1))  # (B, T)
        out = torch.zeros(b, t, v)
        has = nxt >= 0
        out[has] = torch.nn.functional.one_hot(nxt[has], v).float() * 50.0
        return out.log_softmax(-1)


@pytest.mark.parametrize("objective", ["teacher-forcing", "reverse"])
def test_a_model_that_reads_the_previous_token_follows_every_swap(objective):
    task, obj = PathStar(2, 5, 30), get_objective(objective)
    b = task.generate(200, 0)
    r = measure_follow(LookupModel(task, reverse=obj.reverse), obj, b, seed=0)
    assert r.label_indices == [2, 3, 4]
    assert r.follow_rate == 1.0 and r.follow_rate_ci[0] > 0.95 and r.follow_rate_last == 1.0
    assert r.unchanged_accuracy == [1.0, 1.0, 1.0]  # without a swap it answers the path
    # the control swaps in a node with no successor: nothing to follow, so (almost) never the true r_i
    # (its uniform output's argmax is token 0, which is r_i on a few graphs)
    assert all(c["true_next"] < 0.15 for c in r.control.values())


def test_a_model_that_ignores_the_prefix_follows_no_swap():
    task, obj = PathStar(2, 5, 30), get_objective("teacher-forcing")
    b = task.generate(200, 1)
    answers = torch.cat([b.prefix, obj.labels(b)], 1)[:, 1:]  # the true next token at every position
    r = measure_follow(OracleModel(answers, task.d_vocab, prefixes=b.prefix), obj, b, seed=0)
    assert r.follow_rate == 0.0 and r.follow_rate_ci[1] < 0.05
    assert all(c["true_next"] == 1.0 for c in r.control.values())  # it still answers the true r_i
    assert "follow_rate" in r.figures()


def test_the_follow_rate_needs_a_previous_answer_token_and_another_arm():
    task = PathStar(2, 5, 30)
    with pytest.raises(ConfigError, match="teacher-forced inputs"):
        measure_follow(LookupModel(task), get_objective("teacherless"), task.generate(4, 0))
    one_arm = PathStar(1, 5, 30)
    with pytest.raises(ConfigError, match="degree >= 2"):
        measure_follow(LookupModel(one_arm), get_objective("teacher-forcing"), one_arm.generate(4, 0))


def test_the_fused_swaps_give_the_hooked_models_predictions():
    """Through the fused forward the swaps run position p+i-1 alone on the earlier positions' keys
    and values; with a (no-op) hook on the model every swap is a whole pass of the bridge: the same result."""
    from helpers import tiny_model

    task, obj = PathStar(3, 5, 30), get_objective("teacher-forcing")
    model = tiny_model(task, seed=2).eval()
    b = task.generate(120, 1)
    fused = measure_follow(model, obj, b, seed=3, batch_size=50)
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: x)]):
        hooked = measure_follow(model, obj, b, seed=3, batch_size=50)
    assert fused.to_dict() == hooked.to_dict()
