"""Counterfactual-prefix follow rate: swap r_{i-1} in the teacher-forced input for a node w of
another arm and count how often the model answers w's successor (child under forward targets,
parent under reversed ones) — what the shortcut q(r_i | r_{i-1}) predicts. The last label index is
reported apart: the goal sits in the prompt and can be copied there instead. A control swaps in a
node with no successor (a leaf; the start for reversed targets) to show what the model does when
there is no edge to follow."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hansprobe.mechanics.results import Result, wilson_ci
from hansprobe.errors import ConfigError
from hansprobe.objectives import Objective, successor_indices
from hansprobe.tasks.base import Batch
from hansprobe.tasks.base import other_arm

FOLLOW_MAJORITY = 0.5  # a follow-rate CI above this: most graphs follow the swap (the lookup); below: most do not


@dataclass
class FollowResult(Result):
    objective: str
    n_graphs: int
    label_indices: list[int]  # 2 .. l-1
    follow_rate_by_position: dict  # "i" -> {"rate", "ci"}
    follow_rate: float  # over label indices 2 .. l-2 (just l-1 when l = 3)
    follow_rate_ci: tuple[float, float]  # Wilson, with the graph as the unit
    follow_rate_last: float  # label index l-1, apart
    follow_rate_last_ci: tuple[float, float]
    unchanged_accuracy: list[float]  # accuracy at each index without any swap
    control: dict = field(default_factory=dict)  # per index: share still answering the true r_i, the goal, a node

    def figures(self) -> dict:
        import plotly.graph_objects as go

        xs = [f"r{i}" for i in self.label_indices]
        rates = [self.follow_rate_by_position[str(i)]["rate"] for i in self.label_indices]
        cis = [self.follow_rate_by_position[str(i)]["ci"] for i in self.label_indices]
        fig = go.Figure(go.Bar(x=xs, y=rates, name="follows the swapped-in node's successor", error_y=dict(
            type="data", symmetric=False, array=[c[1] - r for r, c in zip(rates, cis)],
            arrayminus=[r - c[0] for r, c in zip(rates, cis)])))
        fig.add_bar(x=xs, y=[self.control[str(i)]["true_next"] for i in self.label_indices],
                    name="control (no successor): still answers the true r_i")
        fig.update_layout(barmode="group", yaxis_range=[0, 1.05], yaxis_title="share of graphs",
                          xaxis_title="label index (last: the goal can be copied from the prompt)",
                          title=f"Counterfactual-prefix follow rate ({self.objective}, {self.n_graphs} graphs, 95% CI)")
        return {"follow_rate": fig}


def swap_node(objective: Objective, batch: Batch, arm: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For label index i >= 2: the node w at r_(i-1)'s depth on `arm` (B, L-1) and w's successor in
    the objective's order (child for forward targets, parent for reversed ones)."""
    length = batch.target.shape[1]
    depth = (i - 1) if not objective.reverse else (length - i)  # depth of r_{i-1} on its arm
    if not objective.reverse:
        return arm[:, depth - 1], arm[:, depth]
    return arm[:, depth - 1], (arm[:, depth - 2] if depth >= 2 else batch.start)


@torch.no_grad()
def _predict_swapped(model, inputs: torch.Tensor, swaps: dict[int, list[torch.Tensor]],
                     batch_size: int) -> dict[int, list[torch.Tensor]]:
    """Greedy prediction at position s with the token there set to each of `swaps[s]` (B,) in turn,
    the earlier tokens those of `inputs`: {s: [(B,) per token]}. A causal model reads nothing after
    s, and nothing before s changes: through the fused forward the earlier positions' keys and values
    are computed once per chunk and each prediction runs position s alone (`FusedGPT.extend`); with
    something hooked on the model, a whole pass per token."""
    from hansprobe.fused import FusedGPT, inference_view, logits_at
    from hansprobe.objectives import autocast

    device = next(model.parameters()).device
    net = inference_view(model)
    out = {s: [[] for _ in tokens] for s, tokens in swaps.items()}
    for start in range(0, len(inputs), batch_size):
        rows = slice(start, start + batch_size)
        x = inputs[rows, :max(swaps)].to(device)
        with autocast(device):
            kv = net.keys_values(x) if isinstance(net, FusedGPT) else None
            for s, tokens in swaps.items():
                for j, t in enumerate(tokens):
                    if kv is not None:
                        logits = net.extend(kv, t[rows, None].to(device), start=s)[:, 0]
                    else:
                        y = torch.cat((x[:, :s], t[rows, None].to(device)), 1)
                        logits = logits_at(model, y, slice(s, s + 1))[:, 0]  # (b, V)
                    out[s][j].append(logits.argmax(-1).cpu())
    return {s: [torch.cat(c) for c in cols] for s, cols in out.items()}


def measure_follow(model, objective: Objective, batch: Batch, *, seed: int = 0, batch_size: int = 1000) -> FollowResult:
    if objective.teacherless:
        raise ConfigError(f"the follow rate needs teacher-forced inputs; objective {objective.name!r} has none")
    n, d = batch.candidates.shape
    length = batch.target.shape[1]
    if d < 2 or length < 3:
        raise ConfigError("the follow rate needs degree >= 2 (another arm) and path_len >= 3 (an index i >= 2)")
    rows = torch.arange(n)
    arm = batch.arms[rows, other_arm(batch, seed)]  # (B, L-1), depth 1 .. l-1
    labels, inputs = objective.labels(batch), objective.inputs(batch)
    p = batch.prefix.shape[1]
    indices = successor_indices(length)
    swaps, follow_tgt, true_next = {}, [], []
    no_succ = arm[:, -1] if not objective.reverse else batch.start  # a node with no successor: the control
    for i in indices:  # r_(i-1) (at position p+i-1) swapped for w, for the control node, and left alone
        w, succ = swap_node(objective, batch, arm, i)
        swaps[p + i - 1] = [w, no_succ, inputs[:, p + i - 1]]
        follow_tgt.append(succ)
        true_next.append(labels[:, i])
    q = len(indices)
    predicted = _predict_swapped(model, inputs, swaps, batch_size)
    swapped, control, plain = (torch.stack([predicted[s][j] for s in swaps]) for j in range(3))  # (Q, B) each
    follows = swapped == torch.stack(follow_tgt)  # (Q, B)
    by_pos, ctrl = {}, {}
    graph_nodes = batch.node_arm >= -1  # (B, N) labels present in the graph
    for j, i in enumerate(indices):
        k = int(follows[j].sum())
        by_pos[str(i)] = {"rate": k / n, "ci": list(wilson_ci(k, n))}
        in_graph = graph_nodes[rows, control[j].clamp(max=batch.task.n_nodes - 1)] & (control[j] < batch.task.n_nodes)
        ctrl[str(i)] = {"true_next": float((control[j] == true_next[j]).float().mean()),
                        "goal": float((control[j] == batch.goal).float().mean()),
                        "node_in_graph": float(in_graph.float().mean())}
    inner = follows[:-1] if q > 1 else follows
    # Positions of one graph are not independent: the graph is the unit of the Wilson interval.
    per_graph = inner.float().mean(0)
    lo, hi = wilson_ci(round(float(per_graph.sum())), n)
    k_last = int(follows[-1].sum())
    return FollowResult(
        objective=objective.name, n_graphs=n, label_indices=indices, follow_rate_by_position=by_pos,
        follow_rate=float(per_graph.mean()), follow_rate_ci=(lo, hi),
        follow_rate_last=k_last / n, follow_rate_last_ci=wilson_ci(k_last, n),
        unchanged_accuracy=(plain == torch.stack(true_next)).float().mean(1).tolist(), control=ctrl,
    )
