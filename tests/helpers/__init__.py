"""What the tests share, by kind: tiny configs, paths and the CLI in-process (configs), models of known
behaviour (rule_models), reference forwards of models trained elsewhere (references), killable
processes (processes) and hand-written measurement summaries (summaries). `from helpers import X`
reads any of them (conftest.py puts tests/ on the path)."""
from helpers.configs import (CHECKPOINTS, REPO, SHARED_NTF, TINY_REPORT, TINY_TASK_ARGS, TINY_TRAIN, TINY_TRAIN_ARGS,
                             run_cli, shared_ntf, tiny_model, tiny_model_cfg, tiny_task, tiny_train_cfg)
from helpers.processes import cli_child, forkserver
from helpers.references import (nanogpt_reference_logits, nanogpt_state_dict, ntf_finetune_state_dict, ntf_reference_logits,
                                ntf_state_dict, path_star_bpe, save_text_causal_lm, save_tiny_causal_lm)
from helpers.rule_models import DecisionModel, OracleModel, RuleModel, edge_order_noise, match_rows, structure_from_tokens
from helpers.summaries import heads_summary, typed_cells

__all__ = ["CHECKPOINTS", "REPO", "SHARED_NTF", "TINY_REPORT", "TINY_TASK_ARGS", "TINY_TRAIN", "TINY_TRAIN_ARGS",
           "run_cli", "shared_ntf", "tiny_model", "tiny_model_cfg", "tiny_task", "tiny_train_cfg", "cli_child",
           "forkserver", "nanogpt_reference_logits", "save_tiny_causal_lm", "nanogpt_state_dict", "ntf_reference_logits", "ntf_state_dict",
           "path_star_bpe", "save_text_causal_lm", "ntf_finetune_state_dict",
           "DecisionModel", "OracleModel", "RuleModel", "edge_order_noise", "match_rows", "structure_from_tokens",
           "heads_summary", "typed_cells"]
