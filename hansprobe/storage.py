"""The files of a run directory, below everything that interprets them: atomic writes, the
directory lock, publishing several files together, safetensors I/O (never a pickle), the metrics
log, weights loading by name and shape, the resume state, and a new run's config.json.

No pickle anywhere: tensors are safetensors, everything else JSON. Every file is written to a
temporary name beside its target, fsynced and moved into place with os.replace, so a crash leaves
either the old file or the new one, never half of one. (checkpoint.py builds models from these
files; interop.py writes imported ones; neither imports the other.)
"""
from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import shutil
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from hansprobe.errors import CheckpointError, ConfigError, HansprobeError, OutputError, os_error_line, shown
from hansprobe.validation import check_float, check_int, check_mapping, read_text_bounded

CONFIG, MODEL, METRICS, RESUME = "config.json", "model.safetensors", "metrics.jsonl", "resume.safetensors"
FORMAT = "hansprobe-checkpoint"
FORMAT_VERSION = 1


# --- atomic files -----------------------------------------------------------------------------
_UMASK = os.umask(0)
os.umask(_UMASK)
# What makes a file or directory recognisably the tool's own, so that clean-up removes nothing else: a
# temporary file is `.NAME.hansprobe-XXXXXXXX.tmp`, a staging directory `.hansprobe-staging-<32 hex>`.
TMP_MARK = "hansprobe-"
_TMP_NAME = re.compile(r"\..+\.hansprobe-[A-Za-z0-9_]{8}\.tmp")
STAGING_PREFIX = ".hansprobe-staging-"
_STAGING_NAME = re.compile(r"\.hansprobe-staging-[0-9a-f]{32}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all. An OS error (full disk, no such directory, a
    directory in the way, no permission) is one line naming `path`; the old file stays."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory; give a file path")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{TMP_MARK}", suffix=".tmp")
    except OSError as e:
        raise OutputError(os_error_line(e, path)) from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OutputError(os_error_line(e, path)) from None
        raise
    _fsync_dir(path.parent)  # make the rename itself durable


def json_bytes(obj) -> bytes:
    """The project's JSON files: indented, sorted keys, no NaN."""
    return (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def _tool_directory(directory: Path) -> bool:
    """A checkpoint, run or report directory, or one being written (its lock file beside it)."""
    marks = (CONFIG, METRICS, MODEL, RESUME, "report.json")
    return (any((directory / m).exists() for m in marks)
            or (directory.parent / f".{directory.name}.hansprobe-lock").exists())


def check_output_file(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse, in one line and before any work, a result file that would destroy something: a path
    inside a checkpoint, run or report directory (its files are the tool's own, read by later
    steps), an existing file without `overwrite`, and anything that is not a regular file or a new
    name — a directory, a FIFO, a device, a symbolic link (replacing it by rename would destroy what
    is there; writing through it would write somewhere else)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a directory; give a file path")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"cannot write {path}: {parent} is not a directory; choose another path")
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: its directory does not exist; create it first or choose another path")
    if _tool_directory(parent.resolve()):
        raise OutputError(f"cannot write {path}: {parent} is a checkpoint, run or report directory, whose files hansprobe "
                          "reads back; write the result elsewhere")
    if os.path.lexists(path):
        if path.is_symlink():
            raise OutputError(f"cannot write {path}: it is a symbolic link; give the path of a regular file")
        if not path.is_file():
            raise OutputError(f"cannot write {path}: it is not a regular file (a FIFO or a device); give a file path, "
                              "or print the result with --json")
        if not overwrite:
            raise OutputError(f"{path} exists; pass --overwrite to replace it")
    try:  # the directory takes a new file (not /proc, not read-only): found now, not after minutes of work
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.{TMP_MARK}", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OutputError(os_error_line(e, path)) from None
    return path


def write_output_file(path: str | Path, data: bytes, overwrite: bool = False) -> None:
    """A result file the user named: checked again (check_output_file), then written atomically."""
    atomic_write_bytes(check_output_file(path, overwrite), data)


def check_run_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Before any work: a checkpoint's --out may be new, empty or — with `overwrite` — a checkpoint
    directory hansprobe wrote (its config.json says so); nothing else is ever replaced. A symbolic
    link is refused (removing "it" would remove the link or its target's files), as is a file."""
    path = Path(path)
    if path.is_symlink():
        raise ConfigError(f"--out {path} is a symbolic link; give the directory itself")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file; give a directory for the checkpoint")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise ConfigError(f"output directory {path} exists and is not empty; pass --overwrite to replace it or "
                              "--resume to continue it")
        if not _written_by_us(path):
            raise ConfigError(f"--out {path} holds files hansprobe did not write (no checkpoint config.json there): "
                              "--overwrite replaces only a checkpoint directory; choose another --out")
    return path


def _written_by_us(directory: Path) -> bool:
    config = directory / CONFIG
    if not config.is_file() or config.is_symlink():
        return False
    try:
        doc = json.loads(read_text_bounded(config, "checkpoint config"))
    except (HansprobeError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT


@contextmanager
def run_lock(directory: str | Path):
    """Hold an exclusive lock on a run or report directory while writing it, so that two writers
    (two `train --resume`, a `train --overwrite` during a run, two reports into one --out) cannot
    interleave. `flock` on a lock file beside the directory (`.NAME.hansprobe-lock`, so that
    --overwrite can replace the directory itself); the OS releases it when the process dies."""
    directory = Path(directory).resolve()  # one lock per directory, however it is named (a symlink, "..")
    lock = directory.parent / f".{directory.name}.hansprobe-lock"
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    except OSError as e:
        raise OutputError(os_error_line(e, lock, "create") + " (hansprobe locks the --out directory there)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CheckpointError(f"{directory} is being written by another hansprobe process (train or report); wait for it "
                              "to finish, or write to another --out") from None
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def remove_stale_temporaries(run_dir: str | Path) -> None:
    """Temporary files of a write that was killed (`.NAME.hansprobe-XXXXXXXX.tmp`, regular files);
    they are never read, only cleaned up. Nothing else is touched."""
    for tmp in Path(run_dir).glob(".*.tmp"):
        if _TMP_NAME.fullmatch(tmp.name) and tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)


READY, READY_MAGIC = "READY", "hansprobe-staging 1"
PUBLISHED = ("report.json", "report.html")  # the only names a staging directory may switch into place


def publish_together(out_dir: str | Path, files: dict[str, bytes]) -> None:
    """Replace several files of `out_dir` as one change (report.json with the report.html drawn from
    it). A file rename is atomic, a pair of renames is not, so this is a small journal: every file
    is written and fsynced into a fresh staging directory `out_dir/.hansprobe-staging-<random>`
    (created by mkdir, which fails rather than reuse one), then a READY marker is written, then the
    files are renamed into place and the staging directory removed. A kill before READY leaves the
    old files (the staging directory is deleted by the next writer); a kill after READY is finished
    by the next writer or reader (`recover_staging`). Call under `run_lock(out_dir)`."""
    import secrets

    out_dir = Path(out_dir)
    if set(files) - set(PUBLISHED):
        raise ValueError(f"publish_together switches only {PUBLISHED}")
    recover_staging(out_dir)
    staging = out_dir / (STAGING_PREFIX + secrets.token_hex(16))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except OSError as e:
        raise OutputError(os_error_line(e, staging, "create")) from None
    try:
        for name, data in files.items():
            atomic_write_bytes(staging / name, data)
        atomic_write_bytes(staging / READY, "\n".join([READY_MAGIC, *files]).encode())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # nothing was switched: the old files stand
        raise
    recover_staging(out_dir)


def _our_staging(staging: Path) -> bool:
    """A staging directory this module made: its name, a real directory, and nothing inside but the
    files it writes (PUBLISHED, READY, its temporaries), none a link."""
    if not (_STAGING_NAME.fullmatch(staging.name) and staging.is_dir() and not staging.is_symlink()):
        return False
    return all(e.is_file() and not e.is_symlink() and (e.name in PUBLISHED or e.name == READY or _TMP_NAME.fullmatch(e.name))
               for e in staging.iterdir())


def recover_staging(out_dir: str | Path) -> None:
    """Finish or discard an interrupted `publish_together`, and remove stale temporary files. Only
    staging directories recognisably this module's are read or removed, and only the PUBLISHED
    names they list are moved, within `out_dir`: nothing in them is trusted as a path."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return
    for staging in sorted(out_dir.glob(STAGING_PREFIX + "*")):
        if not _our_staging(staging):
            continue  # not ours, or not as we leave it: left alone
        ready = staging / READY
        lines = ready.read_text(errors="replace").split("\n") if ready.is_file() else []
        if lines[:1] == [READY_MAGIC]:  # every file was complete: roll forward
            for name in lines[1:]:
                if name in PUBLISHED and (staging / name).is_file():
                    try:
                        os.replace(staging / name, out_dir / name)
                    except OSError as e:
                        raise OutputError(os_error_line(e, out_dir / name)) from None
            _fsync_dir(out_dir)
        shutil.rmtree(staging, ignore_errors=True)
    remove_stale_temporaries(out_dir)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise OutputError(os_error_line(e, path)) from None


def save_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; anything else (a pickle, a torch.save zip, a
    truncated file) is refused with a one-line error and never deserialised."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; the checkpoint directory is incomplete (re-save it or re-train)")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
    # Recognised by structure: 8 bytes of little-endian header length, then the JSON header ("{"),
    # which must fit in the file. Never by one byte: the first byte is the header length's low byte,
    # and 0x80 (a pickle's first byte) is a valid one (a header of 3,200 bytes starts 80 0c ...).
    header_len = struct.unpack("<Q", head[:8])[0] if len(head) >= 8 else -1
    if not (len(head) >= 9 and head[8:9] == b"{" and 0 < header_len and header_len + 8 <= size):
        if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":
            raise CheckpointError(
                f"{path} is a pickle/torch.save file, which hansprobe never loads (it can run code); "
                "convert trusted weights to safetensors (safetensors.torch.save_file)"
            )
        raise CheckpointError(f"{path} is not a complete safetensors file (truncated or corrupt); re-save it or re-train")
    try:
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:  # a name that is not UTF-8, which safe_open cannot take: the bytes, loaded by us
            from safetensors.torch import load as load_bytes

            with open(path, "rb") as f:
                data = f.read(size + 1)
            meta = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
            return load_bytes(data), meta
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for every malformation
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is not a valid safetensors file ({msg}); re-save it or re-train") from None
    return tensors, meta


def jsonable(x):
    """x made JSON-safe: numpy arrays to lists, numpy scalars to Python numbers, NaN and inf to null."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, str):
        try:
            x.encode("utf-8")
        except UnicodeEncodeError:  # a file name's bytes that are not UTF-8: escaped, so the JSON can be written
            return shown(x)
    return x


# --- config and metrics -----------------------------------------------------------------------
def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("hansprobe", "torch", "transformer-lens", "safetensors", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def append_metrics(run_dir: str | Path, row: dict) -> None:
    """One JSON line, flushed and fsynced; a torn last line from a kill is skipped by `read_metrics`."""
    path = Path(run_dir) / METRICS
    try:
        with open(path, "a") as f:
            f.write(json.dumps(row, sort_keys=True, allow_nan=False) + "\n")  # strict JSON: no NaN/Infinity tokens
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OutputError(os_error_line(e, path)) from None


MAX_METRICS_LINE = 1 << 20  # bytes: a training row is a few hundred; a longer "line" is not one of ours
MAX_METRICS_ROWS = 100_000  # the last rows kept: evaluations every 250 steps make a few dozen


def _metrics_value(v) -> bool:
    """A value a training row holds: a finite number (not a bool) or a list of them."""
    num = (lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x))
    return num(v) or (isinstance(v, list) and all(num(x) for x in v))


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The training log's rows, read a bounded line at a time (a huge or endless file fills no
    memory: the last MAX_METRICS_ROWS rows are kept). A row is kept when it is an object with a
    whole, non-negative "step", with its numeric fields only; anything else — a line torn by a kill
    mid-append, appended bytes, a number or a list, a row without a step — is skipped."""
    from collections import deque

    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    rows: deque = deque(maxlen=MAX_METRICS_ROWS)
    try:
        with open(path, "rb") as f:
            while True:
                line = f.readline(MAX_METRICS_LINE + 1)
                if not line:
                    break
                if len(line) > MAX_METRICS_LINE:  # skip the rest of an overlong line, a bounded read at a time
                    while line and not line.endswith(b"\n"):
                        line = f.readline(MAX_METRICS_LINE + 1)
                    continue
                try:
                    row = json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, ValueError, RecursionError):
                    continue
                step = row.get("step") if isinstance(row, dict) else None
                if isinstance(step, int) and not isinstance(step, bool) and step >= 0:
                    rows.append({k: v for k, v in row.items() if isinstance(k, str) and _metrics_value(v)})
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror}") from None
    return list(rows)


def truncate_metrics(run_dir: str | Path, last_step: int) -> None:
    """Keep the rows up to the resumed step, so a resumed run never logs an evaluation twice."""
    rows = [r for r in read_metrics(run_dir) if r.get("step", 0) <= last_step]
    atomic_write_bytes(Path(run_dir) / METRICS, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())


# --- model weights ----------------------------------------------------------------------------
def _natural(name: str) -> list:
    """Sort key with numbers in order: blocks.2 before blocks.10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def check_finite(tensors: dict, source) -> None:
    """Every weight finite: a NaN or inf weight makes every logit of the model undefined (and a tie
    check or the parity check would then report something else)."""
    bad = [k for k, v in tensors.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{source} holds weights that are not finite (NaN or inf) in {', '.join(bad[:3])}"
                              f"{' and more' if len(bad) > 3 else ''}: the model's outputs would be undefined; re-save "
                              "a finite model")


def load_weights(model, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Load a state dict after checking names and shapes, so a mismatch is one readable line."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors), key=_natural)
    extra = sorted(set(tensors) - set(expected), key=_natural)
    if missing or extra:
        parts = [f"{len(names)} {kind} ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''})"
                 for kind, names in (("missing", missing), ("unexpected", extra)) if names]
        raise CheckpointError(f"the weights in {source} do not match the model its config describes: "
                              f"{'; '.join(parts)}; the weights belong to another model or the file is incomplete")
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise CheckpointError(
                f"the weights in {source} do not match the model its config describes: {k} is "
                f"{tuple(tensors[k].shape)} in the file but {tuple(v.shape)} from the config; the weights belong to "
                "another model"
            )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)


def model_tensors(model) -> dict[str, torch.Tensor]:
    """The model's weights as its checkpoint loader reads them: its `checkpoint_tensors()` where it
    names them otherwise than its state dict (a fine-tuned text-format model: transformers' names,
    each tensor once, where the bridge's state dict names some twice), else the state dict."""
    return model.checkpoint_tensors() if hasattr(model, "checkpoint_tensors") else model.state_dict()


def load_model_tensors(model, tensors: dict[str, torch.Tensor], source) -> None:
    """`model_tensors`' inverse, strict."""
    if hasattr(model, "load_checkpoint_tensors"):
        model.load_checkpoint_tensors(tensors, source)
    else:
        load_weights(model, tensors, source)


def save_model(run_dir: str | Path, model, metadata: dict[str, str] | None = None, name: str = MODEL) -> None:
    save_safetensors(Path(run_dir) / name, model_tensors(model), metadata)


def new_config(task, objective, model: dict, train: dict | None, seed: int) -> dict:
    options = getattr(objective, "options", {})
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": task.to_dict(),
        "objective": objective.name,
        **({"objective_options": options} if options else {}),  # only where the objective has options
        "model": model,
        "d_vocab": task.d_vocab,
        "n_ctx": task.n_ctx,
        "train": train,
        "seed": seed,
        "versions": package_versions(),
        "step": 0,
        "metrics": {},
    }


# --- resume state -----------------------------------------------------------------------------
def save_resume(run_dir: str | Path, model, optimizer: torch.optim.Optimizer, step: int,
                extra: dict | None = None, heads=None) -> None:
    """Weights, AdamW moments, the step and the trainer's running sums (`extra`, JSON) in one
    file, so they can never disagree. `heads`: the multi-token extra heads, stored as heads.*."""
    tensors = {f"model.{k}": v for k, v in model_tensors(model).items()}
    if heads is not None:
        tensors.update({f"heads.{k}": v for k, v in heads.state_dict().items()})
    state = optimizer.state_dict()
    for idx, s in state["state"].items():
        for name, value in s.items():
            tensors[f"optim.{idx}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    # One metadata key: safetensors writes several keys in a random order, and the same run must
    # give the same bytes.
    meta = {"step": step, "param_groups": state["param_groups"], "extra": extra or {}}
    save_safetensors(Path(run_dir) / RESUME, tensors, {"hansprobe_resume": json.dumps(meta, sort_keys=True)})


def load_resume(run_dir: str | Path, model, optimizer: torch.optim.Optimizer, heads=None) -> tuple[int, dict]:
    path = Path(run_dir) / RESUME
    tensors, raw = load_safetensors(path)
    try:
        meta = json.loads(raw["hansprobe_resume"])
    except (KeyError, TypeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} has no step/optimizer metadata; it is not a hansprobe resume file") from None
    try:
        opt_state = _checked_resume_state(meta, tensors, optimizer)
    except HansprobeError as e:
        raise CheckpointError(f"{path}: {e}; the resume file is damaged — restore it, or train again with --overwrite") from None
    load_model_tensors(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    if heads is not None:
        load_weights(heads, {k[6:]: v for k, v in tensors.items() if k.startswith("heads.")}, path)
    device = next(model.parameters()).device
    opt_state = {i: {n: (t if n == "step" else t.to(device)) for n, t in s.items()} for i, s in opt_state.items()}
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    return int(meta["step"]), meta.get("extra", {})


ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")


def _checked_resume_state(meta, tensors: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> dict:
    """The resume metadata and optimizer tensors checked against the optimizer they will go into
    (torch's own `load_state_dict` accepts a damaged state silently or fails deep inside)."""
    check_mapping("resume metadata", meta)
    unknown = set(meta) - {"step", "param_groups", "extra"}
    if unknown or "step" not in meta or "param_groups" not in meta:
        raise CheckpointError(f"resume metadata must hold step, param_groups and extra; got keys {sorted(meta)}")
    check_int("resume step", meta["step"], 0)
    extra = check_mapping("resume extra", meta.get("extra", {}))
    if "loss_sum" in extra:
        check_float("resume loss_sum", extra["loss_sum"])
    if "loss_n" in extra:
        check_int("resume loss_n", extra["loss_n"], 0)
    want = optimizer.state_dict()["param_groups"]
    groups = meta["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(want):
        raise CheckpointError(f"param_groups must be a list of {len(want)} optimizer groups, got {str(groups)[:60]}")
    for i, (g, w) in enumerate(zip(groups, want)):
        check_mapping(f"param_groups[{i}]", g)
        if set(g) != set(w):
            raise CheckpointError(f"param_groups[{i}] has keys {sorted(g)}, expected {sorted(w)}")
        if g["params"] != w["params"]:
            raise CheckpointError(f"param_groups[{i}] lists other parameters than the model has")
        for k, v in g.items():
            if k in ("lr", "eps", "weight_decay"):
                check_float(f"param_groups[{i}].{k}", v, 0)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith(("model.", "heads.")):
            continue
        parts = k.split(".", 2)
        if len(parts) != 3 or parts[0] != "optim" or not parts[1].isdigit() or parts[2] not in ADAM_STATE:
            raise CheckpointError(f"unexpected tensor {k!r} (expected model.* or optim.N.{{{','.join(ADAM_STATE)}}})")
        idx = int(parts[1])
        if idx >= len(params):
            raise CheckpointError(f"optimizer state for parameter {idx}, but the model has {len(params)}")
        shape = () if parts[2] == "step" else tuple(params[idx].shape)
        if tuple(v.shape) != shape:
            raise CheckpointError(f"{k} has shape {tuple(v.shape)}, expected {shape}")
        state.setdefault(idx, {})[parts[2]] = v
    for idx, s in state.items():
        if set(s) != set(ADAM_STATE):
            raise CheckpointError(f"optimizer state of parameter {idx} lacks {sorted(set(ADAM_STATE) - set(s))}")
    return state
