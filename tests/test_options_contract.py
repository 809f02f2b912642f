"""The options contract of every kind, through a real plugin distribution: ``check(job)``,
a factory that refuses its options, a factory with the wrong signature, all one line and
exit 2, at ``charlm config validate`` as at ``charlm run``."""

import subprocess
from pathlib import Path

import pytest
import tomli_w
from helpers import charlm_subprocess, make_distribution

PLUGIN = """
    import attrs
    import charlm
    from torch import nn


    @attrs.define
    class StrictNormConfig:
        eps: float = 1e-6
        min_width: int = 0

        def check(self, job):
            if job.model.d_model < self.min_width:
                raise TypeError(f"min_width: needs d_model >= {self.min_width}, got {job.model.d_model}")


    @attrs.define
    class SlowWarmupConfig:
        warmup_steps: int = 0
        refuse_in_factory: bool = False

        def check(self, job):
            if job.max_steps is not None and self.warmup_steps > job.max_steps:
                raise ValueError(f"warmup_steps: {self.warmup_steps} > max_steps = {job.max_steps}")


    def strict_norm(options, dim):
        return nn.RMSNorm(dim, eps=options.eps)


    def slow_warmup(options):
        if options.refuse_in_factory:
            raise ValueError("refuse_in_factory: this factory refuses its options")
        return lambda step, progress: min(1.0, (step + 1) / (options.warmup_steps + 1))


    def norm_with_a_wrong_signature(options, width):
        return nn.RMSNorm(width)


    @charlm.hookimpl
    def register_norms(register):
        register("strict_norm", strict_norm, config=StrictNormConfig)
        register("wrong_signature", norm_with_a_wrong_signature)
        register("lazy_wrong_signature", "charlm_contract_impl:norm_with_a_wrong_signature")


    @charlm.hookimpl
    def register_schedulers(register):
        register("slow_warmup", slow_warmup, config=SlowWarmupConfig)
"""

# A factory named "module:attr" is imported only when built; its signature is read from the source.
LAZY_IMPL = """
raise RuntimeError("imported: the signature check must read the source, not import it")


def norm_with_a_wrong_signature(options, width):
    pass
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    make_distribution(site, "charlm-contract", "contract", "charlm_contract_plugin", PLUGIN)
    (site / "charlm_contract_impl.py").write_text(LAZY_IMPL)
    return site


def job_file(tmp_path: Path, corpus: Path, **changes) -> Path:
    raw = {
        "out_dir": str(tmp_path / "run"),
        "max_steps": 2,
        "seq_len": 16,
        "micro_batch_size": 2,
        "device": "cpu",
        "model": {"d_model": 32, "n_layer": 1, "n_head": 2},
        "data": {"train": str(corpus / "train.bin"), "val": str(corpus / "val.bin")},
        "logging": {"eval_every": 0, "final_eval": False},
    }
    for key, value in changes.items():
        *tables, last = key.split("__")
        node = raw
        for table in tables:
            node = node.setdefault(table, {})
        node[last] = value
    path = tmp_path / "job.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def one_config_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: "), proc.stderr
    return lines[0]


def test_check_errors_name_the_key_at_validate_and_at_run(site, corpus, tmp_path):
    path = job_file(tmp_path, corpus, scheduler__kind="slow_warmup", scheduler__warmup_steps=5)
    line = one_config_error(charlm_subprocess("config", "validate", str(path), site=site))
    assert line == "config error: scheduler: warmup_steps: 5 > max_steps = 2"
    # a TypeError from check() is a config error too, and `run` checks as `validate` does
    path = job_file(tmp_path, corpus, model__norm__kind="strict_norm", model__norm__min_width=64)
    line = one_config_error(charlm_subprocess("run", str(path), site=site))
    assert line == "config error: model.norm: min_width: needs d_model >= 64, got 32"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_factory_with_a_wrong_signature_is_a_config_error(site, corpus, tmp_path, command):
    args = ["config", "validate"] if command == "validate" else ["run"]
    path = job_file(tmp_path, corpus, model__norm="wrong_signature")
    line = one_config_error(charlm_subprocess(*args, str(path), site=site))
    assert line.startswith("config error: model.norm: factory norm_with_a_wrong_signature cannot be called with (options, dim=...)")
    assert not (tmp_path / "run").exists()  # nothing was built or written


def test_a_lazy_factory_with_a_wrong_signature_is_a_config_error_without_importing_it(site, corpus, tmp_path):
    path = job_file(tmp_path, corpus, model__norm="lazy_wrong_signature")
    line = one_config_error(charlm_subprocess("config", "validate", str(path), site=site))
    assert line.startswith(
        "config error: model.norm: factory charlm_contract_impl:norm_with_a_wrong_signature cannot be called with (options, dim=...)"
    )


def test_a_factory_refusing_its_options_names_the_key(site, corpus, tmp_path):
    path = job_file(tmp_path, corpus, scheduler__kind="slow_warmup", scheduler__refuse_in_factory=True)
    assert charlm_subprocess("config", "validate", str(path), site=site).returncode == 0  # only building finds it
    line = one_config_error(charlm_subprocess("run", str(path), site=site))
    assert line == "config error: scheduler: refuse_in_factory: this factory refuses its options"


def test_a_good_plugin_component_trains(site, corpus, tmp_path):
    path = job_file(tmp_path, corpus, scheduler__kind="slow_warmup", scheduler__warmup_steps=1, model__norm="strict_norm")
    proc = charlm_subprocess("run", str(path), site=site)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()
