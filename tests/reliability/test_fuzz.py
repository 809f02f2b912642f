"""Fuzzing (hypothesis): every generated input ends in success or one clear error line.

Bounded here (a few hundred cases per category, fixed seeds); ``make soak`` runs the same
checks over more than 10,000 cases and prints the table.
"""

import harness
import pytest

CASES = {"job file": 300, "overrides": 300, "split": 300, "eval": 120, "generate": 120, "command line": 250}


def assert_clean(tally: harness.Tally) -> None:
    assert tally.cases > 0
    assert not tally.failures, tally.report()


def test_job_files_validate_or_fail_with_one_line(corpus, tmp_path):
    strategy = harness.job_files(corpus, tmp_path / "run")
    assert_clean(harness.explore("job file", strategy, lambda text: harness.check_job_file(text, tmp_path / "job.toml"), CASES["job file"]))


def test_overrides_validate_or_fail_with_one_line(corpus, tmp_path):
    job = harness.write_job(tmp_path / "job.toml", harness.tiny_job(corpus, tmp_path / "run"))
    assert_clean(harness.explore("overrides", harness.overrides, lambda case: harness.check_overrides(case, job), CASES["overrides"]))


def test_damaged_splits_open_or_fail_with_one_line(corpus, tmp_path):
    check = lambda case: harness.check_open_split(case, tmp_path / "split", corpus)  # noqa: E731
    assert_clean(harness.explore("split", harness.split_damage, check, CASES["split"]))


def test_eval_on_damaged_splits_never_succeeds_silently(corpus, checkpoint, tmp_path):
    check = lambda case: harness.check_eval(case, tmp_path / "split", corpus, checkpoint)  # noqa: E731
    assert_clean(harness.explore("eval", harness.split_damage, check, CASES["eval"]))


def test_generate_takes_any_prompt(checkpoint, tmp_path):
    strategy = harness.generate_calls(checkpoint, tmp_path / "prompt")
    assert_clean(harness.explore("generate", strategy, harness.check_generate, CASES["generate"]))


def test_command_lines_end_in_success_or_one_line(paths):
    assert_clean(harness.explore("command line", harness.command_lines(paths), harness.check_command_line, CASES["command line"]))


@pytest.mark.parametrize("argv", [["config", "validate", "--max-steps", "0"], ["eval"], ["--bogus"]])
def test_the_judge_accepts_clean_usage_errors(argv):
    assert harness.judge(harness.run_cli(argv), argv) == "error"


def test_the_judge_catches_an_escaping_exception(monkeypatch):
    def boom(args):
        raise ValueError("bug")

    monkeypatch.setattr("charlm.commands.list_plugins.list_plugins", boom)
    with pytest.raises(harness.Failure, match="traceback ValueError"):
        harness.run_cli(["list-plugins"])
