"""The registry: the decorator names what it registers, packages are discovered lazily and once,
plugins come from entry points, and every built-in registry finds its modules by itself."""

from __future__ import annotations

import importlib
import importlib.metadata
import itertools
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from tunelab.config import DEFAULT_METHOD
from tunelab.data.tasks import TASK_FAMILIES
from tunelab.data.transforms import TRANSFORMS
from tunelab.eval.tasks import EVAL_TASKS
from tunelab.methods import METHODS, build_method
from tunelab.registry import Registry, RegistryError
from tunelab.regularizers import REGULARIZERS

_ids = itertools.count()


@pytest.fixture
def make_package(tmp_path, monkeypatch):
    """Write a throwaway package ``{module: source}`` on sys.path; returns its (unique) name."""
    made: list[str] = []

    def make(modules: dict[str, str]) -> str:
        name = f"regtest_pkg_{next(_ids)}"
        root = tmp_path / name
        root.mkdir()
        (root / "__init__.py").write_text("")
        for mod, src in modules.items():
            (root / f"{mod}.py").write_text(textwrap.dedent(src).format(pkg=name))
        made.append(name)
        return name

    monkeypatch.syspath_prepend(str(tmp_path))
    yield make
    for mod in [m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in made)]:
        del sys.modules[mod]


# -- names --------------------------------------------------------------------------------------


def test_register_sets_the_name_once():
    reg: Registry[type] = Registry("thing")

    @reg.register("alpha")
    class Alpha:
        pass

    @reg.register("beta")
    class Beta(Alpha):  # inherits name "alpha": the decorator sets its own
        pass

    assert (Alpha.name, Beta.name) == ("alpha", "beta")
    assert reg.get("beta") is Beta and reg.names() == ["alpha", "beta"] and "alpha" in reg


def test_a_declared_name_must_match_the_decorator():
    reg: Registry[type] = Registry("thing")

    @reg.register("same")
    class Same:
        name = "same"  # redundant but consistent: allowed

    assert reg.get("same") is Same
    with pytest.raises(RegistryError, match="declares name = 'other'"):

        @reg.register("mine")
        class Other:
            name = "other"


def test_duplicates_and_unknown_names_are_explained():
    reg: Registry[type] = Registry("thing")
    reg.register("a")(type("A", (), {}))
    with pytest.raises(RegistryError, match="'a' is registered twice"):
        reg.register("a")(type("B", (), {}))
    with pytest.raises(RegistryError, match="unknown thing 'z'; valid choices: a"):
        reg.get("z")


def test_functions_register_unchanged():
    reg: Registry = Registry("factory")

    @reg.register("f")
    def f():
        return 1

    assert reg.get("f") is f and not hasattr(f, "name")


# -- discovery ----------------------------------------------------------------------------------

_BASE = """
from tunelab.registry import Registry
REG = Registry("thing", package="{pkg}")
"""
_MODULE = """
import time
from {pkg}.base import REG
time.sleep({sleep})
RUNS = globals().get("RUNS", 0) + 1

@REG.register("{key}")
class Thing:
    \"\"\"A thing.\"\"\"
"""


def test_discovery_is_lazy_skips_private_modules_and_runs_once(make_package):
    pkg = make_package({"base": _BASE, "one": _MODULE.replace("{key}", "one").replace("{sleep}", "0"),
                        "two": _MODULE.replace("{key}", "two").replace("{sleep}", "0"),
                        "_private": "raise RuntimeError('private modules are not imported')",
                        "helper": "X = 1  # registers nothing: harmless"})
    reg = importlib.import_module(f"{pkg}.base").REG
    assert f"{pkg}.one" not in sys.modules  # nothing imported before first use
    assert reg.names() == ["one", "two"]
    assert reg.get("one").name == "one" and "two" in reg and list(reg) == ["one", "two"]
    reg.discover()
    assert sys.modules[f"{pkg}.one"].RUNS == 1 and f"{pkg}._private" not in sys.modules


def test_discovery_is_thread_safe(make_package):
    pkg = make_package({"base": _BASE, "slow": _MODULE.replace("{key}", "slow").replace("{sleep}", "0.3")})
    reg = importlib.import_module(f"{pkg}.base").REG
    seen: list[list[str]] = []
    threads = [threading.Thread(target=lambda: seen.append(reg.names())) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [["slow"]] * 6  # nobody saw a half-discovered registry
    assert sys.modules[f"{pkg}.slow"].RUNS == 1


def test_a_broken_module_raises_and_is_retried(make_package, tmp_path):
    pkg = make_package({"base": _BASE, "ok": _MODULE.replace("{key}", "ok").replace("{sleep}", "0"),
                        "broken": "raise ImportError('missing dependency')"})
    reg = importlib.import_module(f"{pkg}.base").REG
    with pytest.raises(ImportError, match="missing dependency"):
        reg.names()
    (tmp_path / pkg / "broken.py").write_text(_MODULE.replace("{key}", "fixed").replace("{sleep}", "0").format(pkg=pkg))
    importlib.invalidate_caches()
    assert reg.names() == ["fixed", "ok"]


def test_entry_point_plugins(make_package, monkeypatch):
    pkg = make_package({"plugin": '''
        class Plugged:
            """A plugged-in thing."""
        ''', "selfreg": _MODULE.replace("{key}", "selfreg").replace("{sleep}", "0"),
                        "base": _BASE.replace('package="{pkg}"', 'entry_points="regtest.things"')})
    reg = importlib.import_module(f"{pkg}.base").REG
    eps = [importlib.metadata.EntryPoint("plugged", f"{pkg}.plugin:Plugged", "regtest.things"),
           importlib.metadata.EntryPoint("ignored", f"{pkg}.selfreg", "regtest.things"),  # registers itself
           importlib.metadata.EntryPoint("broken", f"{pkg}.nowhere:Nothing", "regtest.things")]
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: [e for e in eps if e.group == group])
    with pytest.warns(RuntimeWarning, match="plugin 'broken'"):
        assert reg.names() == ["plugged", "selfreg"]
    assert reg.get("plugged").name == "plugged"


# -- the built-in registries --------------------------------------------------------------------

REGISTRIES = {"methods": METHODS, "regularizers": REGULARIZERS, "task families": TASK_FAMILIES,
              "transforms": TRANSFORMS, "eval tasks": EVAL_TASKS}
BUILTINS = {
    "methods": {"full", "lora", "ia3", "prefix", "prompt", "adapters", "lisa", "partial"},
    "regularizers": {"neftune", "very_large_dropout"},
    "task families": {"arith", "code", "instruct", "nlp"},
    "transforms": {"dedup", "near_dedup", "length", "empty_response", "refusal", "decontaminate", "cap"},
    "eval tasks": {"gsm8k", "humaneval", "mbpp", "judge", "nlp_mc", "perplexity"},
}


@pytest.mark.parametrize("kind", REGISTRIES)
def test_builtin_registries_find_their_modules(kind):
    reg = REGISTRIES[kind]
    assert BUILTINS[kind] <= set(reg.names())
    for name, obj in reg.items():
        if isinstance(obj, type):
            assert obj.name == name


def test_package_inits_list_no_modules():
    """Importing a registry's package imports none of its modules; first use imports them all."""
    code = textwrap.dedent("""
        import json, sys
        import tunelab.data.tasks, tunelab.data.transforms, tunelab.eval.tasks, tunelab.methods, tunelab.regularizers
        probe = ["tunelab.methods.lora", "tunelab.regularizers.neftune", "tunelab.data.tasks.arith",
                 "tunelab.data.transforms.filters", "tunelab.eval.tasks.gsm8k"]
        before = [m for m in probe if m in sys.modules]
        tunelab.methods.METHODS.names(); tunelab.regularizers.REGULARIZERS.names()
        tunelab.data.tasks.TASK_FAMILIES.names(); tunelab.data.transforms.TRANSFORMS.names()
        tunelab.eval.tasks.EVAL_TASKS.names()
        print(json.dumps({"before": before, "after": [m for m in probe if m in sys.modules]}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["before"] == [] and len(seen["after"]) == 5


def test_build_method_defaults_to_the_default_method():
    assert build_method(None).name == build_method({}).name == DEFAULT_METHOD
