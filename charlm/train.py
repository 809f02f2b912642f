"""The training loop: device, autocast, accumulation, budgets, validation, checkpoints, resume.

One optimizer step consumes ``grad_accum_steps`` micro-batches on every process. The
schedule is a pure function of (step, progress), where progress is the larger of the
fractions of ``max_steps`` and ``max_time`` done, so a wall-clock budget needs no
special case. The budget clock counts training (and compilation), not validation or
checkpoint writes. Resuming restores the model, optimizer, data position and RNG states
(``TrainState``): a resumed CPU fp32 run reproduces the uninterrupted one exactly.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import attrs
import torch

from charlm import checkpoint as ckpt
from charlm import distributed
from charlm.config import JobConfig, config_to_toml, resolve_device, resolve_precision, to_dict
from charlm.data import PackedDataset, open_split, verify_split
from charlm.errors import CharLMError, ConfigError, UsageError
from charlm.evaluate import evaluate_bpb, random_windows, score_windows
from charlm.model import ByteLM
from charlm.perf import matmul_peak_flops
from charlm.registry import get_registry
from charlm.runlog import RunLog, check_trackers, eta_seconds, format_duration, header_lines, progress_line
from charlm.stopsignal import StopSignal
from charlm.train_state import TrainState, check_resumable, plugin_versions
from charlm.train_step import NonFiniteLoss, TrainStep


class Trainer:
    def __init__(self, job: JobConfig, resume: str | None = None, restart: bool = False):
        self.job = job
        if job.data.train is None:
            raise ConfigError("data.train: the path of a training split (.bin) is required to train")
        check_trackers(job.logging)
        self.dist, self.device = distributed.init_distributed(resolve_device(job.device), job.distributed.timeout_s)
        self.out_dir = Path(job.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.accum = job.grad_accum_steps(self.dist.world_size)
        self.versions = plugin_versions(job)

        if job.data.verify == "sha256":  # the size is checked on every open; the content when asked
            for split in (job.data.train, job.data.val):
                if split:
                    verify_split(split, full=True)
        self.train_data = PackedDataset(
            job.data.train, job.seq_len, job.micro_batch_size, job.seed, self.dist.rank, self.dist.world_size, self.accum
        )
        validates = job.logging.eval_every > 0 or job.logging.final_eval
        self.val_split = open_split(job.data.val) if job.data.val and validates else None
        self.val_starts = None  # the fixed windows that validation during training scores, drawn once
        if self.val_split is not None and job.logging.eval_every:
            self.val_starts = random_windows(self.val_split.tokens, job.seq_len, job.logging.eval_bytes, job.seed, job.data.val)

        torch.manual_seed(job.seed)
        self.model = ByteLM(job.model, max_len=job.seq_len).to(self.device)
        self.fsdp = self.dist.enabled and job.distributed.strategy == "fsdp"
        if self.fsdp:  # before the optimizer: it holds the sharded parameters
            from charlm import fsdp  # torch.distributed.fsdp and DCP: imported by FSDP runs only

            fsdp.shard_model(self.model, resolve_precision(job.precision, self.device))
        self.optimizer = get_registry().create("optimizer", job.optimizer, model=self.model)
        if self.fsdp:
            fsdp.shard_optimizer(self.optimizer)
        self.schedule = get_registry().create("scheduler", job.scheduler)
        self.train_step = TrainStep(self.model, self.optimizer, job, self.dist, self.device, self.accum)

        self.state = TrainState()
        self.resume_notes: list[str] = []  # what the resume passed over or changed, for train.log
        self.resumed_from = self._resume(resume, restart) if resume else None
        holds_run = not resume and ((self.out_dir / "metrics.jsonl").exists() or ckpt.checkpoint_files(self.ckpt_dir))
        # rank 0's verdict, and a rendezvous: no rank looks after rank 0 has begun to write
        if distributed.from_main(bool(holds_run), self.dist):
            raise UsageError(f"{self.out_dir} already holds a run; continue it with --resume auto, or set another out_dir")
        self.batches = self.train_data.loader(num_workers=job.data.num_workers, start=self.state.data)
        # metrics.jsonl keeps the steps up to the one resumed from: replayed steps are logged once
        self.log = RunLog(self.out_dir, job.logging, to_dict(job), self.dist.is_main, keep_through_step=self.state.step)

    # ------------------------------------------------------------ set-up

    def _resume(self, resume: str, restart: bool) -> Path | None:
        """Load what ``--resume`` names (see ``checkpoint.resume_point``); its path, or None for step 0."""
        path, payload, self.resume_notes = self._resume_point(resume, restart)
        if path is None:
            return None
        changes = check_resumable(payload["config"], to_dict(self.job), path)
        self.resume_notes += [f"resume changes {change}" for change in changes]
        if self.fsdp:  # a whole payload (file or DCP directory), sharded on the way in
            from charlm import fsdp

            with fsdp.loading_into(self.model, self.optimizer, self.job) as (model, optimizer):
                self.state = TrainState.from_payload(payload, model, optimizer, source=path)
        else:
            self.state = TrainState.from_payload(payload, self.model, self.optimizer, source=path)
        ckpt.restore_rng(self.state.rng)
        return path

    def _resume_point(self, resume: str, restart: bool) -> tuple[Path | None, dict | None, list[str]]:
        """Rank 0 chooses the checkpoint (setting damaged ones aside); the other ranks load the one
        it chose, never a file that rank 0 is renaming while they look."""
        choice = None
        if self.dist.is_main:
            try:
                path, payload, notes = ckpt.resume_point(resume, self.ckpt_dir, restart, map_location=self.device)
                choice = ("path", path and str(path))
            except CharLMError as exc:
                choice = ("error", str(exc))
                raise
            finally:
                distributed.from_main(choice, self.dist)
            return path, payload, notes
        kind, value = distributed.from_main(choice, self.dist) or ("error", "rank 0 could not choose a checkpoint")
        if kind == "error":
            raise CharLMError(value)
        return (Path(value), ckpt.load_checkpoint(value, self.device), []) if value else (None, None, [])

    def start(self) -> None:
        """Write the run's config and header; compile when asked. Before the first step."""
        job, state = self.job, self.state
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.toml").write_text(config_to_toml(job), encoding="utf-8")
        n_params = self.model.num_parameters()
        for line in header_lines(self.versions, job, self.device, self.dist.world_size, n_params, self.accum):
            self.log.line(line)
        if self.resumed_from is not None:
            self.log.line(f"resumed from {self.resumed_from} at step {state.step}")
        for note in self.resume_notes:
            self.log.line(note)
        for line in config_to_toml(job).splitlines():
            self.log.line(f"  {line}", console=False)
        self.peak_flops = matmul_peak_flops(str(self.device), self.train_step.amp_dtype or torch.float32)
        self.flops_per_token = self.model.flops_per_byte(job.seq_len)
        self.model.train()
        if job.compile == "auto":
            t0 = time.perf_counter()
            failure = self.train_step.try_compile(self.train_data.batch(0, 0)[0])
            if failure:
                self.log.line(f"warning: torch.compile failed ({failure}); training without it")
            state.elapsed_s += time.perf_counter() - t0
        self.last_logged = attrs.evolve(state)  # the state at the previous log line: rates and ETA

    # ------------------------------------------------------------ the loop

    def run(self) -> dict:
        self.start()
        with StopSignal() as stop:
            while not self.state.finished(self.job):
                loss, grad_norm = self.step()
                val_bpb = self.maybe_validate()
                self.maybe_log(loss, grad_norm, val_bpb)
                self.maybe_checkpoint()
                if self.should_stop(stop):
                    return self.stopped(stop.received)
        return self.finish()

    def step(self) -> tuple[float, float]:
        """One optimizer step; returns (mean loss, grad norm)."""
        job, state = self.job, self.state
        t0 = time.perf_counter()
        loss, grad_norm, skipped = self.train_step(self.batches, self.schedule(state.step, state.progress(job)))
        if skipped and job.on_nonfinite == "stop":
            raise NonFiniteLoss(
                f"{skipped} at step {state.step + 1}; the last good checkpoint is kept. "
                'Lower optimizer.lr, raise grad_clip, or set on_nonfinite = "skip"'
            )
        if skipped:
            self.log.line(f"warning: step {state.step + 1}: {skipped}; update skipped")
        state.step += 1
        state.tokens += self.accum * job.micro_batch_size * job.seq_len * self.dist.world_size
        state.data = self.batches.state_dict()
        state.elapsed_s += time.perf_counter() - t0
        return loss, grad_norm

    def validate(self) -> float:
        """Bits per byte on the fixed, seeded validation windows drawn at start."""
        seq_len = self.job.seq_len
        nats = score_windows(
            self.model, self.val_split.tokens, self.val_starts, seq_len,
            batch_size=self.job.micro_batch_size, device=self.device, amp_dtype=self.train_step.amp_dtype,
        )
        return nats / (len(self.val_starts) * seq_len) / math.log(2)

    def maybe_validate(self) -> float | None:
        every = self.job.logging.eval_every
        if self.val_starts is None or self.state.step % every:
            return None
        return self.validate()

    def maybe_log(self, loss: float, grad_norm: float, val_bpb: float | None) -> None:
        job, state, last = self.job, self.state, self.last_logged
        if state.step % job.logging.log_every and val_bpb is None and not state.finished(job):
            return
        # throughput over training time only: validation and checkpoints are not training
        tok_s = (state.tokens - last.tokens) / max(state.elapsed_s - last.elapsed_s, 1e-9)
        record = {
            "step": state.step,
            "loss": loss,
            "lr": self.optimizer.param_groups[0]["lr"],
            "tokens_per_s": tok_s,
            "elapsed_s": state.elapsed_s,
            "mfu": tok_s * self.flops_per_token / self.peak_flops / self.dist.world_size,
            "tokens": state.tokens,
            "grad_norm": grad_norm,
        }
        if val_bpb is not None:
            record["val_bpb"] = val_bpb
        self.log.record(record)
        eta = eta_seconds(job.max_steps, job.max_time_s, state.step, state.elapsed_s, last.step, last.elapsed_s)
        self.log.line(progress_line(record, job.max_steps, eta))
        self.last_logged = attrs.evolve(state)

    def maybe_checkpoint(self) -> None:
        every = self.job.checkpoint.every
        if every and self.state.step % every == 0:
            self.save()

    def should_stop(self, stop: StopSignal) -> bool:
        """A signal on any rank stops every rank after the same step."""
        return distributed.any_rank(stop.received is not None, self.dist, self.device)

    def save(self) -> Path | None:
        """Checkpoint the state (rank 0 writes; under FSDP every rank its shards); non-finite
        weights are never saved, on any rank."""
        if self.fsdp:  # each rank sees its shards: all must agree
            from charlm.fsdp import local

            finite = not distributed.any_rank(not all(local(p).isfinite().all() for p in self.model.parameters()), self.dist, self.device)
        else:
            finite = torch.stack([p.isfinite().all() for p in self.model.parameters()]).all()
        if not finite:
            raise NonFiniteLoss(f"non-finite weights after step {self.state.step}; the last good checkpoint is kept. Lower optimizer.lr")
        if self.fsdp:
            return self.save_sharded()
        if not self.dist.is_main:
            return None
        self.state.rng = ckpt.capture_rng()
        payload = self.state.to_payload(self.model, self.optimizer, to_dict(self.job), self.versions)
        path = ckpt.step_path(self.ckpt_dir, self.state.step)
        ckpt.save_checkpoint(path, payload)
        ckpt.save_checkpoint(self.ckpt_dir / "last.pt", payload)
        ckpt.prune_checkpoints(self.ckpt_dir, self.job.checkpoint.keep_last)
        return path

    def save_sharded(self) -> Path:
        """An FSDP checkpoint: a DCP directory per step; it replaces ``last.pt`` as the newest."""
        from charlm import dcp_checkpoint

        self.state.rng = ckpt.capture_rng()
        payload = self.state.to_payload(self.model, self.optimizer, to_dict(self.job), self.versions)
        del payload["model"], payload["optimizer"]  # in the DCP shards
        path = ckpt.step_path(self.ckpt_dir, self.state.step, dcp_checkpoint.SUFFIX)
        dcp_checkpoint.save(path, payload, self.model, self.optimizer, self.dist)
        if self.dist.is_main:
            (self.ckpt_dir / "last.pt").unlink(missing_ok=True)  # older, from a run before this one
            ckpt.prune_checkpoints(self.ckpt_dir, self.job.checkpoint.keep_last)
        return path

    def stopped(self, signal_name: str | None) -> dict:
        path = self.save()
        by = signal_name or "another rank"
        self.log.line(f"stopped by {by} at step {self.state.step}; checkpoint {path}; continue with --resume auto")
        return {"step": self.state.step, "interrupted": True}

    def finish(self) -> dict:
        job, state = self.job, self.state
        self.save()
        result = {"step": state.step, "elapsed_s": state.elapsed_s}
        if self.val_split is not None and job.logging.final_eval:
            # under FSDP every forward gathers weights on all ranks: each scores every window
            res = evaluate_bpb(
                self.model, self.val_split.tokens, job.seq_len, job.seq_len, job.micro_batch_size, self.device,
                dist=None if self.fsdp else self.dist,
            )
            self.log.record({"step": state.step, "val_bpb": res.bpb, "val_bytes": res.bytes_scored, "split": "full"})
            where = f"the whole split ({res.bytes_scored:,} bytes, stride {job.seq_len})"
            self.log.line(f"final: step {state.step} | val_bpb {res.bpb:.4f} on {where}")
            result["val_bpb"] = res.bpb
        self.log.line(f"done: {state.step} steps, {format_duration(state.elapsed_s)} of training, checkpoints in {self.ckpt_dir}")
        return result

    def close(self) -> None:
        self.log.close()
        distributed.shutdown(self.dist)


def train(job: JobConfig, resume: str | None = None, restart: bool = False) -> dict:
    with distributed.peer_failures():
        trainer = Trainer(job, resume=resume, restart=restart)
        try:
            result = trainer.run()
            # ranks leave together: gloo aborts a process that tears down while a peer still works
            distributed.barrier(trainer.dist)
            return result
        finally:
            trainer.close()
