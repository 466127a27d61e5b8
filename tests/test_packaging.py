"""The package is whole when installed: built-in recipes ship in the wheel and resolve by name.

``test_installed_wheel_runs_from_an_empty_folder`` builds the wheel from a copy of the source (nothing is
downloaded: ``--no-build-isolation --no-index``), installs it into a fresh venv that sees this
environment's dependencies but not its editable tunelab, and runs the CLI from an empty folder (~25 s).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tunelab.config import BUILTIN_RECIPES, ConfigError, builtin_recipes, load_recipe, resolve_recipe

ROOT = Path(__file__).resolve().parents[1]
REPO_RECIPES = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))
REPO_SWEEPS = sorted(p.name for p in (ROOT / "recipes" / "sweeps").glob("*.yaml"))


# ---------------------------------------------------------------------------- names -> recipes


def test_package_recipes_are_the_repository_recipes() -> None:
    assert BUILTIN_RECIPES.resolve() == (ROOT / "recipes").resolve()  # the link tunelab/recipes -> ../recipes
    assert sorted(f"{n}.yaml" for n in builtin_recipes()) == REPO_RECIPES
    assert {"quickstart", "tiny", "lora", "failures"} <= set(builtin_recipes())


def test_a_name_resolves_to_the_builtin_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no recipe files here
    assert resolve_recipe("quickstart") == resolve_recipe("quickstart.yaml") == BUILTIN_RECIPES / "quickstart.yaml"
    cfg = load_recipe("tiny", ["train.max_steps=2"])
    assert cfg.model.name == "tiny" and cfg.train.max_steps == 2
    # a recipe loaded by name resolves its relative paths exactly as the same file loaded by its path
    for name in ("failures", "evolve", "quickstart"):
        assert load_recipe(name).recipe_dir == load_recipe(ROOT / "recipes" / f"{name}.yaml").recipe_dir \
            == str((ROOT / "recipes").resolve())
    pool = load_recipe("failures").data.sources[0]  # generated when first needed: no file to find
    assert pool.path is None and pool.generate == {"kind": "drill", "env": "calculator", "tasks": 320, "seed": 0}


def test_an_existing_file_wins_over_a_builtin_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("quickstart").write_text("model: {name: tiny}\ndata: {sources: [{name: a, task: arith}]}\n")
    assert resolve_recipe("quickstart") == Path("quickstart")
    assert load_recipe("quickstart").recipe_dir == str(tmp_path.resolve())


def test_an_unknown_name_lists_the_builtin_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="recipe not found: quickstrat") as e:
        load_recipe("quickstrat")
    assert all(name in str(e.value) for name in builtin_recipes())
    with pytest.raises(ConfigError, match="recipe not found"):
        resolve_recipe("sub/quickstart.yaml")  # a path with folders is a path: never a built-in name


def test_validate_and_quickstart_use_the_builtin_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import tunelab.cli as cli
    import tunelab.cli.runs as run_commands

    monkeypatch.chdir(tmp_path)
    Path("quickstart").write_text("not: a recipe\n")  # a stray file named like the recipe does not hijack quickstart
    assert cli.main(["validate", "tiny"]) == 0 and "tiny: ok" in capsys.readouterr().out
    assert cli.main(["validate", "nosuchrecipe"]) == 2
    assert "built-in: " in capsys.readouterr().err

    class Stop(Exception):
        pass

    def fake_run(recipe: Path, *args: object, **kwargs: object) -> Path:
        seen.append(Path(recipe))
        raise Stop

    seen: list[Path] = []
    monkeypatch.setattr(run_commands, "run", fake_run)
    with pytest.raises(Stop):
        cli.main(["quickstart"])
    assert seen == [BUILTIN_RECIPES / "quickstart.yaml"]


# ---------------------------------------------------------------------------- the wheel


def _copy_source(dest: Path) -> Path:
    """What a fresh clone holds for the build (the ``tunelab/recipes`` link kept as a link)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    for name in ("tunelab", "recipes"):
        shutil.copytree(ROOT / name, dest / name, symlinks=True, ignore=ignore)
    assert (dest / "tunelab" / "recipes").is_symlink()
    return dest


def test_installed_wheel_runs_from_an_empty_folder(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in this environment")
    src = _copy_source(tmp_path / "src")
    wheels = tmp_path / "wheels"
    run = {"capture_output": True, "text": True, "timeout": 900}  # generous: a loaded CI host is slow
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "--no-index", str(src), "-w", str(wheels)], **run)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("tunelab-*.whl")

    with zipfile.ZipFile(wheel) as z:
        infos = {i.filename: i for i in z.infolist()}
    shipped = sorted(n.removeprefix("tunelab/recipes/") for n in infos if n.startswith("tunelab/recipes/"))
    assert shipped == sorted(REPO_RECIPES + [f"sweeps/{n}" for n in REPO_SWEEPS])
    assert "tunelab/recipes/quickstart.yaml" in infos and "tunelab/py.typed" not in infos
    assert all(stat.S_ISREG(infos[f"tunelab/recipes/{n}"].external_attr >> 16) for n in REPO_RECIPES)  # files, no links

    # a fresh venv: tunelab from the wheel only; the dependencies (torch ...) from this environment's
    # site-packages, added as a plain path so its .pth files (the editable tunelab) are not run
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, **run)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, **run).stdout.strip()
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    Path(purelib, "_tunelab_test_deps.pth").write_text("\n".join(deps) + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                                "--no-index", str(wheel)], **run)
    assert installed.returncode == 0, installed.stderr[-3000:]

    empty, home = tmp_path / "empty", tmp_path / "home"
    empty.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HOME=str(home), TUNELAB_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    run.update(cwd=empty, env=env)
    where = subprocess.run([str(py), "-c", "import tunelab.config as c; print(c.__file__); "
                                           "print(c.builtin_recipes()['quickstart'])"], **run)
    assert where.returncode == 0, where.stderr[-3000:]
    module, quickstart = where.stdout.split()
    assert Path(module).is_relative_to(venv) and Path(quickstart).is_relative_to(venv), where.stdout
    assert Path(quickstart).is_file() and not Path(quickstart).is_symlink()

    tunelab = str(venv / "bin" / "tunelab")
    ok = subprocess.run([tunelab, "validate", "quickstart"], **run)
    assert ok.returncode == 0 and ok.stdout.strip() == "quickstart: ok", ok.stdout + ok.stderr[-3000:]
    unknown = subprocess.run([tunelab, "validate", "quickstrat"], **run)
    assert unknown.returncode == 2 and "built-in: " in unknown.stderr and "quickstart" in unknown.stderr
    listing = subprocess.run([tunelab, "ls"], **run)
    assert listing.returncode == 0, listing.stderr[-3000:]
    assert "smollm2-135m-instruct" in listing.stdout and "methods:" in listing.stdout
    assert list(empty.iterdir()) == []  # nothing written into the current folder
