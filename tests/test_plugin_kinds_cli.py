"""Every kind a plugin adds is reachable from `charlm` without Python: a sampler with
--sampler, a data source with key=value options, an exporter whose artefact eval and
generate load. The plugin is a real installed distribution; the commands are real subprocesses."""

import json

import pytest
import torch
from helpers import charlm_subprocess, make_distribution

import charlm
from charlm import registry as registry_module
from charlm.checkpoint import save_checkpoint
from charlm.cli import main
from charlm.config import config_from_dict, to_dict
from charlm.data import SplitWriter
from charlm.model import ByteLM

PLUGIN = """
    import json
    from pathlib import Path

    import attrs
    import numpy as np
    import torch

    import charlm
    from charlm.config import config_from_dict, to_dict
    from charlm.interfaces import Runner
    from charlm.model import ByteLM


    @attrs.define
    class ConstantConfig:
        byte: int  # required: no default


    def constant(cfg):
        return lambda logits, generator: torch.full(logits.shape[:1], cfg.byte, dtype=torch.long)


    @attrs.define
    class EchoConfig:
        text: str  # required
        copies: int = 2


    class Echo:
        def __init__(self, cfg):
            self.cfg = cfg

        def fetch(self, dest):
            dest.mkdir(parents=True, exist_ok=True)
            files = [dest / f"doc{i}.txt" for i in range(self.cfg.copies)]
            for path in files:
                path.write_text(self.cfg.text)
            return files

        def provenance(self):
            return {"text": self.cfg.text}


    class NpzRunner(Runner):  # logits only: start/step are the Runner defaults
        def __init__(self, model, job):
            self.model, self.job, self.max_len = model, job, job.seq_len

        def logits(self, idx):
            with torch.no_grad():
                return self.model(idx)[0]


    class NpzExporter:
        suffix = ".npz"
        exact = True

        def export(self, model, job, path):
            arrays = {k: v.numpy() for k, v in model.state_dict().items()}
            with open(path, "wb") as f:
                np.savez(f, __charlm_npz__=np.array(json.dumps(to_dict(job))), **arrays)

        def recognise(self, path):
            try:
                with np.load(path) as npz:
                    return "__charlm_npz__" in npz.files
            except (OSError, ValueError):
                return False

        def load(self, path, device):
            with np.load(path) as npz:
                job = config_from_dict(json.loads(str(npz["__charlm_npz__"])), validate=False)
                state = {k: torch.from_numpy(npz[k]) for k in npz.files if k != "__charlm_npz__"}
            model = ByteLM(job.model, job.seq_len)
            model.load_state_dict(state)
            return NpzRunner(model.eval(), job)


    @charlm.hookimpl
    def register_samplers(register):
        register("constant", constant, config=ConstantConfig, help="always the same byte")


    @charlm.hookimpl
    def register_data_sources(register):
        register("echo", Echo, config=EchoConfig, help="copies of a text")


    @charlm.hookimpl
    def register_exporters(register):
        register("npz", lambda options: NpzExporter(), help="numpy .npz weights")
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    make_distribution(site, "charlm-kinds", "kinds", "charlm_kinds_plugin", PLUGIN)
    return site


@pytest.fixture
def installed(site, monkeypatch):
    """The plugin installed in this process too (for the in-process error checks)."""
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry_module, "_default", None)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory holding checkpoints/last.pt of a tiny (untrained) model."""
    torch.manual_seed(0)
    job = config_from_dict({"seq_len": 16, "max_steps": 1, "device": "cpu", "model": {"d_model": 32, "n_layer": 1, "n_head": 2}})
    run = tmp_path_factory.mktemp("run")
    save_checkpoint(run / "checkpoints" / "last.pt", {"model": ByteLM(job.model, job.seq_len).state_dict(), "config": to_dict(job)})
    return run


def fails_with(capsys, args, code: int, message: str) -> None:
    assert main([str(a) for a in args]) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_plugin_sampler_chosen_with_sampler_flag(site, run_dir, installed, capsys):
    generate = ["generate", "--checkpoint", run_dir, "--prompt", "hi", "--max-new", "5", "--no-echo"]
    proc = charlm_subprocess(*generate, "--sampler", "temperature:value=0.5", "--sampler", "constant:byte=65", site=site)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "AAAAA\n"
    fails_with(capsys, [*generate, "--sampler", "constant"], 2, "config error: sampler[0].byte: missing (required)")
    fails_with(capsys, [*generate, "--sampler", 'constant:byte="A"'], 2, "sampler[0].byte: expected an integer")
    fails_with(capsys, [*generate, "--sampler", "constant:byte=65", "--temperature", "0.5"], 2,
               "usage error: --sampler cannot be combined with --temperature")


def test_plugin_data_source_options(site, installed, tmp_path, capsys):
    out = tmp_path / "echo"
    proc = charlm_subprocess("data", "pull", "echo", 'text="hello, world"', "copies=4", "--out", out, "--val-fraction", "0.25", site=site)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["documents"] == 4 and meta["source"] == {"name": "echo", "text": "hello, world"}
    assert (out / "raw" / "doc3.txt").read_text() == "hello, world"
    fails_with(capsys, ["data", "pull", "echo", "--out", out], 2, "config error: data_source.echo.text: missing (required)")
    fails_with(capsys, ["data", "pull", "echo", "--out", out, "text=x", "copies=many"], 2,
               "config error: data_source.echo.copies: expected an integer")
    fails_with(capsys, ["data", "pull", "echo", "text=x", "colour=red", "--out", out], 2, "data_source.echo.colour: unknown key")
    fails_with(capsys, ["data", "pull", "echo", "text", "--out", out], 2, "data source option 'text': expected key=value")


def test_plugin_exporter_artefact_runs_in_eval_and_generate(site, run_dir, installed, tmp_path, capsys):
    val = tmp_path / "val.bin"
    with SplitWriter(val) as w:
        w.add([b"the quick brown fox jumps over the lazy dog " * 4])
        w.commit()
    artefact = tmp_path / "model.weights"  # recognised by content, not by suffix
    proc = charlm_subprocess("export", "--format", "npz", "--checkpoint", run_dir, "--out", artefact, site=site)
    assert proc.returncode == 0 and "validation passed" in proc.stdout, proc.stdout + proc.stderr

    eval_args = ["--data", val, "--json", "--no-baselines", "--device", "cpu"]
    proc = charlm_subprocess("eval", "--checkpoint", artefact, *eval_args, site=site)
    assert proc.returncode == 0, proc.stderr
    assert main(["eval", "--checkpoint", str(run_dir), *map(str, eval_args)]) == 0
    assert json.loads(proc.stdout)["bpb"] == pytest.approx(json.loads(capsys.readouterr().out)["bpb"], abs=1e-5)

    proc = charlm_subprocess("generate", "--checkpoint", artefact, "--prompt", "the", "--max-new", "40", "--temperature", "0", site=site)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "the" + charlm.load(run_dir).generate("the", 40, temperature=0) + "\n"
    assert charlm.load(artefact).runner.job.seq_len == 16
