"""charlm info: a run directory, a checkpoint and an int8 artefact, as text and as JSON."""

import hashlib
import json
import tomllib

import pytest

import charlm
from charlm.cli import main
from charlm.prepare import prepare

TINY = ["model.d_model=32", "model.n_layer=1", "model.n_head=2", "model.n_kv_head=1", "model.ngram_buckets=[64]",
        "seq_len=32", "micro_batch_size=4", 'device="cpu"', "compile=false", "logging.eval_every=2", "logging.eval_bytes=512"]


@pytest.fixture(scope="module")
def run_dir(corpus, tmp_path_factory):
    """The micro recipe, shrunk, trained for 4 steps by `charlm run` (with validation)."""
    out = tmp_path_factory.mktemp("runs") / "micro"
    overrides = [f'data.train="{corpus / "train.bin"}"', f'data.val="{corpus / "val.bin"}"', f'out_dir="{out}"', *TINY]
    assert main(["run", "micro", *overrides, "--max-steps", "4"]) == 0
    return out


def info_json(capsys, path) -> dict:
    capsys.readouterr()
    assert main(["info", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_run_dir(run_dir, capsys):
    facts = info_json(capsys, run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    assert facts["path"] == str(last)
    assert facts["format"] == "charlm checkpoint v1"
    assert facts["sha256"] == hashlib.sha256(last.read_bytes()).hexdigest()
    assert facts["step"] == 4
    assert facts["tokens"] == 4 * 4 * 32
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert facts["val_bpb"] == [r["val_bpb"] for r in records if "val_bpb" in r][-1]
    assert facts["val_step"] == 4
    assert facts["versions"]["charlm"] == charlm.__version__
    assert facts["config"]["model"]["d_model"] == 32
    # d_model 32: byte embedding + one 64-row bigram table + head, and one block
    assert 256 * 32 + 64 * 32 + 32 * 256 < facts["parameters"] < 100_000


def test_checkpoint_text_has_every_field_and_a_toml_config(run_dir, capsys):
    capsys.readouterr()
    assert main(["info", str(run_dir / "checkpoints" / "last.pt")]) == 0
    out = capsys.readouterr().out
    head, _, config = out.partition("# config\n")
    for key in ("path", "format", "sha256", "parameters", "step", "tokens seen", "made with"):
        assert f"\n{key} " in "\n" + head, key
    assert "val bits/byte" not in head  # a bare checkpoint has no metrics.jsonl beside it
    job = tomllib.loads(config)
    assert job["model"]["n_layer"] == 1 and job["seq_len"] == 32


def test_int8_artifact(run_dir, tmp_path, capsys):
    artefact = tmp_path / "micro.int8"
    assert main(["export", "--format", "int8", "--checkpoint", str(run_dir / "checkpoints" / "last.pt"),
                 "--out", str(artefact), "--no-validate"]) == 0
    facts = info_json(capsys, artefact)
    assert facts["format"] == "charlm artefact v1, int8 weights"
    assert facts["sha256"] == hashlib.sha256(artefact.read_bytes()).hexdigest()
    assert facts["parameters"] == info_json(capsys, run_dir)["parameters"]
    assert facts["step"] is None and facts["versions"] == {"charlm": charlm.__version__}


@pytest.mark.parametrize("name, message", [
    ("missing.pt", "no such file or directory"),
    ("empty-run", "no readable checkpoint"),
    ("junk.pt", "not a charlm checkpoint"),
])
def test_bad_paths_are_one_line_errors(tmp_path, capsys, name, message):
    (tmp_path / "empty-run").mkdir()
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    assert main(["info", str(tmp_path / name)]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1



def test_a_run_names_the_version_of_its_training_data(tmp_path, capsys):
    """train.log records the training split's sha256 and its source (from meta.json); info shows it."""
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "doc.txt").write_bytes(b"to be or not to be, that is the question. " * 60)
    meta = prepare([texts], tmp_path / "data", val_fraction=0, source={"name": "dvc", "commit": "c0ffee"})
    train = tmp_path / "data" / "train.bin"
    run = tmp_path / "run"
    overrides = [f'data.train="{train}"', 'data.val=""', f'out_dir="{run}"', *TINY]
    assert main(["run", "micro", *overrides, "--max-steps", "1", "--no-val"]) == 0
    facts = info_json(capsys, run)
    assert facts["data"] == f'{train} sha256 {meta["train"]["sha256"]} | source {{"name": "dvc", "commit": "c0ffee"}}'
