"""SSM vs attention: training tokens/s at seq_len 256 and 1024, and decode bytes/s against position.

Two random-weight stacks of about the same parameter count: all ``transformer`` layers, and
all ``ssm`` layers (the charlm-ssm plugin), with as many layers as brings it closest. Training
is forward + backward of the LM loss at a fixed number of tokens per step (no optimizer step).
Decode is batch 1, one byte per call, from a state already at position p: an SSM state has a
fixed size, so its speed should be flat in p, while attention reads a KV cache that grows.
Timings on a shared machine are noisy; the best of a few repeats is reported.

    python bench/ssm_throughput.py [--device cpu] [--d-model 128] [--attn-layers 4]
        [--seq-lens 256 1024] [--tokens 4096] [--positions 0 256 1024 4096] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from common import add_threads_flag, use_threads  # bench/ is on sys.path when run as a script

from charlm.config import config_from_dict
from charlm.model import ByteLM


def build(args, layers: list[str], max_len: int) -> ByteLM:
    job = config_from_dict(
        {
            "max_steps": 1,
            "device": args.device,
            "seq_len": max_len,
            "model": {"d_model": args.d_model, "n_head": 4, "n_kv_head": 2, "n_layer": len(layers), "layers": layers},
        }
    )
    torch.manual_seed(0)
    return ByteLM(job.model, max_len).to(args.device)


def matched_stacks(args, max_len: int) -> dict[str, ByteLM]:
    """The attention stack, and the SSM stack whose parameter count is closest to it."""
    attention = build(args, ["transformer"] * args.attn_layers, max_len)
    target = attention.num_parameters()
    candidates = (build(args, ["ssm"] * n, max_len) for n in range(1, 4 * args.attn_layers + 1))
    ssm = min(candidates, key=lambda m: abs(m.num_parameters() - target))
    return {"attention": attention, "ssm": ssm}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_time(fn, device: str, repeats: int) -> float:
    fn()  # warm-up: allocator, thread pools, kernel choice
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def train_tokens_per_s(model: ByteLM, seq_len: int, args) -> float:
    batch = max(1, args.tokens // seq_len)
    idx = torch.randint(0, 256, (batch, seq_len + 1), device=args.device)
    model.train()

    def step():
        logits, _ = model(idx[:, :-1])
        F.cross_entropy(logits.reshape(-1, 256), idx[:, 1:].reshape(-1)).backward()
        model.zero_grad(set_to_none=True)

    return batch * seq_len / best_time(step, args.device, args.repeats)


@torch.no_grad()
def decode_bytes_per_s(model: ByteLM, position: int, args) -> float:
    model.eval()
    capacity = max(args.positions) + args.decode_steps + 1
    prompt = torch.randint(0, 256, (1, position + 1), device=args.device)
    byte = prompt[:, -1:]

    def decode():
        states = model.init_states(1, capacity, args.device, torch.float32)
        if position:
            _, states = model(prompt[:, :-1], 0, states)
        start = time.perf_counter()
        for i in range(args.decode_steps):
            _, states = model(byte, position + i, states)
        sync(args.device)
        decode.seconds = time.perf_counter() - start

    best = min(_timed(decode) for _ in range(args.repeats))
    return args.decode_steps / best


def _timed(decode) -> float:
    decode()  # the prefill is outside the timed part
    return decode.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--attn-layers", type=int, default=4)
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per training step")
    parser.add_argument("--positions", type=int, nargs="+", default=[0, 256, 1024, 4096])
    parser.add_argument("--decode-steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    add_threads_flag(parser)
    args = parser.parse_args()
    use_threads(args.threads)

    # the attention stack is built for the longest context either part uses: its KV cache must hold it
    max_len = max(max(args.seq_lens), max(args.positions) + args.decode_steps + 1)
    stacks = matched_stacks(args, max_len)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, fp32, d_model {args.d_model}")
    for name, model in stacks.items():
        print(f"  {name:<9} {len(model.blocks)} layers, {model.num_parameters():,} parameters")

    print(f"\ntraining (forward + backward), {args.tokens} tokens per step")
    print(f"{'seq_len':>7} " + " ".join(f"{name + ' tok/s':>16}" for name in stacks) + f" {'ssm/attention':>14}")
    for seq_len in args.seq_lens:
        rates = {name: train_tokens_per_s(model, seq_len, args) for name, model in stacks.items()}
        cells = " ".join(f"{rate:>16,.0f}" for rate in rates.values())
        print(f"{seq_len:>7} {cells} {rates['ssm'] / rates['attention']:>14.2f}")

    print(f"\ndecode (batch 1, {args.decode_steps} bytes one at a time after a prefill to the position)")
    print(f"{'position':>8} " + " ".join(f"{name + ' B/s':>16}" for name in stacks))
    for position in args.positions:
        cells = " ".join(f"{decode_bytes_per_s(model, position, args):>16,.0f}" for model in stacks.values())
        print(f"{position:>8} {cells}")


if __name__ == "__main__":
    main()
