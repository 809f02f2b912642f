"""The command line: a fast start (no torch for help, listings, validation, --version), recipes by name."""

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import charlm_subprocess as charlm  # a real process: startup is what these tests are about

from charlm.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "charlm" / "recipes" / "micro.toml"

# main() in a fresh interpreter, then: was torch imported on the way?
NO_TORCH = """
import sys
from charlm.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # argparse's --help and --version
    code = exc.code
if "torch" in sys.modules:
    sys.exit("torch was imported")
sys.exit(code)
"""


@pytest.mark.parametrize("args", [
    ["--help"],
    ["--version"],
    *[[name.replace("_", "-"), "--help"] for name in COMMANDS],
    ["config", "validate", "--help"],
    ["list-plugins"],
    ["recipes"],
    ["config", "validate", str(MICRO), "--device", "cpu"],
], ids=" ".join)
def test_fast_commands_do_not_import_torch(args):
    result = subprocess.run([sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-1000:]


def test_version_is_the_distribution_version():
    result = charlm("--version")
    assert result.stdout.strip() == f"charlm {importlib.metadata.version('charlm-toolkit')}"


def test_recipes_lists_the_core_and_plugin_recipes():
    rows = {line.split()[0]: line.split()[1] for line in charlm("recipes").stdout.splitlines()}
    assert rows == {"micro": "charlm-toolkit", "small-50M": "charlm-toolkit", "hybrid-ssm": "charlm-ssm"}
    without_ssm = charlm("--disable-plugins", "charlm-ssm", "recipes").stdout
    assert "hybrid-ssm" not in without_ssm and "micro" in without_ssm


def test_run_names_the_data_command_when_a_recipe_has_no_data(tmp_path):
    result = charlm("run", "micro", "--max-steps", "1", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: data/shakespeare/train.bin: no such file (recipe 'micro' gets its data with"
        " `charlm data pull shakespeare --out data/shakespeare --val-docs 0,10,20,30,40`)"
    )


def test_an_unknown_recipe_is_a_usage_error(tmp_path):
    result = charlm("run", "mikro", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "config error: mikro: no such job file or recipe (recipes: micro, small-50M, hybrid-ssm; see `charlm recipes`)"
    )


def test_a_file_wins_over_a_recipe_of_the_same_name(tmp_path):
    (tmp_path / "micro").write_text("seq_len = 0\n")
    result = charlm("run", "micro", cwd=tmp_path)
    assert result.returncode == 2 and "seq_len" in result.stderr


def test_shell_completion():
    result = charlm("--print-completion", "bash")
    assert result.returncode == 0 and "_shtab_charlm" in result.stdout
