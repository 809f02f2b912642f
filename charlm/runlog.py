"""What a run writes for people and scripts: the console/log-file lines and ``metrics.jsonl``.

``metrics.jsonl`` fields are public API: ``step``, ``loss`` (train, nats/byte), ``lr``,
``tokens_per_s``, ``elapsed_s``, and ``val_bpb`` on steps where validation ran.
Weights & Biases and TensorBoard receive the same records when the job configures them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from charlm.atomic import write_atomic
from charlm.config import LoggingConfig
from charlm.errors import ConfigError


def check_trackers(cfg: LoggingConfig) -> None:
    """Fail before training when a configured tracker is not installed."""
    if cfg.wandb_project:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError("logging.wandb_project: wandb is not installed (pip install 'charlm-toolkit[wandb]')") from None
    if cfg.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise ConfigError("logging.tensorboard: tensorboard is not installed (pip install 'charlm-toolkit[tensorboard]')") from None


def trim_metrics(path: Path, last_step: int) -> None:
    """Drop the records of steps after ``last_step`` (a resume replays them) and a final
    line cut short by a crash; rewritten atomically, and only when something changes."""
    if not path.is_file():
        return
    data = path.read_bytes()
    lines = data.split(b"\n")[:-1]  # the piece after the last newline is empty or cut short
    kept = [line for line in lines if _record_step(line) <= last_step]
    new = b"".join(line + b"\n" for line in kept)
    if new != data:
        write_atomic(path, new)


def _record_step(line: bytes) -> int:
    """A record's step; lines that are not records (never written by charlm) count as step 0 and stay."""
    try:
        step = json.loads(line).get("step", 0)
    except (ValueError, AttributeError):
        return 0
    return step if isinstance(step, int) else 0


class RunLog:
    """Lines to the console and to ``OUT_DIR/train.log``; records to ``metrics.jsonl`` and trackers."""

    def __init__(self, out_dir: Path, cfg: LoggingConfig, config_dict: dict, enabled: bool = True, keep_through_step: int = 0):
        self.enabled = enabled
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        trim_metrics(out_dir / "metrics.jsonl", keep_through_step)
        self._log = open(out_dir / "train.log", "a", encoding="utf-8")
        self._metrics = open(out_dir / "metrics.jsonl", "a", encoding="utf-8")
        self._wandb = self._tb = None
        if cfg.wandb_project:
            import wandb

            self._wandb = wandb.init(project=cfg.wandb_project, name=out_dir.name, config=config_dict)
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out_dir / "tensorboard"))

    def line(self, text: str, console: bool = True) -> None:
        if not self.enabled:
            return
        if console:
            print(text, flush=True)
        self._log.write(text + "\n")
        self._log.flush()

    def record(self, record: dict) -> None:
        if not self.enabled:
            return
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self._wandb is not None:
            self._wandb.log(numbers, step=record["step"])
        if self._tb is not None:
            for key, value in numbers.items():
                self._tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if not self.enabled:
            return
        self._log.close()
        self._metrics.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._tb is not None:
            self._tb.close()


def _precision(name: str, device) -> str:
    """The precision a run trains in; ``auto``'s choice says it was automatic ("bf16 (auto)")."""
    from charlm.config import resolve_precision

    resolved = resolve_precision(name, device)
    return f"{resolved} (auto)" if name == "auto" else resolved


DATA_LINE = "data "  # train.log's record of the training data's version (read by `charlm info`)


def header_lines(versions: dict[str, str], job, device, world_size: int, n_params: int, accum: int) -> list[str]:
    """The run's first console lines: versions, then device, precision and size, then the
    training data's version as its ``meta.json`` records it (sha256, where it came from)."""
    from charlm.data import split_provenance

    lines = [
        f"charlm {versions['charlm']} | " + " | ".join(f"{k} {v}" for k, v in versions.items() if k != "charlm"),
        f"device {device} | precision {_precision(job.precision, device)} | compile {job.compile} | world size {world_size} | "
        f"{n_params / 1e6:.2f}M parameters | grad accumulation {accum}",
    ]
    data = split_provenance(job.data.train)
    if data is not None:
        lines.append(f"{DATA_LINE}{job.data.train} sha256 {data['sha256']} | source {json.dumps(data['source'])}")
    return lines


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def eta_seconds(
    max_steps: int | None, max_time_s: float | None, step: int, elapsed_s: float, since_step: int, since_elapsed_s: float
) -> float | None:
    """Seconds left: by the time budget, or by the step rate since (``since_step``, ``since_elapsed_s``)."""
    eta = max_time_s - elapsed_s if max_time_s is not None else math.inf
    if max_time_s is not None and max_steps is None:
        return max(0.0, eta)
    if max_steps is not None and step > since_step:
        per_step = (elapsed_s - since_elapsed_s) / (step - since_step)
        eta = min(eta, (max_steps - step) * per_step)
    return None if math.isinf(eta) else max(0.0, eta)


def progress_line(record: dict, max_steps: int | None, eta_s: float | None) -> str:
    step = f"step {record['step']}" + (f"/{max_steps}" if max_steps else "")
    parts = [
        step,
        f"loss {record['loss']:.4f}",
        f"bpb {record['loss'] / math.log(2):.3f}",
        f"lr {record['lr']:.2e}",
        f"{record['tokens_per_s'] / 1000:.1f}k tok/s",
        f"MFU {100 * record['mfu']:.1f}%",
        f"{format_duration(record['elapsed_s'])} elapsed",
    ]
    if "val_bpb" in record:
        parts.insert(3, f"val_bpb {record['val_bpb']:.4f}")
    if eta_s is not None:
        parts.append(f"ETA {format_duration(eta_s)}")
    return " | ".join(parts)
