"""Contract checks for samplers, exporters and data sources (``charlm.testing`` re-exports them).

::

    from charlm.testing import check_data_source, check_exporter, check_sampler

    def test_my_components():
        check_sampler("typical", {"mass": 0.9})
        check_exporter("npz")
        check_data_source("my_corpus", {"url": "file:///path/to/a/local/copy"})

Each raises ``AssertionError`` saying what broke and what the author must fix.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from charlm.config import resolve_component
from charlm.registry import get_registry


def _create(kind: str, name: str, options: dict | None):
    """The registered component ``name`` built with ``options`` structured into its attrs class."""
    spec = resolve_component({"kind": name, **(options or {})}, kind, kind)
    return get_registry().create(kind, spec)


# ---------------------------------------------------------------- samplers


def check_sampler(sampler, options=None, *, batch: int = 4, draws: int = 64, seed: int = 0):
    """Check a sampler: a registered name (``options`` a dict of its options) or a factory
    (called as ``factory(options)``), run as ``charlm generate`` runs it, alone in a chain.

    Asserts that tokens come back as int64 [B] in range, that the input logits are not
    changed in place, that the same seeded generator gives the same tokens, and that a byte
    whose logit is -inf (dropped by an earlier step of a chain) is never drawn.
    """
    from charlm.generate import SamplerChain

    step = _create("sampler", sampler, options) if isinstance(sampler, str) else sampler(options)
    chain = SamplerChain([step])
    generator = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch, 256, generator=generator)
    logits[:, 1::3] = float("-inf")  # dropped by an earlier step
    logits[0, 1:] = float("-inf")  # one byte left: the only possible draw
    original = logits.clone()

    def draw(seed: int) -> torch.Tensor:
        try:
            return chain(logits, torch.Generator().manual_seed(seed))
        except Exception as exc:
            raise AssertionError(
                f"the sampler failed on logits [{batch}, 256] with -inf entries: {type(exc).__name__}: {exc}"
            ) from exc

    tokens = draw(seed)
    assert torch.equal(logits, original), (
        "the sampler changed the logits it was given in place; return a new tensor (masked_fill, not masked_fill_)"
    )
    assert isinstance(tokens, torch.Tensor) and tokens.shape == (batch,) and tokens.dtype == torch.int64, (
        f"a chain must end in int64 tokens [{batch}], got {_describe(tokens)}; a filter returns logits"
        " [B, V] (dropped entries -inf), a picker returns tokens [B]"
    )
    assert torch.equal(draw(seed), tokens), (
        "the same seeded generator gave different tokens; draw with the generator the sampler is given"
        " (torch.multinomial(..., generator=generator)), never the global RNG"
    )
    for i in range(draws):
        tokens = draw(seed + 1 + i)
        assert ((tokens >= 0) & (tokens < 256)).all(), f"tokens out of range 0..255: {tokens.tolist()}"
        picked = original.gather(1, tokens[:, None]).squeeze(1)
        assert torch.isfinite(picked).all(), (
            f"drew a byte whose logit is -inf (rows {torch.nonzero(~torch.isfinite(picked)).flatten().tolist()});"
            " keep -inf entries at -inf and never pick them"
        )


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} {list(value.shape)}"
    return type(value).__name__


# ---------------------------------------------------------------- exporters


def check_exporter(name: str, options: dict | None = None, *, model_cfg: dict | None = None, max_len: int = 32,
                   tolerances: dict[str, float] | None = None, seed: int = 0):
    """Check an exporter: export a small random model (``charlm.testing.SMALL_MODEL`` with
    ``model_cfg``), load it back through the exporter's ``Runner`` and run the validation
    gates of ``charlm export`` (``tolerances`` as ``--tolerance``). Returns the report."""
    from charlm.export import validate
    from charlm.testing import build_random, small_job

    exporter = _create("exporter", name, options)
    assert isinstance(getattr(exporter, "suffix", None), str), "the exporter needs a suffix (str), e.g. \".npz\""
    assert isinstance(getattr(exporter, "exact", None), bool), (
        "the exporter needs exact (bool): True for lossless formats, False for lossy ones (int8, bf16)"
    )
    job = small_job(model_cfg, seq_len=max_len)
    torch.manual_seed(seed)
    model = build_random(job.model, max_len)
    with torch.no_grad():  # a random model's next-byte choice is a near tie: sharpen it so top-1 can be gated
        model.embed.weight.mul_(8)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"model{exporter.suffix}"
        _step("export(model, job, path)", lambda: exporter.export(model, job, path))
        assert path.exists(), f"export() wrote nothing at the path it was given ({path.name})"
        runner = _step("load(path, device)", lambda: exporter.load(path, torch.device("cpu")))
        assert getattr(runner, "max_len", None) == max_len, (
            f"the runner's max_len is {getattr(runner, 'max_len', None)!r}, expected the trained context {max_len}:"
            " store seq_len in the artefact"
        )
        report = _step("running the loaded artefact", lambda: validate(model, runner, path, name, exporter.exact, None, tolerances))
    failed = [f"{gate} {g['value']:.3g} (bound {g['op']} {g['bound']:g})" for gate, g in report.gates.items() if not g["passed"]]
    assert not failed, (
        f"the loaded artefact fails the {'exact' if exporter.exact else 'lossy'} export gates: {', '.join(failed)};"
        " load() must give back the model export() wrote"
        + (" (a format that rounds weights is exact = False)" if exporter.exact else "")
    )
    return report


def _step(what: str, call):
    try:
        return call()
    except Exception as exc:
        raise AssertionError(f"{what} failed on a small model: {type(exc).__name__}: {exc}") from exc


# ---------------------------------------------------------------- data sources


def check_data_source(name: str, options: dict | None = None) -> dict:
    """Check a data source: fetch into a temporary directory, pack the files as ``charlm data
    pull`` does and find the provenance in ``meta.json``; a second fetch must give the same
    documents. ``options`` should point it at a local copy (tests run offline). Returns the meta."""
    from charlm.prepare import prepare

    source = _create("data_source", name, options)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        files = _step("fetch(dest)", lambda: source.fetch(raw))
        _check_fetched(files, raw)
        contents = [Path(f).read_bytes() for f in files]
        again = _step("a second fetch(dest)", lambda: source.fetch(raw))
        assert [Path(f) for f in again] == [Path(f) for f in files] and [Path(f).read_bytes() for f in again] == contents, (
            "a second fetch into the same directory returned other documents; reuse the verified copy and"
            " return the same files in the same order"
        )
        provenance = _step("provenance()", source.provenance)
        assert isinstance(provenance, dict) and provenance, (
            f"provenance() must return a non-empty dict (URL, digest, ...), got {provenance!r}"
        )
        try:
            json.dumps(provenance)
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"provenance() must hold plain JSON values (str, numbers, lists, dicts): {exc}") from None
        # no split: a one-document corpus is fine, and the split is the user's choice at pull time
        prepare(files, Path(tmp) / "packed", val_fraction=0, source={"name": name, **provenance})
        meta = json.loads((Path(tmp) / "packed" / "meta.json").read_text())
    assert all(meta["source"].get(key) == value for key, value in provenance.items()), (
        f"meta.json does not record the provenance: {meta.get('source')!r}"
    )
    return meta


def _check_fetched(files, dest: Path) -> None:
    assert isinstance(files, list) and files, (
        f"fetch() must return the corpus's documents as a non-empty list of paths, got {files!r}"
    )
    for f in files:
        path = Path(f)
        assert path.is_file(), f"fetch() returned {f}, which is not a file"
        assert path.resolve().is_relative_to(dest.resolve()), f"fetch() returned {f}, outside the directory it was given"
    assert sum(Path(f).stat().st_size for f in files) > 0, "fetch() returned only empty files"
