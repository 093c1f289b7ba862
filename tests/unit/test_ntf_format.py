import pytest
import torch

from hansprobe.errors import TaskError
from hansprobe.tasks import PathStar, format_ntf_lines, parse_ntf_lines, read_ntf, write_ntf
from hansprobe.tasks.ntf_format import infer_task

from helpers import shared_ntf

FILES = ["deg_2_path_5_nodes_50_test_20000.txt", "deg_2_path_3_nodes_50_test_20000.txt",
         "deg_5_path_3_nodes_50_test_20000.txt"]


@pytest.mark.parametrize("name", FILES)
def test_shared_files_parse_and_write_back_identical(name, tmp_path):
    path = shared_ntf(name)
    batch = read_ntf(path)
    assert len(batch) == 20000
    out = tmp_path / name
    write_ntf(out, batch)
    assert out.read_bytes() == path.read_bytes()
    # the structure agrees with the tokens: the decision token is the goal arm's candidate
    rows = torch.arange(len(batch))
    assert (batch.target[:, 1] == batch.candidates[rows, batch.goal_arm]).all()


def test_generated_graphs_round_trip_through_text():
    task = PathStar(3, 4, 40)
    b = task.generate(300, 9)
    back = parse_ntf_lines(format_ntf_lines(b), task)
    for field in ("prefix", "target", "goal_arm", "arms", "edge_parent", "edge_child", "node_arm"):
        assert torch.equal(getattr(b, field), getattr(back, field)), field


GOOD = "32,3|16,12|3,19|32,34|34,6|6,16|19,47|47,28/32,12=32,34,6,16,12"
TASK = PathStar(2, 5, 50)


@pytest.mark.parametrize("line,needle", [
    (GOOD.replace("=", ";"), "no '='"),
    (GOOD.replace("/", "|", 1).replace("/", ""), "no '/'"),
    (GOOD.replace("47,28", "47,99"), "outside 0..49"),
    (GOOD.replace("16,12|", ""), "7 edges"),
    (GOOD.replace("=32,34,6,16,12", "=32,3,19,47,12"), "not the path"),
    (GOOD.replace("=32,34,6,16,12", "=32,34,6,12"), "path of 4 nodes"),
    (GOOD.replace("6,16|", "6,19|"), "two parents"),
    (GOOD.replace("32,12=", "32,16="), "does not end at the goal"),
    (GOOD.replace("32,3|", "32,a|"), "not comma-separated integers"),
])
def test_malformed_lines_are_reported_with_their_line_number(line, needle):
    lines = [GOOD, GOOD, line]
    with pytest.raises(TaskError, match=f"line 3: .*{needle}"):
        parse_ntf_lines(lines, TASK)


def test_infer_task_from_the_file_name_or_ask_for_nodes():
    assert infer_task(GOOD, None, "x/deg_2_path_5_nodes_50_test.txt") == TASK
    with pytest.raises(TaskError, match="pass --nodes"):
        infer_task(GOOD, None, "mine.txt")


def test_file_of_another_task_is_refused(tmp_path):
    f = tmp_path / "g.txt"
    f.write_text(GOOD + "\n")
    with pytest.raises(TaskError, match=r"holds G\(2,5\) graphs but the model was trained on G\(5,5\)"):
        read_ntf(f, task=PathStar(5, 5, 50))
