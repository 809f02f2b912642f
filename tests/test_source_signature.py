"""Signatures of "module:attr" factories, read from the source without importing the module."""

import subprocess
import sys

import pytest

from charlm.source_signature import source_signature

IMPL = '''
raise RuntimeError("never imported")


def plain(options, model, *, max_len=None, **extra):
    pass


class Layer:
    def __init__(self, options, dim, eps=1e-6, /):
        pass


class Inherits(Layer):
    pass


def rebound(options):
    pass


rebound = Layer
'''


@pytest.fixture
def impl(tmp_path, monkeypatch):
    (tmp_path / "charlm_sig_impl.py").write_text(IMPL)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "charlm_sig_impl"


def test_a_function_or_an_init_is_read_as_declared(impl):
    assert str(source_signature(f"{impl}:plain")) == "(options, model, *, max_len=Ellipsis, **extra)"
    layer = source_signature(f"{impl}:Layer")
    assert str(layer) == "(options, dim, eps=Ellipsis, /)"  # self is not the caller's
    layer.bind(None, 8)
    with pytest.raises(TypeError):
        layer.bind(None, dim=8)  # positional-only, as declared
    assert impl not in sys.modules


def test_no_signature_where_the_source_shows_none(impl):
    assert source_signature(f"{impl}:Inherits") is None  # an inherited __init__
    assert source_signature(f"{impl}:rebound") is None  # a def rebound by assignment
    assert source_signature(f"{impl}:missing") is None
    assert source_signature("math:sqrt") is None  # a compiled module: no source


def test_a_registered_builtin_factory_has_its_signature_without_torch():
    code = (
        "import inspect, sys\n"
        "from charlm.registry import get_registry\n"
        "factory = get_registry().get('attention', 'gqa').factory\n"
        "print(inspect.signature(factory))\n"
        "sys.exit('torch was imported' if 'torch' in sys.modules else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(options, model, layer_index, positional, max_len)"
