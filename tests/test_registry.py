"""The plugin registry, through real entry points: throwaway distributions on sys.path."""

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import charlm_subprocess, make_distribution

import charlm
from charlm import registry as registry_module
from charlm.errors import PluginError
from charlm.registry import PluginLoadWarning, Registry

GOOD = """
    import attrs
    import charlm

    @attrs.define
    class HalfConfig:
        floor: float = 0.5

    def half(cfg):
        return lambda step, progress: max(cfg.floor, 1 - progress)

    @charlm.hookimpl
    def register_schedulers(register):
        register("half", half, config=HalfConfig, help="never below half")

    @charlm.hookimpl
    def register_samplers(register):
        register("noop", lambda options: (lambda logits, generator: logits), help="does nothing")
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in [n for n, m in sys.modules.items() if str(getattr(m, "__file__", None)).startswith(str(site))]:
        del sys.modules[name]  # the next test's plugin of the same name is a new module


def test_entry_point_plugin_is_discovered(site):
    make_distribution(site, "charlm-half", "half", "charlm_half_plugin", GOOD, version="2.3")
    registry = Registry()
    info = next(p for p in registry.plugins if p.name == "half")
    assert (info.distribution, info.version, info.module, info.status) == ("charlm-half", "2.3", "charlm_half_plugin", "ok")
    assert [c.name for c in info.components["scheduler"]] == ["half"]
    comp = registry.get("scheduler", "half")
    assert comp.help == "never below half" and comp.plugin == "half"
    schedule = comp.factory(comp.config())
    assert schedule(0, 0.9) == 0.5


def test_broken_plugin_warns_and_others_still_load(site):
    make_distribution(site, "charlm-broken", "broken", "charlm_broken_plugin", "raise RuntimeError('boom')\n")
    make_distribution(site, "charlm-half", "half", "charlm_half_plugin", GOOD)
    with pytest.warns(PluginLoadWarning, match=r"'broken' \(charlm-broken 1.0.*boom"):
        registry = Registry()
    broken = next(p for p in registry.plugins if p.name == "broken")
    assert broken.status == "failed" and "RuntimeError: boom" in broken.error
    assert "half" in registry.names("scheduler")


def test_duplicate_component_names_both_plugins(site):
    make_distribution(site, "charlm-half", "half", "charlm_half_plugin", GOOD)
    make_distribution(site, "charlm-half-too", "half_too", "charlm_half_too_plugin", GOOD)
    registry = Registry()  # a clash does not stop loading: list-plugins must be able to show it
    assert [(c.kind, c.name, c.first, c.second) for c in registry.clashes] == [
        ("sampler", "noop", "half", "half_too"),
        ("scheduler", "half", "half", "half_too"),
    ]
    # entry points load in (distribution, name) order, hooks in kind order: samplers first
    with pytest.raises(PluginError, match=r"sampler 'noop' is registered by two plugins: 'half' and 'half_too'; "
                                          r"disable one with --disable-plugins half_too"):
        registry.check_clashes()


def test_duplicate_of_a_builtin_is_an_error(site):
    source = GOOD.replace('register("half"', 'register("cosine"')
    make_distribution(site, "charlm-cos", "cos", "charlm_cos_plugin", source)
    with pytest.raises(PluginError, match="'schedulers' and 'cos'"):
        Registry().check_clashes()


def test_two_entry_points_with_one_name_are_both_loaded(site):
    """pluggy's own loader would silently keep only one of them."""
    make_distribution(site, "charlm-a", "extra", "charlm_a_plugin", GOOD)
    make_distribution(site, "charlm-b", "extra", "charlm_b_plugin", GOOD.replace('"half"', '"half_b"').replace('"noop"', '"noop_b"'))
    registry = Registry()
    assert {"half", "half_b"} <= set(registry.names("scheduler"))


def test_disable_by_plugin_or_distribution_name(site):
    make_distribution(site, "charlm-half", "half", "charlm_half_plugin", GOOD)
    for name in ("half", "charlm-half"):
        registry = Registry(disabled={name})
        assert next(p for p in registry.plugins if p.name == "half").status == "disabled"
        assert "half" not in registry.names("scheduler")


def test_unknown_component_lists_available_and_hints():
    registry = Registry(entry_points=False)
    with pytest.raises(PluginError, match=r'unknown scheduler "cosin" \(available: constant, cosine, wsd\); did you mean "cosine"'):
        registry.get("scheduler", "cosin")
    if "ssm" not in registry.names("block"):
        with pytest.raises(PluginError, match="is charlm-ssm installed"):
            registry.get("block", "ssm")


def test_list_plugins_json_shows_ok_failed_and_disabled(site):
    make_distribution(site, "charlm-half", "half", "charlm_half_plugin", GOOD, version="2.3")
    make_distribution(site, "charlm-broken", "broken", "charlm_broken_plugin", "import not_a_module_anywhere\n")
    make_distribution(site, "charlm-off", "off", "charlm_off_plugin", GOOD.replace('"half"', '"off"').replace('"noop"', '"noop2"'))
    proc = charlm_subprocess("--disable-plugins", "off", "list-plugins", "--json", site=site)
    assert proc.returncode == 0, proc.stderr
    plugins = {p["name"]: p for p in json.loads(proc.stdout)}
    assert plugins["half"]["status"] == "ok" and plugins["half"]["version"] == "2.3"
    assert plugins["half"]["components"]["scheduler"] == [
        {"name": "half", "help": "never below half",
         "options": [{"name": "floor", "type": "float", "required": False, "default": 0.5}]}
    ]
    assert plugins["half"]["clashes"] == [] and plugins["half"]["registers_nothing"] is False
    assert plugins["broken"]["status"] == "failed" and "ModuleNotFoundError" in plugins["broken"]["error"]
    assert plugins["off"]["status"] == "disabled" and plugins["off"]["components"] == {}
    assert "warning: plugin 'broken'" in proc.stderr
    assert plugins["schedulers"]["distribution"] == "charlm-toolkit"


def test_list_plugins_text_and_env_disable(site):
    make_distribution(site, "charlm-half", "half", "charlm_half_plugin", GOOD)
    proc = charlm_subprocess("list-plugins", site=site, env={**os.environ, "CHARLM_DISABLE_PLUGINS": "half"})
    assert proc.returncode == 0
    assert "half  (charlm-half 1.0, charlm_half_plugin)  [disabled]" in proc.stdout
    assert "scheduler    cosine" in proc.stdout
    assert "warmup_steps: int" not in proc.stdout  # options only with --verbose


MISNAMED = """
    import charlm

    @charlm.hookimpl
    def register_sampler(register):  # the hook is register_samplers
        register("typical", lambda options: None)
"""

UNMARKED = """
    def register_samplers(register):  # no @charlm.hookimpl
        register("typical", lambda options: None)
"""


@pytest.mark.parametrize(
    "source, problem",
    [
        (MISNAMED, "register_sampler is not a charlm hook (did you mean register_samplers?); it is never called"),
        (UNMARKED, "register_samplers is not marked @charlm.hookimpl; it is never called"),
    ],
)
def test_a_hook_that_is_never_called_is_a_warning_naming_plugin_and_hook(site, source, problem):
    make_distribution(site, "charlm-typical", "typical", "charlm_typical_plugin", source)
    with pytest.warns(PluginLoadWarning) as caught:
        registry = Registry()
    messages = [str(w.message) for w in caught]
    assert f"plugin 'typical' (charlm-typical 1.0, charlm_typical_plugin): {problem}" in messages
    info = next(p for p in registry.plugins if p.name == "typical")
    assert info.status == "ok" and info.warnings == [problem] and info.registers_nothing


def test_a_builtin_hook_that_is_never_called_is_an_error(site, monkeypatch):
    (site / "charlm_builtin_typo.py").write_text(textwrap.dedent(MISNAMED))
    monkeypatch.setitem(registry_module.BUILTIN_MODULES, "typo", "charlm_builtin_typo")
    with pytest.raises(PluginError, match=r"^built-in plugin 'typo' \(charlm-toolkit .*\): register_sampler is not a charlm hook"):
        Registry(entry_points=False)


def test_list_plugins_marks_a_plugin_that_registers_nothing_and_its_uncalled_hook(site):
    make_distribution(site, "charlm-typical", "typical", "charlm_typical_plugin", MISNAMED)
    make_distribution(site, "charlm-empty", "empty", "charlm_empty_plugin", "import charlm\n")
    text = charlm_subprocess("list-plugins", site=site)
    assert text.returncode == 0, text.stderr
    empty = text.stdout.split("empty  (charlm-empty 1.0, charlm_empty_plugin)  [ok]\n")[1]
    assert empty.startswith("    (registers nothing)\n")
    assert "    warning: register_sampler is not a charlm hook (did you mean register_samplers?)" in text.stdout
    assert "warning: plugin 'typical' (charlm-typical 1.0, charlm_typical_plugin): register_sampler" in text.stderr
    plugins = {p["name"]: p for p in json.loads(charlm_subprocess("list-plugins", "--json", site=site).stdout)}
    assert plugins["empty"]["registers_nothing"] and plugins["empty"]["warnings"] == []
    assert plugins["typical"]["registers_nothing"] and "register_sampler" in plugins["typical"]["warnings"][0]
    assert not plugins["schedulers"]["registers_nothing"]


JOB = 'max_steps = 1\n[data]\ntrain = "d/train.bin"\nval = "d/val.bin"\n'
CLASH = "sampler 'noop' is registered by two plugins: 'half' and 'half_too'; disable one with --disable-plugins half_too"


def test_a_clash_is_listed_every_other_command_exits_2_and_disabling_resolves_it(site):
    make_distribution(site, "charlm-half", "half", "charlm_half_plugin", GOOD)
    make_distribution(site, "charlm-half-too", "half_too", "charlm_half_too_plugin", GOOD)
    job = site / "job.toml"
    job.write_text(JOB)

    listing = charlm_subprocess("list-plugins", site=site)
    assert listing.returncode == 0, listing.stderr
    assert f"warning: {CLASH} (or CHARLM_DISABLE_PLUGINS=half_too)" in listing.stderr
    assert listing.stdout.count("noop           does nothing  [clash: also registered by 'half_too']") == 1
    assert listing.stdout.count("noop           does nothing  [clash: also registered by 'half']") == 1
    plugins = {p["name"]: p for p in json.loads(charlm_subprocess("list-plugins", "--json", site=site).stdout)}
    for name in ("half", "half_too"):
        assert {"kind": "sampler", "name": "noop", "plugins": ["half", "half_too"]} in plugins[name]["clashes"]

    validate = charlm_subprocess("config", "validate", str(job), site=site)
    assert validate.returncode == 2
    assert validate.stderr.strip().splitlines() == [f"plugin error: {CLASH} (or CHARLM_DISABLE_PLUGINS=half_too)"]

    resolved = charlm_subprocess("--disable-plugins", "half_too", "config", "validate", str(job), site=site)
    assert resolved.returncode == 0, resolved.stderr
    plugins = {p["name"]: p for p in json.loads(charlm_subprocess("--disable-plugins", "half_too", "list-plugins", "--json", site=site).stdout)}
    assert plugins["half"]["clashes"] == [] and plugins["half_too"]["status"] == "disabled"


def test_list_plugins_verbose_shows_options_with_type_and_default(site):
    make_distribution(site, "charlm-half", "half", "charlm_half_plugin", GOOD)
    proc = charlm_subprocess("list-plugins", "--verbose", site=site)
    assert proc.returncode == 0, proc.stderr
    half = proc.stdout.split("    scheduler    half           never below half\n")[1]
    assert half.startswith("        floor: float  (default 0.5)\n")
    assert "        warmup_steps: int  (default 100)\n" in proc.stdout  # the built-in cosine


LAZY = """
    import attrs
    import charlm

    @attrs.define
    class ScaleConfig:
        by: float = 2.0

    @charlm.hookimpl
    def register_schedulers(register):
        register("scaled", "charlm_lazy_impl:scaled", config=ScaleConfig, help="imported when built")
"""


def test_a_factory_named_module_attr_is_imported_only_when_built(site):
    make_distribution(site, "charlm-lazy", "lazy", "charlm_lazy_plugin", LAZY)
    (site / "charlm_lazy_impl.py").write_text("def scaled(cfg):\n    return lambda step, progress: cfg.by\n")
    registry = Registry()
    comp = registry.get("scheduler", "scaled")
    assert "charlm_lazy_impl" not in sys.modules
    assert comp.factory(comp.config(by=3.0))(0, 0.5) == 3.0
    assert "charlm_lazy_impl" in sys.modules


def test_a_factory_path_that_names_no_module_fails_the_plugin(site):
    make_distribution(site, "charlm-lazy", "lazy", "charlm_lazy_plugin", LAZY.replace("charlm_lazy_impl", "charlm_nowhere"))
    with pytest.warns(PluginLoadWarning, match=r"""register_schedulers: factory of 'scaled': "charlm_nowhere:scaled" names no"""):
        registry = Registry()
    assert next(p for p in registry.plugins if p.name == "lazy").status == "failed"
    assert "scaled" not in registry.names("scheduler")


def test_the_public_api_resolves_without_importing_torch_until_used():
    code = (
        "import sys, charlm\n"
        "assert 'torch' not in sys.modules, 'import charlm imported torch'\n"
        "charlm.hookimpl, charlm.get_registry, charlm.positive, charlm.CharLMError\n"
        "assert 'torch' not in sys.modules, 'a light name imported torch'\n"
        "missing = [n for n in charlm.__all__ if getattr(charlm, n, None) is None]\n"
        "assert not missing, missing\n"
        # a submodule of the same name would replace the object once imported (charlm.download)
        "import types; charlm.get_registry()\n"
        "modules = [n for n in charlm.__all__ if n != 'testing' and isinstance(getattr(charlm, n), types.ModuleType)]\n"
        "assert not modules, modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


PLUGIN_SOURCES = sorted((Path(__file__).resolve().parents[1] / "plugins").glob("*/charlm_*/*.py"))


@pytest.mark.parametrize("path", PLUGIN_SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_plugins_import_only_the_public_api(path):
    """What the shipped plugins import from charlm is what a third party may: charlm.__all__."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "charlm":
            assert node.module in ("charlm", "charlm.testing"), f"{path.name}: from {node.module} import ..."
            if node.module == "charlm":
                assert {a.name for a in node.names} <= set(charlm.__all__), f"{path.name}: not in charlm.__all__"
        elif isinstance(node, ast.Import):
            assert all(a.name == "charlm" or not a.name.startswith("charlm.") for a in node.names), path.name
