"""The training loop: device, autocast, accumulation, budgets, validation, checkpoints, resume.

One optimizer step consumes ``grad_accum_steps`` micro-batches on every process. The
schedule is a pure function of (step, progress), where progress is the larger of the
fractions of ``max_steps`` and ``max_time`` done, so a wall-clock budget needs no
special case. The budget clock counts training (and compilation), not validation or
checkpoint writes. Resuming restores the model, optimizer, data position and RNG states:
a resumed CPU fp32 run reproduces the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import math
import platform
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import charlm
from charlm import checkpoint as ckpt
from charlm import distributed
from charlm.config import JobConfig, component_specs, config_to_toml, resolve_device, to_dict
from charlm.data import PackedDataset, open_split
from charlm.errors import CharLMError, ConfigError, UsageError
from charlm.evaluate import evaluate_bpb
from charlm.model import ByteLM
from charlm.perf import matmul_peak_flops
from charlm.registry import get_registry
from charlm.runlog import RunLog, check_trackers, format_duration, progress_line

LN2 = math.log(2)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLoss(CharLMError):
    pass


def plugin_versions(job: JobConfig) -> dict[str, str]:
    """Versions of charlm, torch and of each plugin that provides a component of this job."""
    registry = get_registry()
    by_name = {p.name: p for p in registry.plugins}
    versions = {"charlm": charlm.__version__, "torch": str(torch.__version__), "python": platform.python_version()}
    for _, kind, spec in component_specs(job):
        plugin = by_name[registry.get(kind, spec.kind).plugin]
        versions[f"plugin:{plugin.name}"] = f"{plugin.distribution} {plugin.version}"
    return versions


def rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": np.random.get_state()[2],
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(state["numpy_pos"]), 0, 0.0))
    random.setstate((3, tuple(int(x) for x in state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StopSignal:
    """SIGINT/SIGTERM ask the loop to finish its step, checkpoint and exit."""

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    def __init__(self, job: JobConfig, resume: str | None = None):
        self.job = job
        if job.data.train is None:
            raise ConfigError("data.train: the path of a training split (.bin) is required to train")
        check_trackers(job.logging)
        device = resolve_device(job.device)
        self.dist, self.device = distributed.init_distributed(device)
        self.out_dir = Path(job.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.accum = job.grad_accum_steps(self.dist.world_size)
        self.versions = plugin_versions(job)

        self.train_data = PackedDataset(
            job.data.train, job.seq_len, job.micro_batch_size, job.seed, self.dist.rank, self.dist.world_size
        )
        self.val_split = open_split(job.data.val) if job.data.val and self._validates() else None
        self.val_starts = self._val_window_starts() if self.val_split is not None and job.logging.eval_every else None

        torch.manual_seed(job.seed)
        self.model = ByteLM(job.model, max_len=job.seq_len).to(self.device)
        self.optimizer = get_registry().create("optimizer", job.optimizer, model=self.model)
        self.schedule = get_registry().create("scheduler", job.scheduler)
        self.autocast_dtype = DTYPES[job.precision]
        self.scaler = torch.amp.GradScaler(self.device.type) if job.precision == "fp16" else None

        self.step = 0
        self.data_start: tuple[int, int] | dict = (0, 0)  # where this rank's batch stream starts
        self.elapsed = 0.0  # the budget clock
        self.tokens = 0
        if resume:
            self._resume(resume)
        elif (self.out_dir / "metrics.jsonl").exists() or ckpt.latest_good_checkpoint(self.ckpt_dir):
            raise UsageError(
                f"{self.out_dir} already holds a run; continue it with --resume auto, or set another out_dir"
            )
        self.forward = self._wrap(self.model)
        self.log = RunLog(self.out_dir, job.logging, to_dict(job), enabled=self.dist.is_main)

    def _val_window_starts(self) -> np.ndarray:
        """The fixed, seeded windows that validation during training scores, drawn once."""
        job = self.job
        span = len(self.val_split) - job.seq_len - 1
        if span < 0:
            raise CharLMError(f"{job.data.val}: the validation split is shorter than seq_len + 1 = {job.seq_len + 1} bytes")
        n_windows = max(1, job.logging.eval_bytes // job.seq_len)
        return np.random.default_rng(job.seed).integers(0, span + 1, size=n_windows)

    def _validates(self) -> bool:
        return self.job.logging.eval_every > 0 or self.job.logging.final_eval

    # ------------------------------------------------------------ set-up

    def _wrap(self, model: torch.nn.Module, compile: bool = True):
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if compile and self.job.compile is not False:
            model = torch.compile(model)
        return model

    def _resume(self, resume: str) -> None:
        path = ckpt.latest_good_checkpoint(self.ckpt_dir) if resume == "auto" else Path(resume)
        if path is None:
            self._resumed_from = None
            return
        payload = ckpt.load_checkpoint(path, map_location=self.device)
        saved = payload["config"]
        current = to_dict(self.job)
        for key in ("model", "seq_len", "micro_batch_size", "batch_size_tokens", "seed"):
            if saved.get(key) != current.get(key):
                raise ConfigError(
                    f"{key}: the job differs from the checkpoint it resumes ({path}): "
                    f"{saved.get(key)!r} there, {current.get(key)!r} here"
                )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.step = payload["step"]
        self.data_start = payload["data"]
        self.elapsed = payload["elapsed_s"]
        self.tokens = payload["tokens"]
        set_rng_state(payload["rng"])
        self._resumed_from = path

    # ------------------------------------------------------------ the loop

    def progress(self) -> float:
        job = self.job
        fractions = [0.0]
        if job.max_steps:
            fractions.append(self.step / job.max_steps)
        if job.max_time_s:
            fractions.append(self.elapsed / job.max_time_s)
        return min(1.0, max(fractions))

    def done(self) -> bool:
        job = self.job
        return bool(
            (job.max_steps is not None and self.step >= job.max_steps)
            or (job.max_time_s is not None and self.elapsed >= job.max_time_s)
        )

    def autocast(self):
        if self.job.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def train_step(self, batches) -> tuple[float, float]:
        """One optimizer step over ``accum`` micro-batches; returns (mean loss, grad norm)."""
        lr_factor = self.schedule(self.step, self.progress())
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor
        total = torch.zeros((), device=self.device)
        for i in range(self.accum):
            x, y = next(batches)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            sync = contextlib.nullcontext() if not self.dist.enabled or i == self.accum - 1 else self.forward.no_sync()
            with sync:
                with self.autocast():
                    logits, _ = self.forward(x)
                    # mean over the micro-batch, divided by accum: the sum is the big-batch mean
                    loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1)) / self.accum
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
            total += loss.detach()
        loss_value = distributed.all_reduce_mean(total.item(), self.dist, self.device)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.job.grad_clip if self.job.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm).item()
        # fp16's scaler skips steps with inf gradients by design; anything else non-finite is a failure
        if not math.isfinite(loss_value) or (self.scaler is None and not math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            what = "loss" if not math.isfinite(loss_value) else "gradient norm"
            value = loss_value if what == "loss" else grad_norm
            if self.job.on_nonfinite == "stop":
                raise NonFiniteLoss(
                    f"non-finite {what} ({value}) at step {self.step + 1}; the last good checkpoint is kept. "
                    'Lower optimizer.lr, raise grad_clip, or set on_nonfinite = "skip"'
                )
            self.log.line(f"warning: step {self.step + 1}: non-finite {what} ({value}); update skipped")
        elif self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += self.accum * self.job.micro_batch_size * self.job.seq_len * self.dist.world_size
        return loss_value, grad_norm

    @torch.no_grad()
    def validate(self) -> float:
        """Bits per byte on a fixed, seeded subset of validation windows."""
        job = self.job
        tokens, starts = self.val_split.tokens, self.val_starts
        n_windows = len(starts)
        self.model.eval()
        total, count = 0.0, 0
        for i in range(0, n_windows, job.micro_batch_size):
            chunk = np.stack([tokens[s : s + job.seq_len + 1] for s in starts[i : i + job.micro_batch_size]])
            batch = torch.from_numpy(chunk.astype(np.int64)).to(self.device)
            with self.autocast():
                logits, _ = self.model(batch[:, :-1])
            total += F.cross_entropy(logits.float().reshape(-1, 256), batch[:, 1:].reshape(-1), reduction="sum").item()
            count += batch[:, 1:].numel()
        self.model.train()
        return total / count / LN2

    def save(self) -> Path | None:
        if not self.dist.is_main:
            return None
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "data": self.batches.state_dict(),
            "elapsed_s": self.elapsed,
            "tokens": self.tokens,
            "rng": rng_state(),
            "config": to_dict(self.job),
            "versions": self.versions,
        }
        path = ckpt.step_path(self.ckpt_dir, self.step)
        ckpt.save_checkpoint(path, payload)
        ckpt.save_checkpoint(self.ckpt_dir / "last.pt", payload)
        ckpt.prune_checkpoints(self.ckpt_dir, self.job.checkpoint.keep_last)
        return path

    def _try_compile(self) -> None:
        """``compile = "auto"``: compile now, on a real batch, and fall back to eager on failure."""
        x, _ = self.train_data.batch(0, 0)
        try:
            with self.autocast():
                logits, _ = self.forward(x.to(self.device))
            logits.float().sum().backward()
        except Exception as exc:  # any compiler failure: the eager model is still correct
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self.log.line(f"warning: torch.compile failed ({type(exc).__name__}: {first}); training without it")
            self.forward = self._wrap(self.model, compile=False)
        self.optimizer.zero_grad(set_to_none=True)

    def header(self) -> None:
        job = self.job
        self.log.line(f"charlm {charlm.__version__} | " + " | ".join(f"{k} {v}" for k, v in self.versions.items() if k != "charlm"))
        n_params = self.model.num_parameters()
        self.log.line(
            f"device {self.device} | precision {job.precision} | compile {job.compile} | world size "
            f"{self.dist.world_size} | {n_params / 1e6:.2f}M parameters | grad accumulation {self.accum}"
        )
        if getattr(self, "_resumed_from", None):
            self.log.line(f"resumed from {self._resumed_from} at step {self.step}")
        for line in config_to_toml(job).splitlines():
            self.log.line(f"  {line}", console=False)

    def run(self) -> dict:
        job = self.job
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.toml").write_text(config_to_toml(job), encoding="utf-8")
        self.header()
        peak = matmul_peak_flops(str(self.device), torch.float32 if job.precision == "fp32" else self.autocast_dtype)
        flops_per_token = self.model.flops_per_byte(job.seq_len)
        self.batches = self.train_data.loader(num_workers=job.data.num_workers, start=self.data_start)
        self.model.train()
        if job.compile == "auto":
            t0 = time.perf_counter()
            self._try_compile()
            self.elapsed += time.perf_counter() - t0
        last = {"elapsed": self.elapsed, "tokens": self.tokens, "step": self.step}
        result = {"step": self.step}
        with StopSignal() as stop:
            while not self.done():
                t0 = time.perf_counter()
                loss, grad_norm = self.train_step(self.batches)
                self.elapsed += time.perf_counter() - t0
                record = None
                validate = bool(job.logging.eval_every) and self.step % job.logging.eval_every == 0 and self.val_split is not None
                if self.step % job.logging.log_every == 0 or validate or self.done():
                    # throughput over training time only: validation and checkpoints are not training
                    tok_s = (self.tokens - last["tokens"]) / max(self.elapsed - last["elapsed"], 1e-9)
                    record = {
                        "step": self.step,
                        "loss": loss,
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "tokens_per_s": tok_s,
                        "elapsed_s": self.elapsed,
                        "mfu": tok_s * flops_per_token / peak / self.dist.world_size,
                        "tokens": self.tokens,
                        "grad_norm": grad_norm,
                    }
                if validate:
                    record["val_bpb"] = self.validate()
                if job.checkpoint.every and self.step % job.checkpoint.every == 0:
                    self.save()
                if record is not None:
                    self.log.record(record)
                    self.log.line(progress_line(record, job.max_steps, self._eta(last)))
                    last = {"elapsed": self.elapsed, "tokens": self.tokens, "step": self.step}
                if distributed.any_rank(stop.received is not None, self.dist, self.device):
                    path = self.save()
                    self.log.line(
                        f"stopped by {stop.received or 'another rank'} at step {self.step}; checkpoint {path}; "
                        "continue with --resume auto"
                    )
                    result.update(step=self.step, interrupted=True)
                    return result
        self.save()
        result.update(step=self.step, elapsed_s=self.elapsed)
        if self.val_split is not None and job.logging.final_eval and self.dist.is_main:
            res = evaluate_bpb(self.model, self.val_split.tokens, job.seq_len, stride=job.seq_len, batch_size=job.micro_batch_size, device=self.device)
            self.log.record({"step": self.step, "val_bpb": res.bpb, "val_bytes": res.bytes_scored, "split": "full"})
            self.log.line(f"final: step {self.step} | val_bpb {res.bpb:.4f} on the whole split ({res.bytes_scored:,} bytes, stride {job.seq_len})")
            result["val_bpb"] = res.bpb
        self.log.line(f"done: {self.step} steps, {format_duration(self.elapsed)} of training, checkpoints in {self.ckpt_dir}")
        return result

    def _eta(self, last: dict) -> float | None:
        job = self.job
        if job.max_time_s is not None:
            eta = job.max_time_s - self.elapsed
            if job.max_steps is None:
                return max(0.0, eta)
        else:
            eta = float("inf")
        steps_done = self.step - last["step"]
        if job.max_steps is not None and steps_done:
            per_step = (self.elapsed - last["elapsed"]) / steps_done
            eta = min(eta, (job.max_steps - self.step) * per_step)
        return None if math.isinf(eta) else max(0.0, eta)

    def close(self) -> None:
        self.log.close()
        distributed.shutdown(self.dist)


def train(job: JobConfig, resume: str | None = None) -> dict:
    trainer = Trainer(job, resume=resume)
    try:
        result = trainer.run()
        # ranks leave together: gloo aborts a process that tears down while a peer still works
        distributed.barrier(trainer.dist)
        return result
    finally:
        trainer.close()
