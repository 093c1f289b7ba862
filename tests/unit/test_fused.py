"""The fused training view (hansprobe/fused.py) computes the hooked model's function on its own
parameters: logits, gradients and the multi-token residual agree with the bridge."""
import pytest
import torch

from hansprobe.fused import FusedGPT, training_view
from hansprobe.multitoken import forward_with_resid
from hansprobe.objectives import get_objective
from helpers import tiny_model, tiny_task

# float32 rounding of a different op order: logits of size ~3 differ by ~2e-6 in a check.
ATOL = 1e-5

def tokens_of(task, n, seed):
    return get_objective("teacher-forcing").inputs(task.generate(n, seed))  # (B, T): prompt + answer


LAYOUTS = [{}, {"normalization": "LNPre"}, {"normalization": "RMS"}, {"normalization": "RMSPre"},
           {"normalization": None}, {"attn_only": True}, {"act_fn": "gelu_new"}, {"act_fn": "relu"},
           {"act_fn": "silu", "n_layers": 3, "n_heads": 4}]


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "default")
@pytest.mark.parametrize("n_threads", [1, 2], ids=["explicit-attention", "sdpa"])
def test_logits_agree_with_the_bridge(layout, n_threads, threads):
    threads(n_threads)  # one thread takes the explicit softmax, several the SDPA path
    task = tiny_task()
    model = tiny_model(task, seed=3, **layout)
    tokens = tokens_of(task, 16, 0)
    with torch.no_grad():
        want, got = model(tokens), FusedGPT(model)(tokens)
    assert want.shape == got.shape
    assert (want - got).abs().max().item() < ATOL


def test_gradients_agree_and_land_on_the_bridge_parameters():
    task = tiny_task()
    model, tokens = tiny_model(task, seed=1), tokens_of(task, 16, 1)
    view = training_view(model)
    assert {id(p) for p in view.parameters()} == {id(p) for p in model.parameters()}  # one set of weights
    model(tokens).logsumexp(-1).mean().backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    view(tokens).logsumexp(-1).mean().backward()
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, want[n], atol=1e-6), n


def test_the_multi_token_residual_is_the_bridges_unembed_input():
    task = tiny_task()
    model, tokens = tiny_model(task, seed=2), tokens_of(task, 8, 2)
    with torch.no_grad():
        logits, resid = forward_with_resid(model, tokens)
        f_logits, f_resid = FusedGPT(model)(tokens, return_resid=True)
    assert (resid - f_resid).abs().max().item() < ATOL
    assert (logits - f_logits).abs().max().item() < ATOL


def test_an_unknown_layout_keeps_the_bridge():
    class Stub(torch.nn.Module):
        original_model = torch.nn.Linear(2, 2)
    stub = Stub()
    assert training_view(stub) is stub
    plain = torch.nn.Linear(2, 2)
    assert training_view(plain) is plain


def test_plain_forward_passes_take_the_fused_view_unless_a_hook_is_on_the_model():
    """Analyses' plain forward passes (Objective.forced_logits, decoding, the follow rate) run the
    fused view; a hook on the model — a user's `model.hooks(...)`, an analysis's ablation — sends
    them through the bridge, so the hook still applies."""
    from hansprobe.fused import has_forward_hooks, inference_view

    task = tiny_task()
    model, obj = tiny_model(task, seed=2).eval(), get_objective("teacher-forcing")
    batch = task.generate(16, 5)
    assert isinstance(inference_view(model), FusedGPT) and not has_forward_hooks(model)
    plain = obj.forced_logits(model, batch)
    with torch.no_grad():
        bridge = model(obj.inputs(batch))[:, obj.label_slice(batch)]
    assert (plain - bridge).abs().max().item() < ATOL

    def zero(z, hook):
        return torch.zeros_like(z)

    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_z", zero)]):
        assert inference_view(model) is model and has_forward_hooks(model)
        hooked = obj.forced_logits(model, batch)
        with torch.no_grad():
            want = model(obj.inputs(batch))[:, obj.label_slice(batch)]
    assert torch.equal(hooked, want.float())
    assert (hooked - plain).abs().max().item() > 1e-3  # the hook changed what the analysis measured
    handle = model.blocks[0].mlp.register_forward_hook(lambda m, i, o: o * 0)  # a plain torch hook counts too
    assert inference_view(model) is model
    handle.remove()
    assert isinstance(inference_view(model), FusedGPT)


@pytest.mark.parametrize("layout", LAYOUTS[:3] + LAYOUTS[5:6] + LAYOUTS[-1:],
                         ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "default")
@pytest.mark.parametrize("positions", [slice(7, 12), slice(3, 4), slice(-2, None)], ids=["label-span", "one", "tail"])
def test_logits_at_some_positions_equal_the_full_forward_there(layout, positions, threads):
    """The fused forward asked for some positions runs its last block there only: the same logits
    as the whole sequence's, sliced (and as the bridge's)."""
    from hansprobe.fused import logits_at

    threads(2)
    task = tiny_task()
    model = tiny_model(task, seed=4, **layout).eval()
    tokens = tokens_of(task, 16, 2)
    with torch.no_grad():
        want, got = model(tokens)[:, positions], logits_at(model, tokens, positions)
    assert want.shape == got.shape
    assert (want - got).abs().max().item() < ATOL


@pytest.mark.parametrize("layout", LAYOUTS[:3] + LAYOUTS[5:6] + LAYOUTS[-1:],
                         ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "default")
@pytest.mark.parametrize("start", [1, 9, -1], ids=["after-the-first", "middle", "last-only"])
def test_extending_the_earlier_keys_and_values_equals_the_whole_forward(layout, start, threads):
    """`extend` from the keys and values of the positions before `start` (computed once, on other
    later tokens) gives the bridge's logits at the later positions, with a token changed there."""
    threads(2)
    task = tiny_task()
    model = tiny_model(task, seed=5, **layout).eval()
    tokens = tokens_of(task, 16, 3)
    net = FusedGPT(model)
    s = start % tokens.shape[1]
    later = tokens[:, s:].clone()
    later[:, 0] = (later[:, 0] + 1 + torch.arange(16)) % task.n_nodes  # another node where the continuation starts
    with torch.no_grad():
        kv = net.keys_values(tokens)
        got = net.extend([(k[:, :, :s], v[:, :, :s]) for k, v in kv], later)
        want = model(torch.cat((tokens[:, :s], later), 1))[:, s:]
    assert want.shape == got.shape
    assert (want - got).abs().max().item() < ATOL
