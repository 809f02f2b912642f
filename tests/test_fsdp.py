"""FSDP2 under torchrun (gloo on CPU, real processes): per-step losses equal one process with Muon
and n-gram tables; DCP checkpoint directories that move to one process, to DDP and back, that
`charlm eval` reads, and that are refused (with a fallback) when damaged."""

import json
import shutil

import pytest
from helpers import charlm_main
from test_distributed import assert_close, corpus, launch_ranks, losses, resume_copy, torchrun, train_here, write_job  # noqa: F401

from charlm.checkpoint import load_checkpoint, save_checkpoint

# Muon's gathered Newton-Schulz and the root's n-gram tables are what sharding could get wrong
FSDP_JOB = {"optimizer.kind": "muon", "model.ngram_buckets": "[64, 64]", "distributed.strategy": "fsdp"}
ADAMW_JOB = {**FSDP_JOB, "optimizer.kind": "adamw", "max_steps": 4, "checkpoint.every": 0}
DCP_STEP_4 = "checkpoints/step-000004.dcp"
# Muon orthogonalises in bf16 on a CPU with bf16 units: the sharded gradient norm (clipping),
# equal to 1e-7, flips bf16 roundings, and Muon runs agree to about 3e-5 (AdamW runs to 1e-5,
# as DDP's; fp32 iterations, elsewhere, agree closer)
MUON_TOL = 1e-4


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):  # noqa: F811
    """One process and two FSDP processes of one job: Muon for 8 steps with checkpoints at 4
    and 8, and AdamW for 4 steps."""
    root = tmp_path_factory.mktemp("fsdp")
    for name, job in (("", FSDP_JOB), ("_adamw", ADAMW_JOB)):
        train_here(corpus, root / f"one{name}", **job)
    proc = torchrun("run", str(write_job(corpus, root / "fsdp", **FSDP_JOB)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    two_ranks("run", str(write_job(corpus, root / "fsdp_adamw", **ADAMW_JOB)))
    return root


def two_ranks(*args: str) -> str:
    """``charlm ARGS`` on two ranks started by hand (cheaper than torchrun's extra agent); rank 0's output."""
    ranks = launch_ranks(*args)
    outs = [p.communicate(timeout=300) for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], outs
    return outs[0][0]


def dcp_copy(source, dest) -> None:
    """A new run directory whose only checkpoint is ``source``'s DCP directory at step 4."""
    shutil.copytree(source / DCP_STEP_4, dest / DCP_STEP_4)


def charlm_eval(checkpoint, corpus):  # noqa: F811
    return charlm_main("eval", "--checkpoint", checkpoint, "--data", corpus / "val.bin", "--json", "--no-baselines")


def test_fsdp_steps_equal_one_process_and_checkpoints_move_to_one_process_and_ddp_and_back(corpus, runs):  # noqa: F811
    assert_close(losses(runs / "fsdp_adamw"), losses(runs / "one_adamw"))
    one = losses(runs / "one")
    assert sorted(losses(runs / "fsdp")) == list(range(1, 9))
    assert_close(losses(runs / "fsdp"), one, MUON_TOL)
    assert sorted(p.name for p in (runs / "fsdp/checkpoints").iterdir()) == ["step-000004.dcp", "step-000008.dcp"]

    # saved by two FSDP processes at step 4: continued by one process, and by two DDP processes
    dcp_copy(runs / "fsdp", runs / "fsdp_then_one")
    train_here(corpus, runs / "fsdp_then_one", resume="auto", **FSDP_JOB)
    assert sorted(losses(runs / "fsdp_then_one")) == [5, 6, 7, 8]
    assert_close(losses(runs / "fsdp_then_one"), one, MUON_TOL)
    dcp_copy(runs / "fsdp", runs / "fsdp_then_ddp")
    job = write_job(corpus, runs / "fsdp_then_ddp", **{**FSDP_JOB, "distributed.strategy": "ddp"})
    two_ranks("run", str(job), "--resume", "auto")
    assert_close(losses(runs / "fsdp_then_ddp"), one, MUON_TOL)
    assert (runs / "fsdp_then_ddp/checkpoints/last.pt").is_file()

    # saved by one process (a .pt file), continued by two FSDP processes
    resume_copy(runs / "one", 4, runs / "one_then_fsdp")
    two_ranks("run", str(write_job(corpus, runs / "one_then_fsdp", **FSDP_JOB)), "--resume", "auto")
    assert sorted(losses(runs / "one_then_fsdp")) == [5, 6, 7, 8]
    assert_close(losses(runs / "one_then_fsdp"), one, MUON_TOL)
    assert not (runs / "one_then_fsdp/checkpoints/last.pt").exists()  # the newest is the DCP directory


def test_eval_reads_a_dcp_checkpoint_as_the_same_weights_in_one_file(corpus, runs, tmp_path):  # noqa: F811
    as_file = tmp_path / "fsdp.pt"
    save_checkpoint(as_file, load_checkpoint(runs / "fsdp/checkpoints/step-000008.dcp"))
    from_run_dir, from_file = charlm_eval(runs / "fsdp", corpus), charlm_eval(as_file, corpus)
    assert from_run_dir.returncode == 0 and from_file.returncode == 0, from_run_dir.stderr + from_file.stderr
    assert json.loads(from_run_dir.stdout)["bpb"] == json.loads(from_file.stdout)["bpb"]
    one = json.loads(charlm_eval(runs / "one", corpus).stdout)["bpb"]
    assert abs(json.loads(from_file.stdout)["bpb"] - one) <= 1e-5 * one  # the same run, summed in another order


def test_a_damaged_dcp_checkpoint_is_one_line_and_resume_falls_back(corpus, runs, tmp_path):  # noqa: F811
    run = tmp_path / "damaged"
    shutil.copytree(runs / "fsdp/checkpoints", run / "checkpoints")
    shard = run / "checkpoints/step-000008.dcp/__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    proc = charlm_eval(run / "checkpoints/step-000008.dcp", corpus)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        f"error: {run / 'checkpoints/step-000008.dcp'}: DCP checkpoint is corrupted (__1_0.distcp differs from MANIFEST.json);"
        " use an earlier checkpoint"
    ]
    (run / "checkpoints/step-000004.dcp/__0_0.distcp").unlink()
    proc = charlm_eval(run / "checkpoints/step-000004.dcp", corpus)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1 and "missing __0_0.distcp" in proc.stderr

    # a good older checkpoint: --resume auto sets the damaged one aside and continues from it,
    # on as many FSDP processes as saved it: bit for bit the uninterrupted run
    shutil.copytree(runs / "fsdp" / DCP_STEP_4, run / DCP_STEP_4, dirs_exist_ok=True)
    out = two_ranks("run", str(write_job(corpus, run, **FSDP_JOB)), "--resume", "auto")
    assert "step-000008.dcp: DCP checkpoint is corrupted" in out
    assert (run / "checkpoints/step-000008.dcp.damaged").is_dir()
    resumed, whole = losses(run), losses(runs / "fsdp")
    assert sorted(resumed) == [5, 6, 7, 8] and all(resumed[s] == whole[s] for s in resumed), (resumed, whole)
