"""The hybrid-ssm recipe, shrunk, trains for 50 steps with the real `charlm run` and its loss falls."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from charlm.data import SplitWriter

REPO = Path(__file__).resolve().parents[3]
SENTENCES = [b"the quick brown fox jumps over the lazy dog. ", b"to be, or not to be: that is the question. "]


def write_split(path: Path, documents: int) -> None:
    with SplitWriter(path) as writer:
        for i in range(documents):
            writer.add([SENTENCES[i % 2] * 20])
        writer.commit()


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])  # muon must route conv kernels to AdamW
def test_hybrid_stack_trains(tmp_path, optimizer):
    write_split(tmp_path / "train.bin", 40)
    write_split(tmp_path / "val.bin", 4)
    overrides = [
        f'out_dir="{tmp_path / "run"}"',
        f'data.train="{tmp_path / "train.bin"}"',
        f'data.val="{tmp_path / "val.bin"}"',
        'device="cpu"',
        "seq_len=32",
        "micro_batch_size=8",
        "model.d_model=32",
        "model.n_layer=3",
        'model.layers=[{kind="ssm", d_state=16, head_dim=16}, "ssm", "transformer"]',
        "scheduler.warmup_steps=5",
        "logging.log_every=1",
        f'optimizer="{optimizer}"',
    ]
    config = REPO / "plugins" / "charlm-ssm" / "charlm_ssm" / "recipes" / "hybrid-ssm.toml"
    cmd = [sys.executable, "-m", "charlm", "run", str(config), *overrides, "--max-steps", "50", "--no-val"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]

    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert metrics[-1]["step"] == 50
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, f"loss went from {first:.3f} to {last:.3f}"
