"""Will it fit? A memory estimate of a training job, an evaluation or a generation, compared
with what the device has, so that a size that cannot fit fails at once with one line naming
the key or flag to lower, instead of an allocator traceback seconds or minutes later.

The estimate is a floor, not a forecast: it counts what the run must hold at its peak and
leaves out what varies (allocator slack, the autograd graph's small tensors, data loader
workers, torch itself). So a job it rejects cannot run; a job it accepts may still be tight.
It counts, in bytes:

- parameters (fp32) of the built-in blocks: per layer the attention projections
  (q and out: d_model^2 each; k and v: d_model * n_kv_head * head_dim each) and a gated MLP
  (3 * d_model * hidden, hidden 8/3 d_model unless ``model.mlp.hidden``); a plugin block is
  counted as this one. Plus the byte embedding, the untied head and the n-gram tables
  (``sum(ngram_buckets) * ngram_width``);
- gradients: one fp32 value per parameter (the n-gram tables' gradient is dense);
- optimizer state: AdamW two values per parameter; Muon one for the blocks' matrices and
  AdamW's two for the rest; an optimizer from a plugin none (unknown);
- activations kept for the backward pass: 16 values per byte per layer of width d_model
  (the built-in block keeps about 17: the norms' inputs, q/k/v, the attention output, the
  MLP's two hidden halves), 2 bytes each under bf16/fp16 autocast, else 4; plus the logits
  and their gradient (2 * 256 fp32 values per byte); attention scores are not counted
  (scaled_dot_product_attention's fused kernels do not keep them);
- the rotary tables of ``seq_len`` positions, and the starts (int64) of the validation
  windows drawn once for ``logging.eval_bytes``;
- inference: one layer's working set at a time (12 d_model values per byte) and the logits;
  generation's state: keys and values of every layer for the model's context, per sample,
  and the samples themselves when they are printed whole (``--num-samples`` > 1).

Available memory: a CUDA device's free memory (``torch.cuda.mem_get_info``, plus what
torch's allocator holds unused); otherwise the host's (``MemAvailable`` in /proc/meminfo,
else ``os.sysconf``), which MPS shares too, divided among the processes a launcher starts
on the host (``LOCAL_WORLD_SIZE``).

This module imports torch only to ask a CUDA device, so ``charlm config validate`` of a
CPU job stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs

from charlm.errors import ConfigError, UsageError

VOCAB = 256
FP32 = 4
SAVED_PER_LAYER = 16  # activation values kept per byte per layer, in units of d_model
INFERENCE_WIDTH = 12  # one layer's working set per byte during inference, in units of d_model
LOGIT_VALUES = 2 * VOCAB  # logits and their gradient (or softmax) per byte
# values kept per parameter: (the blocks' matrices, the rest); Muon keeps one momentum per matrix value
OPTIMIZER_STATES = {"adamw": (2, 2), "muon": (1, 2)}


@attrs.frozen
class Term:
    key: str  # the config key or command-line flag that sizes it: the one the message names
    what: str  # "parameters", "gradients", ...
    nbytes: int


def human(nbytes: int) -> str:
    if nbytes >= 1 << 100:  # beyond what a float formats well (sizes like 10**30 multiply)
        return "more than 10^30 bytes"
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= size:
            return f"{nbytes / size:,.1f} {unit}"
    return f"{nbytes} bytes"


# ---------------------------------------------------------------- what the device has


def available_bytes(device: str) -> tuple[int | None, str]:
    """``(bytes, where)``: the memory a job on ``device`` can still take, or ``None`` when
    this platform cannot say (then nothing is checked)."""
    if _may_be_cuda(device):
        import torch

        from charlm.config import resolve_device

        resolved = resolve_device(device) if isinstance(device, str) else torch.device(device)
        if resolved.type == "cuda":
            free, _ = torch.cuda.mem_get_info(resolved)
            cached = torch.cuda.memory_reserved(resolved) - torch.cuda.memory_allocated(resolved)
            return free + cached, f"{resolved} (free device memory)"
    host = _host_available()
    if host is None:
        return None, "the host"
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    per = " per process" if processes > 1 else ""
    return host // processes, f"the host (available RAM{per})"


def _may_be_cuda(device) -> bool:
    """Whether ``device`` can resolve to CUDA; "auto" only where an NVIDIA driver is loaded,
    so that a CPU machine never imports torch to answer."""
    name = str(device)
    if name.startswith("cuda"):
        return True
    return name == "auto" and Path("/proc/driver/nvidia/version").exists()


def _host_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
        try:
            return os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            continue
    return None


# ---------------------------------------------------------------- estimates


def _largest(sizes: dict[str, tuple[int, int]]) -> str:
    """The key whose value is the most times its default: the one to name when a product of
    several keys is too large (``{key: (value, default)}``)."""
    return max(sizes, key=lambda k: sizes[k][0] / sizes[k][1])


def _block_params(m) -> tuple[int, str]:
    """Parameters of all layers' blocks, and the key most responsible for them."""
    d, kv_width = m.d_model, m.kv_heads * (m.d_model // m.n_head)
    default_hidden = -(-8 * d // 3)
    hidden = getattr(m.mlp.options, "hidden", None) or default_hidden
    per_layer = 2 * d * d + 2 * d * kv_width + 3 * d * hidden
    sizes = {"model.d_model": (d, 128), "model.n_layer": (m.n_layer, 4), "model.mlp.hidden": (hidden, default_hidden)}
    return m.n_layer * per_layer, _largest(sizes)


def _training_terms(job) -> list[Term]:
    m = job.model
    blocks, block_key = _block_params(m)
    ngram = sum(m.ngram_buckets) * m.ngram_width
    embed = VOCAB * m.d_model * (1 if m.tie_embeddings else 2)
    block_states, states = OPTIMIZER_STATES.get(job.optimizer.kind, (0, 0))
    act_size = 2 if job.precision in ("bf16", "fp16") else FP32  # "auto" may be fp32: the larger size
    per_byte = m.n_layer * SAVED_PER_LAYER * m.d_model * act_size + LOGIT_VALUES * FP32
    grow = _largest({
        "micro_batch_size": (job.micro_batch_size, 16), "seq_len": (job.seq_len, 128),
        "model.n_layer": (m.n_layer, 4), "model.d_model": (m.d_model, 128),
    })
    head_dim = m.d_model // m.n_head
    return [
        Term(block_key, "parameters, gradients and optimizer state of the blocks", blocks * FP32 * (2 + block_states)),
        Term("model.ngram_buckets", "n-gram tables with their gradients and optimizer state", ngram * FP32 * (2 + states)),
        Term("model.d_model", "embedding and head with their gradients and optimizer state", embed * FP32 * (2 + states)),
        Term(grow, "activations of micro_batch_size x seq_len bytes", job.micro_batch_size * job.seq_len * per_byte),
        Term("seq_len", "rotary tables", job.seq_len * head_dim * FP32),
        Term("logging.eval_bytes", "validation windows", job.logging.eval_bytes // job.seq_len * 8 if job.logging.eval_every else 0),
    ]


def _activations(model, batch: int, length: int, key: str) -> Term:
    """One forward pass over ``batch`` x ``length`` bytes (the weights are loaded already).

    ``model`` is the job's ``ModelConfig``, or None for an artefact that keeps none (then
    only the logits are counted)."""
    width = 0 if model is None else INFERENCE_WIDTH * model.d_model
    return Term(key, f"activations of {batch} x {length} bytes", batch * length * (width + LOGIT_VALUES) * FP32)


def _check(terms: list[Term], device, error: type[UsageError], job_word: str) -> None:
    available, where = available_bytes(device)
    total = sum(t.nbytes for t in terms)
    if available is None or total <= available:
        return
    by_key: dict[str, int] = {}
    for t in terms:
        by_key[t.key] = by_key.get(t.key, 0) + t.nbytes
    key = max(by_key, key=by_key.get)
    parts = ", ".join(f"{t.what} {human(t.nbytes)}" for t in sorted(terms, key=lambda t: -t.nbytes)[:3] if t.nbytes)
    raise error(
        f"{key}: {job_word} needs at least {human(total)} of memory ({parts}), but {where} has {human(available)}; lower {key}"
    )


def check_training(job) -> None:
    """ConfigError (exit 2) naming the key when the job's training state cannot fit its device."""
    _check(_training_terms(job), job.device, ConfigError, "this job")


def check_evaluation(model, batch: int, max_len: int, device) -> None:
    """UsageError naming ``--batch-size`` when ``batch`` windows cannot fit next to the model."""
    _check([_activations(model, batch, max_len, "--batch-size")], device, UsageError, "evaluation")


def check_generation(model, num_samples: int, max_len: int, prefill: int, held_bytes: int, device) -> None:
    """UsageError naming the flag to lower when ``num_samples`` samples cannot be generated:
    a state of ``max_len`` bytes each (allocated whole), a first pass over ``prefill`` bytes,
    and ``held_bytes`` that the caller keeps of each sample (0 when it streams them)."""
    terms = [_activations(model, num_samples, prefill, "--num-samples")]
    if model is not None:
        kv_width = model.kv_heads * (model.d_model // model.n_head)
        terms.append(Term("--num-samples", "key/value cache", num_samples * max_len * model.n_layer * 2 * kv_width * FP32))
    if held_bytes:
        terms.append(Term("--max-new", "the samples, printed whole", num_samples * held_bytes))
    _check(terms, device, UsageError, "generation")
