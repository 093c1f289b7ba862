"""Models that read the task as text (hansprobe/text_model.py, causal_lm.py, finetune.py): tiny
transformers models with a byte-level BPE trained in the test, seen at the integer layout's sites;
imported with --format hf, fine-tuned with train --base-model, and analysed."""
import json

import pytest
import torch

from helpers import path_star_bpe, run_cli, save_text_causal_lm
from hansprobe import causal_lm
from hansprobe.errors import CheckpointError, ConfigError
from hansprobe.objectives import get_objective
from hansprobe.tasks import PathStar
from hansprobe.tasks.ntf_format import format_ntf_lines
from hansprobe.tasks.text_tokens import TextTokens

TASK = PathStar(degree=2, path_len=4, n_nodes=20)
TASK_ARGS = ["--degree", "2", "--path-len", "4", "--nodes", "20"]


@pytest.fixture(scope="module")
def tokenizer():
    return path_star_bpe(TASK, 300, lines=2000)


@pytest.fixture(scope="module")
def llama(tokenizer, tmp_path_factory):
    d = tmp_path_factory.mktemp("llama")
    hf = save_text_causal_lm("llama", d, tokenizer)
    table = TextTokens.from_tokenizer(tokenizer, TASK).with_dummy(tokenizer)
    return d, hf, causal_lm.text_format_model(hf, TASK, table, "cpu").eval()


def test_the_text_is_the_tokenizers_own_encoding_of_the_line(tokenizer, llama):
    _, _, model = llama
    batch = TASK.generate(16, seed=3)
    x = get_objective("teacher-forcing").inputs(batch)  # the prompt and all answer tokens but the goal
    text = model.text_inputs(x)
    for k, line in enumerate(format_ntf_lines(batch)):
        want = tokenizer.encode(line).ids
        assert text[k].tolist() == want[:len(text[k])] and len(want) == text.shape[1] + 1  # the goal is what it predicts


def test_logits_are_transformers_own_at_the_sites_restricted_to_the_task_tokens(llama):
    _, hf, model = llama
    x = get_objective("teacher-forcing").inputs(TASK.generate(8, seed=4))
    with torch.no_grad():
        ref = hf(model.text_inputs(x)).logits  # (B, Tt, Vt)
        got = model(x)  # (B, T, V)
    assert got.shape == (8, x.shape[1], TASK.d_vocab)
    assert torch.equal(got[..., :TASK.n_nodes], ref[:, model.site[:x.shape[1]]][..., model.table.node])
    # the site of the last prompt token `=` predicts r0, and of each answer slot the comma after it
    p = TASK.prefix_len
    assert int(model.site[p - 1]) == int(model.token_at[p - 1]) and torch.equal(model.site[p:], model.token_at[p:] + 1)


def test_the_cache_and_hooks_read_and_write_at_the_sites(llama):
    _, _, model = llama
    x = get_objective("teacher-forcing").inputs(TASK.generate(4, seed=5))
    t = x.shape[1]
    with torch.no_grad():
        logits, cache = model.run_with_cache(x)
        _, full = model.bridge.run_with_cache(model.text_inputs(x))
        assert torch.equal(logits, model(x))
        pattern = cache["blocks.0.attn.hook_pattern"]  # (B, H, T, T): query at the sites, key at the tokens
        assert pattern.shape[-2:] == (t, t)
        assert torch.equal(pattern, full["blocks.0.attn.hook_pattern"][:, :, model.site[:t]][..., model.token_at[:t]])
        assert torch.equal(cache["blocks.1.hook_resid_pre"], full["blocks.1.hook_resid_pre"][:, model.site[:t]])
        seen = {}

        def zero_last(act, hook):
            seen["shape"] = act.shape
            act[:, -1] = 0  # the integer input's last site only
            return act

        def keep(act, hook):
            seen["after"] = act.clone()

        with model.hooks(fwd_hooks=[("blocks.1.hook_resid_pre", zero_last)]):
            with model.bridge.hooks(fwd_hooks=[("blocks.1.hook_resid_pre", keep)]):  # runs after the view's hook
                model(x)
    assert seen["shape"][1] == t
    after, before = seen["after"], full["blocks.1.hook_resid_pre"]
    last = int(model.site[t - 1])
    assert (after[:, last] == 0).all()
    others = [i for i in range(before.shape[1]) if i != last]
    assert torch.equal(after[:, others], before[:, others])


def test_a_residual_edit_reruns_the_text_model_with_the_edit_at_the_site(llama):
    """The probes' steering (and the plan analysis) edit the residual at a layer and rerun the rest:
    a text model has no blocks of its own to call, so the whole text runs with the edit written at
    the integer position's site. Checked against the bridge hooked by hand at that text position."""
    import numpy as np

    from hansprobe.fused import output_logits
    from hansprobe.mechanics.steering import _Site

    _, _, model = llama
    batch = TASK.generate(6, seed=7)
    site = _Site(model, get_objective("teacher-forcing"), batch, layer=1, batch_size=4)
    rows = torch.arange(len(batch))
    dec, comp = batch.candidates[rows, 0], batch.candidates[rows, 1]
    clean = site.logit_diff(dec, comp, 0, None)
    assert np.allclose(site.logit_diff(dec, comp, site.at - 1, lambda x, r: x), clean, atol=1e-5)
    v = 10 * torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    got = site.logit_diff(dec, comp, site.at, lambda x, r: x + v)  # at the decision's own site
    text_pos = at = int(model.site[site.at])

    def add(act, hook):
        act[:, text_pos] += v
        return act
    with torch.no_grad():
        logits = output_logits(model.bridge.run_with_hooks(model.text_inputs(site.tokens), fwd_hooks=[
            ("blocks.0.hook_resid_post", add)]))
    want = logits[rows, at, model.lut[dec]] - logits[rows, at, model.lut[comp]]
    assert np.allclose(got, want.numpy(), atol=1e-4)
    assert not np.allclose(got, clean, atol=1e-2)


def test_transformer_lens_patching_runs_on_the_integer_positions(llama):
    from transformer_lens import patching

    _, _, model = llama
    batch = TASK.generate(6, seed=6)
    x = get_objective("teacher-forcing").inputs(batch)
    corrupted = x.clone()
    corrupted[:, TASK.goal_pos] = (corrupted[:, TASK.goal_pos] + 1) % TASK.n_nodes
    with torch.no_grad():
        _, clean_cache = model.run_with_cache(x)
        res = patching.get_act_patch_resid_pre(model, corrupted, clean_cache, lambda logits: logits[:, -1, 0].mean())
    assert res.shape == (model.cfg.n_layers, x.shape[1])
    # patching the clean goal back at layer 0 of the goal's position restores the clean run's metric there
    with torch.no_grad():
        clean = model(x)[:, -1, 0].mean()
    assert float(res[0, TASK.goal_pos]) == pytest.approx(float(clean), abs=1e-5)


def test_import_with_a_tokenizer_keeps_it_and_refuses_one_replaced(tokenizer, llama, tmp_path, capsys):
    src, _, _ = llama
    out = tmp_path / "imported"
    code, _, err = run_cli(["import", str(src), "--format", "hf", *TASK_ARGS, "--objective", "teacher-forcing",
                            "--out", str(out), "--json"], capsys)
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["text_format"]["node"] == TextTokens.from_tokenizer(tokenizer, TASK).node.tolist()
    assert cfg["imported_from"]["max_logit_diff"] <= causal_lm.PARITY_TOL and (out / "tokenizer.json").is_file()
    assert 0.0 <= cfg["imported_from"]["comma_accuracy"] <= 1.0
    from hansprobe.checkpoint import load_checkpoint
    from hansprobe.text_model import TextFormatModel

    assert isinstance(load_checkpoint(out).model, TextFormatModel)
    other = path_star_bpe(TASK, 320, lines=500)  # another table of the same labels
    other.save(str(out / "tokenizer.json"))
    with pytest.raises(CheckpointError, match="another table of the task's tokens"):
        load_checkpoint(out)
    (out / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="has no tokenizer.json"):
        load_checkpoint(out)


def test_import_refusals_are_one_line(tokenizer, llama, tmp_path, capsys):
    src, _, _ = llama
    code, _, err = run_cli(["import", str(src), "--format", "hf-gpt2", *TASK_ARGS, "--objective", "teacher-forcing",
                            "--out", str(tmp_path / "a")], capsys)
    assert code == 2 and "--format hf" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(["import", str(src), "--format", "hf", "--degree", "2", "--path-len", "4", "--nodes", "400",
                            "--objective", "teacher-forcing", "--out", str(tmp_path / "b")], capsys)
    assert code == 2 and "not one token" in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def finetuned(tokenizer, tmp_path_factory):
    """A tiny GPT-NeoX (fused QKV: the bridge would split it) fine-tuned for 30 steps in two chunks."""
    base = tmp_path_factory.mktemp("neox")
    save_text_causal_lm("neox", base, tokenizer)
    run = tmp_path_factory.mktemp("runs")
    args = ["train", "--base-model", str(base), *TASK_ARGS, "--steps", "30", "--batch-size", "32", "--eval-every", "15",
            "--eval-graphs", "100", "--checkpoint-every", "15", "--snapshot-at", "15", "--lr", "3e-3"]
    from hansprobe.cli import main

    for out, extra in (("whole", []), ("chunks", ["--until", "15"])):
        assert main([*args, "--out", str(run / out), "--json", *extra]) == 0
    assert main(["train", "--resume", "--out", str(run / "chunks"), "--json"]) == 0
    return base, run


def test_a_fine_tuning_stores_transformers_weights_and_resumes_bit_identically(finetuned):
    from safetensors.torch import load_file

    base, run = finetuned
    whole, chunks = load_file(run / "whole" / "model.safetensors"), load_file(run / "chunks" / "model.safetensors")
    start = causal_lm.causal_lm_state_dict(causal_lm.load_pretrained_strictly(base))
    assert set(whole) == set(start)  # the transformers module's own names, as an import stores them
    assert all(torch.equal(whole[k], chunks[k]) for k in whole)
    qkv = next(k for k in whole if "query_key_value.weight" in k)
    assert not torch.equal(whole[qkv], start[qkv])  # the fused weights trained (not a bridge's split copy)
    assert (run / "whole" / "tokenizer.json").read_bytes() == (base / "tokenizer.json").read_bytes()
    rows = [json.loads(line) for line in (run / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_the_analyses_run_on_a_fine_tuned_run(finetuned, capsys):
    _, run = finetuned
    code, out, err = run_cli(["dynamics", str(run / "whole"), "-n", "100", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["steps"] == [15, 30]
    code, out, err = run_cli(["eval", str(run / "whole"), "-n", "100", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["n_graphs"] == 100


def test_base_model_refusals_are_one_line_and_write_nothing(tokenizer, tmp_path, capsys):
    bare = tmp_path / "bare"
    save_text_causal_lm("llama", bare, tokenizer)
    (bare / "tokenizer.json").unlink()
    for args, said in ((["--base-model", str(bare)], "has no tokenizer.json"),
                       (["--base-model", str(tmp_path / "none")], "is not a directory")):
        out = tmp_path / "out"
        code, _, err = run_cli(["train", *args, *TASK_ARGS, "--steps", "2", "--out", str(out)], capsys)
        assert code == 2 and said in err and len(err.strip().splitlines()) == 1, err
        assert not out.exists()


def test_multi_token_heads_of_a_text_model_predict_the_next_answer_node_at_its_site(tokenizer, tmp_path):
    """Head j at the text position that predicts answer node i is scored on node i + j's own token,
    found here from the tokenizer's encoding of the line, not from the model's tables."""
    from hansprobe.multitoken import ExtraHeads

    hf = save_text_causal_lm("llama", tmp_path, tokenizer)
    table = TextTokens.from_tokenizer(tokenizer, TASK).with_dummy(tokenizer)
    model = causal_lm.text_format_model(hf, TASK, table, "cpu", bridged=False)  # the training form
    objective = get_objective("multi-token", {"k": 2})
    batch = TASK.generate(8, seed=5)
    heads = ExtraHeads(2, model.cfg.d_model, model.text_vocab, seed=1)
    with torch.no_grad():
        both = model.text_loss(objective, batch, heads=heads)
        main = model.text_loss(objective, batch)
        ids = torch.tensor([tokenizer.encode(line).ids for line in format_ntf_lines(batch)])  # (B, Tt + 1)
        resid = hf(ids[:, :-1], output_hidden_states=True).hidden_states[-1]  # (B, Tt, d)
    start = len(tokenizer.encode(format_ntf_lines(batch)[0].split("=")[0] + "=").ids)
    nodes = torch.arange(start, ids.shape[1], 2)  # the answer nodes' text positions, commas between
    logits = heads(resid[:, nodes - 1])  # (k, B, L, Vt): at the position predicting each node
    want = torch.tensor(0.0)
    for j in (1, 2):
        scored = logits[j - 1, :, : len(nodes) - j]
        want = want + torch.nn.functional.cross_entropy(scored.reshape(-1, scored.shape[-1]), ids[:, nodes[j:]].reshape(-1))
    assert float(both - main) == pytest.approx(float(want), rel=1e-5)


def test_a_multi_token_fine_tuning_stores_heads_over_the_text_vocabulary_and_resumes_bit_identically(tokenizer, tmp_path):
    from safetensors.torch import load_file

    from hansprobe.cli import main
    from hansprobe.multitoken import EXTRA_HEADS, ExtraHeads
    from hansprobe.train import HEADS_STREAM, derived_seed

    base = tmp_path / "base"
    save_text_causal_lm("llama", base, tokenizer)
    args = ["train", "--base-model", str(base), *TASK_ARGS, "--objective", "multi-token", "--steps", "6",
            "--batch-size", "16", "--eval-every", "3", "--eval-graphs", "50", "--checkpoint-every", "3", "--json"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    assert main([*args, "--out", str(tmp_path / "chunks"), "--until", "3"]) == 0
    assert main(["train", "--resume", "--out", str(tmp_path / "chunks"), "--json"]) == 0
    whole, chunks = (load_file(tmp_path / run / EXTRA_HEADS)["weight"] for run in ("whole", "chunks"))
    vocab = tokenizer.get_vocab_size()
    assert whole.shape[0] == 1 and whole.shape[2] == vocab  # one head, over the tokenizer's whole vocabulary
    assert torch.equal(whole, chunks)
    start = ExtraHeads(1, whole.shape[1], vocab, derived_seed(0, HEADS_STREAM)).weight.detach()
    assert not torch.equal(whole, start)  # the heads were trained
    a, b = (load_file(tmp_path / run / "model.safetensors") for run in ("whole", "chunks"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    code = main(["eval", str(tmp_path / "whole"), "-n", "20", "--json"])
    assert code == 0


def test_gradient_accumulation_gives_the_same_update():
    from hansprobe.train import TrainConfig, train_step
    from helpers import tiny_model, tiny_task

    task = tiny_task()
    objective = get_objective("teacher-forcing")
    batch = task.generate(32, seed=1)
    weights = []
    for accum in (1, 4):
        model = tiny_model(task)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1.0)  # the update is the (clipped) gradient itself
        loss = train_step(model, opt, objective, batch, 1.0, 1.0, accum=accum)
        weights.append((float(loss), [p.detach().clone() for p in model.parameters()]))
    assert weights[0][0] == pytest.approx(weights[1][0], abs=1e-5)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(weights[0][1], weights[1][1]))
    with pytest.raises(ConfigError, match="grad-accum"):
        TrainConfig(batch_size=4, grad_accum=8)


def test_data_format_text_writes_the_lines_the_model_reads(tokenizer, llama, tmp_path, capsys):
    from hansprobe.tasks.ntf_format import read_ntf

    _, _, model = llama
    out = tmp_path / "graphs.txt"
    code, _, err = run_cli(["data", *TASK_ARGS, "-n", "8", "--seed", "9", "--format", "text", "--out", str(out)], capsys)
    assert code == 0, err
    batch = read_ntf(out, TASK)  # what --data reads back
    text = model.text_inputs(get_objective("teacher-forcing").inputs(batch))
    for k, line in enumerate(out.read_text().splitlines()):
        assert tokenizer.encode(line).ids[:-1] == text[k].tolist()


def test_a_teacherless_input_holds_the_dummy_in_every_answer_slot_as_next_token_failures_fills_it(tokenizer, llama):
    _, _, model = llama
    batch = TASK.generate(4, seed=7)
    text = model.text_inputs(get_objective("teacherless").inputs(batch))
    p = TASK.prefix_len
    answer = text[:, int(model.token_at[p]):]  # after `=`: 2l - 2 slots
    assert answer.shape[1] == 2 * TASK.path_len - 2 and (answer == model.table.dummy).all()
    line = format_ntf_lines(batch)[0]
    assert text[0, :int(model.token_at[p])].tolist() == tokenizer.encode(line.split("=")[0] + "=").ids


def test_an_oversized_tokenizer_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from hansprobe import causal_lm as clm

    (tmp_path / "tokenizer.json").write_text("{" + " " * 2048 + "}")
    monkeypatch.setattr(clm, "TOKENIZER_MAX_BYTES", 1024)
    with pytest.raises(CheckpointError, match="more than a tokenizer file holds"):
        clm.read_tokenizer(tmp_path)


def test_the_report_refuses_a_batch_whose_forward_pass_would_not_fit(tokenizer, llama, tmp_path, capsys, monkeypatch):
    """A text model's passes compute the logits of the task's tokens only (the head restricted): the
    report's memory check counts what a pass holds, and a --batch-size that would not fit is refused
    in one line before any analysis runs, saying how many graphs fit."""
    import hansprobe.resources as resources
    from hansprobe.checkpoint import check_batch_memory
    from hansprobe.resources import forward_bytes

    d, _, model = llama
    vocab = tokenizer.get_vocab_size()
    assert model.text_vocab == vocab > TASK.d_vocab == model.cfg.d_vocab == model.logit_vocab
    per_graph = forward_bytes(1, model.text_len, model.cfg.n_layers, model.cfg.d_model, model.cfg.d_mlp,
                              model.cfg.n_heads, TASK.d_vocab)
    monkeypatch.setattr(resources, "available_bytes", lambda device="cpu": 40 * per_graph)
    check_batch_memory(model, 40, "cpu")  # fits exactly
    with pytest.raises(resources.ResourceError, match=r"lower --batch-size \(about 40 fit\)"):
        check_batch_memory(model, 41, "cpu")
    out = tmp_path / "ck"
    code, _, err = run_cli(["import", str(d), "--format", "hf", *TASK_ARGS, "--objective", "teacher-forcing",
                            "--out", str(out)], capsys)
    assert code == 0, err
    code, _, err = run_cli(["report", str(out), "-n", "50", "--batch-size", "1000", "--out", str(tmp_path / "r")], capsys)
    errors = [line for line in err.splitlines() if line.startswith("hansprobe: error:")]
    assert code == 2 and len(errors) == 1 and "lower --batch-size (about 40 fit)" in errors[0], err
    assert not (tmp_path / "r").exists()
    code, _, err = run_cli(["eval", str(out), "-n", "50", "--batch-size", "1000", "--json"], capsys)  # every analysis command
    assert code == 2 and "lower --batch-size (about 40 fit)" in err, err


@pytest.mark.parametrize("kind", ["gpt2", "neox", "llama", "phi"])
def test_decoding_from_transformers_cache_gives_the_whole_forwards_answers(tokenizer, kind, tmp_path):
    """The LM head restricted to the task's tokens and the prompt's keys and values read from
    transformers' cache (search and greedy decoding) give what whole forwards through the full head
    give, on every architecture; a hooked model is not read from the cache (its hooks see whole passes)."""
    from hansprobe.search import _Scorer
    from hansprobe.text_passes import head_slot

    hf = save_text_causal_lm(kind, tmp_path, tokenizer)
    table = TextTokens.from_tokenizer(tokenizer, TASK).with_dummy(tokenizer)
    model = causal_lm.text_format_model(hf, TASK, table, "cpu").eval()
    objective, batch = get_objective("teacher-forcing"), TASK.generate(6, seed=7)
    x = objective.inputs(batch)
    with torch.no_grad():
        full = hf(model.text_inputs(x)).logits[:, model.site[:x.shape[1]]][..., model.lut.clamp(min=0)]  # the whole head
        got = model(x)
    torch.testing.assert_close(got, full, rtol=1e-5, atol=1e-5)
    owner, name = head_slot(model.bridge)
    assert isinstance(owner._modules[name], torch.nn.Linear)  # the whole head is back after the pass

    score = _Scorer(model, objective, batch)
    assert score.kv is not None
    rows = torch.arange(len(batch)).repeat_interleave(3)
    chosen = torch.randint(0, TASK.n_nodes, (len(rows), TASK.target_len), generator=torch.Generator().manual_seed(0))
    p = batch.prefix.shape[1]
    for i in range(TASK.target_len):
        whole = model(torch.cat([batch.prefix[rows], chosen[:, :i]], 1))[:, p - 1 + i].log_softmax(-1)
        torch.testing.assert_close(score(rows, chosen, i), whole, rtol=1e-5, atol=1e-5)

    cached = objective.decode(model, batch)
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda act, hook: act)]):
        assert model.keys_values(batch.prefix) is None
        assert torch.equal(objective.decode(model, batch), cached)


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_samples_and_beams_grow_each_answer_from_the_step_before(tokenizer, kind, tmp_path, monkeypatch):
    """Search on a text model runs one answer token (and its comma) per step from the keys and values
    of the row's prefix at the step before, and draws the samples and beams whole forwards draw."""
    from hansprobe.search import beam_search, sample

    hf = save_text_causal_lm(kind, tmp_path, tokenizer)
    table = TextTokens.from_tokenizer(tokenizer, TASK).with_dummy(tokenizer)
    model = causal_lm.text_format_model(hf, TASK, table, "cpu").eval()
    objective, batch = get_objective("teacher-forcing"), TASK.generate(5, seed=9)
    uniforms = torch.rand(len(batch), 2 * 6, TASK.target_len, generator=torch.Generator().manual_seed(2))
    texts = []  # text positions each cached step ran
    extend = model.extend
    monkeypatch.setattr(model, "extend", lambda kv, tokens, keep=False: texts.append(tokens.shape[1]) or extend(kv, tokens, keep))
    with torch.no_grad():
        grown = [beam_search(model, objective, batch, w) for w in (2, 3)], sample(model, objective, batch, 6, (0.7, 1.0), uniforms)
        assert texts == [1] * 3 * TASK.target_len  # every step one answer token (the first: `=`), not the answer so far
        monkeypatch.setattr(model, "keys_values", lambda tokens: None)  # whole forwards
        whole = [beam_search(model, objective, batch, w) for w in (2, 3)], sample(model, objective, batch, 6, (0.7, 1.0), uniforms)
    for g, w in zip(grown[0], whole[0]):
        assert torch.equal(g, w)
    for g, w in zip(grown[1], whole[1]):
        assert torch.equal(g.tokens, w.tokens)
        torch.testing.assert_close(g.loglik, w.loglik, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["gpt2", "neox", "llama", "phi"])
def test_head_ablations_run_from_the_ablated_block_with_the_whole_forwards_logits(tokenizer, kind, tmp_path, monkeypatch):
    """A text model's head ablations start from the first ablated block on the clean residual, the
    blocks before it passed through, not computed; the logits are the whole hooked forward's."""
    import hansprobe.text_passes as text_passes
    from hansprobe.measurements.heads import _ablated_logits, _ablation_hooks

    hf = save_text_causal_lm(kind, tmp_path, tokenizer)
    table = TextTokens.from_tokenizer(tokenizer, TASK).with_dummy(tokenizer)
    model = causal_lm.text_format_model(hf, TASK, table, "cpu").eval()
    objective, batch = get_objective("teacher-forcing"), TASK.generate(6, seed=8)
    cfg, t = model.cfg, objective.inputs(batch).shape[1]
    g = torch.Generator().manual_seed(1)
    mean_z = [torch.randn(t, cfg.n_heads, cfg.d_head, generator=g) for _ in range(cfg.n_layers)]
    passed = []
    monkeypatch.setattr(text_passes, "_pass_through", lambda *a, **k: passed.append(1) or (a[0] if a else k["hidden_states"]))
    with torch.no_grad():
        for heads in ([(1, 0)], [(0, 1), (1, 1)]):
            for mode in ("zero", "mean"):
                got = _ablated_logits(model, objective, batch, heads, mode, mean_z, lambda net: net.resid_pre(objective.inputs(batch)))
                with model.hooks(fwd_hooks=_ablation_hooks(heads, mode, mean_z)):
                    want = objective.forced_logits(model, batch)
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
                assert not torch.allclose(got, objective.forced_logits(model, batch), atol=1e-4)  # the ablation bites
    assert len(passed) == 2  # block 0, once per mode, where layer 1 alone is ablated


@pytest.mark.parametrize("kind", ["gpt2", "neox", "llama", "phi"])
def test_patching_runs_from_the_first_patched_position_with_the_librarys_answers(tokenizer, kind, tmp_path, monkeypatch):
    """A text model's activation patching (every sweep, both directions, and shortcut patching) runs
    in chunks, each patched pass over the text from the first position a patch changes, and gives
    what `transformer_lens.patching`'s whole passes give."""
    import numpy as np

    import hansprobe.measurements.patching as patching

    hf = save_text_causal_lm(kind, tmp_path, tokenizer)
    table = TextTokens.from_tokenizer(tokenizer, TASK).with_dummy(tokenizer)
    model = causal_lm.text_format_model(hf, TASK, table, "cpu").eval()
    objective, batch = get_objective("teacher-forcing"), TASK.generate(12, seed=3)
    monkeypatch.setattr(patching, "GAP_MIN", -1.0)  # a random model's goal-swap gap is small: run the sweeps anyway
    kw = dict(sweeps=patching.SWEEPS, directions=("sufficiency", "necessity"))
    patched = []  # text positions each pass from a held prefix ran
    run = model._run

    def counted(text, past=None):
        if past is not None:
            patched.append(text.shape[1])
        return run(text, past)

    monkeypatch.setattr(model, "_run", counted)
    fast = patching.measure_patching(model, objective, batch, batch_size=5, **kw)  # 3 chunks, the last short
    assert len(patched) > 100 and max(patched) <= 8 < model.text_len  # a few positions past the shared prefix
    with monkeypatch.context() as m:
        m.setattr(patching, "_runs_after_prefix", lambda model: False)
        whole = patching.measure_patching(model, objective, batch, **kw)
    assert fast.measurable and fast.shortcut and fast.heads_by_pos

    def values(res):  # every normalised value and KL, by where it sits
        out = {f"heads {d} {k}": r[k] for d, r in res.heads.items() for k in ("normalized", "kl")}
        out.update({f"heads-by-pos {d} {k}": r[k] for d, r in res.heads_by_pos.items() for k in ("normalized", "kl")})
        out.update({f"{s} {d} {k}": r[k] for s, by in res.sweeps.items() for d, r in by.items() for k in ("normalized", "kl")})
        return {**out, **{f"shortcut {i}": v for i, v in res.shortcut["move_rate"].items()}}

    got, want = values(fast), values(whole)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_allclose(np.array(got[key], float), np.array(want[key], float), atol=1e-4, err_msg=key)
    assert [t["component"] for t in fast.top] == [t["component"] for t in whole.top]
