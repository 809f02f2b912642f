"""``charlm info PATH [--json]``: what a checkpoint, a run directory or an exported artefact holds.

Format, sha256 of the file, parameter count, step and tokens seen (checkpoints), validation
bits/byte (a run directory's ``metrics.jsonl``), the versions it was made with, and the job
config. Nothing is executed: checkpoints load with ``weights_only``, artefacts are read for
their metadata only, and the parameters are counted on a model built on the meta device.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from charlm.errors import CharLMError, ConfigError


def add_parser(sub):
    parser = sub.add_parser("info", help="show what a checkpoint, run directory or exported artefact holds")
    parser.add_argument("path", help="a checkpoint (.pt), a run directory, or an int8/safetensors artefact")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=info)


def info(args) -> int:
    facts = describe(Path(args.path))
    if args.json:
        print(json.dumps(facts, indent=2))
    else:
        print(format_facts(facts), end="")
    return 0


def describe(path: Path) -> dict:
    """Recognised as ``charlm eval/generate --checkpoint`` recognise it: an artefact of an
    installed exporter, else a run directory, else a checkpoint."""
    from charlm.loading import recognising_exporter

    if not path.exists():
        raise CharLMError(f"{path}: no such file or directory")
    found = recognising_exporter(path)
    if found is not None:
        return describe_artifact(path, found[0])
    return describe_run(path) if path.is_dir() else describe_checkpoint(path)


def describe_checkpoint(path: Path) -> dict:
    from charlm.checkpoint import load_checkpoint

    payload = load_checkpoint(path)
    return {
        "path": str(path),
        "format": f"charlm checkpoint v{payload['format_version']}",
        "sha256": sha256(path),
        **model_facts(path, payload.get("config")),
        "step": payload.get("step"),
        "tokens": payload.get("tokens"),
        "versions": payload.get("versions", {}),
    }


def describe_artifact(path: Path, fmt: str) -> dict:
    """An exported artefact; charlm's weights formats (int8, safetensors) also record the job."""
    from charlm.artifact import read_metadata

    facts = {"path": str(path), "format": f"{fmt} artefact", "sha256": sha256(path) if path.is_file() else None}
    metadata = read_metadata(path) if path.is_file() else None
    if metadata is None or "config" not in metadata:  # another exporter's format: what it is, no more
        return {**facts, "parameters": None, "step": None, "tokens": None, "versions": {}}
    try:
        config = json.loads(metadata["config"])
    except ValueError:
        raise CharLMError(f"{path}: artefact metadata has no valid 'config'") from None
    return {
        **facts,
        "format": f"charlm artefact v{metadata.get('format_version')}, {metadata.get('weights')} weights",
        **model_facts(path, config),
        "step": None,  # artefacts do not record training progress
        "tokens": None,
        "versions": {"charlm": metadata.get("charlm_version")},
    }


def describe_run(run_dir: Path) -> dict:
    from charlm.checkpoint import newest_loadable_checkpoint

    checkpoint, _, _ = newest_loadable_checkpoint(run_dir / "checkpoints")
    if checkpoint is None:
        raise CharLMError(f"{run_dir}: no readable checkpoint in {run_dir / 'checkpoints'}")
    facts = {"run_dir": str(run_dir), **describe_checkpoint(checkpoint)}
    facts.update(last_validation(run_dir / "metrics.jsonl", facts["step"]))
    facts.update(recorded_data(run_dir / "train.log"))
    return facts


def recorded_data(log: Path) -> dict:
    """The training data's version as the run recorded it when it started (train.log)."""
    from charlm.runlog import DATA_LINE

    if not log.is_file():
        return {}
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(DATA_LINE):
            return {"data": line[len(DATA_LINE) :]}
    return {}


def last_validation(metrics: Path, step: int | None) -> dict:
    """``val_bpb`` and its step from the last validation at or before ``step`` (the final eval wins)."""
    if not metrics.is_file():
        return {}
    found = {}
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by a crash
        if "val_bpb" in record and (step is None or record.get("step", 0) <= step):
            found = {"val_bpb": record["val_bpb"], "val_step": record.get("step")}
    return found


def model_facts(path: Path, config: dict | None) -> dict:
    """The job config (normalised) and the parameter count of the model it builds."""
    import torch

    from charlm.config import config_from_dict, to_dict
    from charlm.model import ByteLM

    if not isinstance(config, dict):
        raise CharLMError(f"{path}: holds no job config")
    try:
        job = config_from_dict(config, validate=False)
    except ConfigError as exc:  # e.g. a block from a plugin that is not installed here
        raise ConfigError(f"{path}: {exc}") from None
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        model = ByteLM(job.model, max_len=job.seq_len)
    return {"parameters": sum(p.numel() for p in model.parameters()), "config": to_dict(job)}


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def format_facts(facts: dict) -> str:
    from charlm.config import config_from_dict, config_to_toml

    def count(n):
        return "not recorded" if n is None else f"{n:,}"

    rows = [("run", facts["run_dir"])] if "run_dir" in facts else []
    rows += [
        ("path", facts["path"]),
        ("format", facts["format"]),
        ("sha256", facts["sha256"] or "not computed (a directory)"),
        ("parameters", count(facts["parameters"])),
        ("step", count(facts["step"])),
        ("tokens seen", count(facts["tokens"])),
    ]
    if "val_bpb" in facts:
        rows.append(("val bits/byte", f"{facts['val_bpb']:.4f} (metrics.jsonl, step {facts['val_step']})"))
    if "data" in facts:
        rows.append(("data", facts["data"]))
    rows.append(("made with", ", ".join(f"{k} {v}" for k, v in facts["versions"].items()) or "not recorded"))
    text = "".join(f"{key:<14}{value}\n" for key, value in rows)
    if "config" not in facts:
        return text
    return text + "\n# config\n" + config_to_toml(config_from_dict(facts["config"], validate=False))
