"""The text format through a subword tokenizer: byte-level BPE tokenizers trained inside the test on
path-star text (the `tokenizers` package, offline), one that keeps every label whole and one whose
small vocabulary splits the two-digit labels."""
import pytest
import torch

from hansprobe.errors import TaskError
from helpers import path_star_bpe
from hansprobe.tasks import PathStar
from hansprobe.tasks.ntf_format import format_ntf_lines
from hansprobe.tasks.text_tokens import TextTokens

TASK = PathStar(degree=2, path_len=5, n_nodes=50)


def bpe(vocab_size: int, lines: int = 3000):
    return path_star_bpe(TASK, vocab_size, lines)


@pytest.fixture(scope="module")
def whole():
    return bpe(400)


def test_a_batch_becomes_exactly_the_tokenizers_encoding_of_its_lines(whole):
    text = TextTokens.from_tokenizer(whole, TASK)
    batch = TASK.generate(64, seed=5)
    prefix, target = text.encode(batch)
    assert prefix.shape == (64, 4 * TASK.n_edges + 4) and target.shape == (64, 2 * TASK.path_len - 1)
    for k, line in enumerate(format_ntf_lines(batch)):
        assert whole.encode(line).ids == torch.cat([prefix[k], target[k]]).tolist()
    assert len(set(text.node.tolist())) == TASK.n_nodes  # distinct decision tokens


def test_every_structural_position_holds_what_the_layout_says(whole):
    text = TextTokens.from_tokenizer(whole, TASK)
    batch = TASK.generate(32, seed=6)
    seq = torch.cat(text.encode(batch), 1)
    pos = text.positions(TASK.n_edges, TASK.path_len)
    assert torch.equal(seq[:, pos["parent"]], text.node[batch.edge_parent])
    assert torch.equal(seq[:, pos["child"]], text.node[batch.edge_child])
    assert (seq[:, pos["comma"]] == text.comma).all() and (seq[:, pos["separator"][:-1]] == text.pipe).all()
    assert (seq[:, pos["separator"][-1]] == text.slash).all() and (seq[:, pos["="]] == text.equals).all()
    assert torch.equal(seq[:, pos["start"]], text.node[batch.start]) and torch.equal(seq[:, pos["goal"]], text.node[batch.goal])
    assert torch.equal(seq[:, pos["answer"]], text.node[batch.target]) and (seq[:, pos["answer_commas"]] == text.comma).all()
    assert pos["prefix_len"] == pos["="] + 1 == int(pos["answer"][0])


def test_the_goal_first_layout_is_the_same_text_reordered(whole):
    task = PathStar(degree=2, path_len=5, n_nodes=50, goal_first=True)
    text = TextTokens.from_tokenizer(whole, task)
    batch = task.generate(8, seed=2)
    seq = torch.cat(text.encode(batch), 1)
    pos = text.positions(task.n_edges, task.path_len)
    assert pos["start"] == 0 and (seq[:, 3] == text.slash).all() and (seq[:, pos["="]] == text.equals).all()
    assert torch.equal(seq[:, pos["parent"]], text.node[batch.edge_parent])


def test_a_tokenizer_that_splits_labels_is_refused_naming_them():
    small = bpe(260)  # the byte alphabet and a few merges: most two-digit labels stay split
    with pytest.raises(TaskError, match=r"node labels .*\d+\.\.\d+.* not one token") as e:
        TextTokens.from_tokenizer(small, TASK)
    assert "\n" not in str(e.value)


def test_a_tokenizer_that_merges_a_label_with_a_separator_is_refused():
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {str(i): i for i in range(50)} | {",": 50, "|": 51, "/": 52, "=": 53, ",1": 54}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="=", max_input_chars_per_word=100))
    tok.pre_tokenizer = pre_tokenizers.Split("|", behavior="isolated")  # ",1" can now be one token
    with pytest.raises(TaskError, match="not one token|not a token of its own|otherwise than token by token"):
        TextTokens.from_tokenizer(tok, TASK)


def test_the_teacherless_dummy_is_checked_when_asked(whole):
    text = TextTokens.from_tokenizer(whole, TASK)
    dummy = text.with_dummy(whole).dummy  # '$' is in the byte alphabet and no merge touched it: a token of its own
    assert text.dummy is None and dummy is not None
    assert dummy not in text.node.tolist() and dummy not in (text.comma, text.pipe, text.slash, text.equals)
    # a word-level vocabulary of the labels and separators only: '$' reads as the unknown token
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {str(i): i for i in range(TASK.n_nodes)} | {",": 50, "|": 51, "/": 52, "=": 53, "[UNK]": 54}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Punctuation()
    TextTokens.from_tokenizer(tok, TASK)  # the task itself reads
    with pytest.raises(TaskError, match="teacherless dummy"):
        TextTokens.from_tokenizer(tok, TASK).with_dummy(tok)
    assert TextTokens.from_tokenizer(tok, TASK).with_dummy(tok, required=False).dummy is None
