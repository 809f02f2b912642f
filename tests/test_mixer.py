"""Context mixing: strictly causal across rows and columns, and it learns the document."""

import numpy as np
import pytest
import torch
from helpers import model_job
from test_adapt import SEQ_LEN, WINDOW, eval_argv, text_with_secret

from charlm.adapt import AdaptOptions, parse_key_values, read_costs
from charlm.cli import main
from charlm.errors import UsageError
from charlm.mixer import ContextMixer, MixOptions, mix_options
from charlm.model import ByteLM

MIX = MixOptions(orders="1+2+3+5", slot_bits=12, lr=0.02)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    job = model_job(SEQ_LEN, ngram_buckets=[64, 64])
    return ByteLM(job.model, job.seq_len).eval()


@pytest.mark.parametrize("adapt", [False, True], ids=["static", "adaptive"])
def test_the_repeated_secret_gets_cheaper_and_the_first_costs_what_it_would_alone(model, adapt):
    tokens, gap = text_with_secret()
    options = AdaptOptions(lr=3e-3, window=WINDOW)
    plain = read_costs(model, tokens, SEQ_LEN, options, adapt, segments=1)
    mixed = read_costs(model, tokens, SEQ_LEN, options, adapt, segments=1, mix=MIX)
    alone = read_costs(model, tokens[:gap], SEQ_LEN, options, adapt, segments=1, mix=MIX)
    np.testing.assert_array_equal(mixed[:gap], alone)  # what follows the first occurrence changes nothing of it
    third = slice(2 * gap, 2 * gap + WINDOW)
    assert mixed[third].sum() < 0.5 * plain[third].sum()


def test_no_byte_is_scored_by_a_mixer_that_saw_it(model):
    """Changing bytes from position p on changes no cost before p."""
    tokens, _ = text_with_secret(seed=1)
    options = AdaptOptions(lr=3e-2, window=WINDOW)
    costs = read_costs(model, tokens, SEQ_LEN, options, True, 1, MIX)
    for p in (WINDOW, 3 * WINDOW + 5, len(tokens) - 1):
        changed = tokens.copy()
        changed[p:] = 255 - changed[p:]
        other = read_costs(model, changed, SEQ_LEN, options, True, 1, MIX)
        np.testing.assert_array_equal(other[:p], costs[:p])
        assert other[p] != costs[p]


def test_rows_share_what_they_learn_only_column_by_column(model):
    """Rows share the tables and the weights: changing row 0 from column c on changes no
    row's cost before column c."""
    tokens, _ = text_with_secret(seed=1)
    options = AdaptOptions(lr=3e-2, window=WINDOW)
    costs = read_costs(model, tokens, SEQ_LEN, options, True, 3, MIX)
    row = len(tokens) // 3
    column = row // 2
    changed = tokens.copy()
    changed[column:row] = 255 - changed[column:row]
    other = read_costs(model, changed, SEQ_LEN, options, True, 3, MIX)
    for start in range(0, 3 * row, row):
        np.testing.assert_array_equal(other[start : start + column], costs[start : start + column])
    assert not np.array_equal(other[row + column : 2 * row], costs[row + column : 2 * row])


def test_the_mixer_starts_as_the_network_and_its_probabilities_sum_to_one():
    rng = np.random.default_rng(0)
    log_probs = np.log(rng.dirichlet(np.ones(256), size=4))
    mixer = ContextMixer(MIX, rows=4)
    probs = mixer.predict(log_probs)
    np.testing.assert_allclose(probs, np.exp(log_probs), rtol=1e-9)
    mixer.update(np.array([1, 2, 3, 4]), np.array([True, True, False, True]))
    assert mixer.history.tolist() == [1, 2, 0, 4]  # an inactive row learns nothing
    probs = mixer.predict(log_probs)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)


def test_options_parse_and_refuse():
    options = mix_options(parse_key_values(["orders=1+2+6,slot_bits=14", "alpha=0.1", "lr=0.01"]))
    assert options == MixOptions(orders="1+2+6", slot_bits=14, alpha=0.1, lr=0.01)
    for bad in (["speed=3"], ["orders=0+1"], ["orders=1+1"], ["orders=a"], ["orders=9"], ["slot_bits=40"], ["alpha=0"], ["lr=-1"], ["lr=x"]):
        with pytest.raises(UsageError):
            mix_options(parse_key_values(bad))


def test_eval_cli_reports_the_mixed_figure(tmp_path, model, capsys):
    argv = [*eval_argv(tmp_path, model), "--no-baselines"]
    assert main([*argv, "--adapt", f"window={WINDOW}", "--mix", "orders=1+2,slot_bits=10"]) == 0
    assert "adaptive+mix" in capsys.readouterr().out
    for extra, message in ((["--mix"], "--mix needs --adapt"), (["--adapt", "--mix", "orders=0"], "mix orders")):
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
