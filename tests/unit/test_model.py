import json

import pytest
import torch

from hansprobe.errors import ConfigError
from hansprobe.model import ModelConfig, resolve_device

from helpers import tiny_model, tiny_task


def test_model_is_a_hooked_transformerlens_bridge_with_the_usual_hook_names():
    task = tiny_task()
    model = tiny_model(task, n_layers=2)
    assert type(model).__name__ == "TransformerBridge" and not model.training
    x = task.generate(4, 0).prefix
    logits, cache = model.run_with_cache(x, names_filter=lambda n: n.endswith(("hook_pattern", "hook_resid_post")))
    assert logits.shape == (4, x.shape[1], task.d_vocab)
    assert cache["blocks.1.attn.hook_pattern"].shape == (4, 2, x.shape[1], x.shape[1])
    assert cache["blocks.0.hook_resid_post"].shape == (4, x.shape[1], 32)


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = tiny_model(seed=1), tiny_model(seed=1), tiny_model(seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_config_is_plain_json_and_checks_its_shape():
    cfg = ModelConfig(d_model=64, n_heads=4)
    assert cfg.d_mlp == 256 and cfg.d_head == 16
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="divisible by n_heads"):
        ModelConfig(d_model=30, n_heads=4)
    with pytest.raises(ConfigError, match="unknown model config keys"):
        ModelConfig.from_dict({"d_modle": 3})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ConfigError, match="CUDA is not available.*--device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("gpu0")
