"""The project as a wheel: its package list matches the packages on disk, the Hydra menu (conf/ at
the top) ships inside it, and a job runs from an installed wheel, outside the source tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# what the wheel is built from (pyproject's readme included); nothing else of the checkout
SOURCES = ("pyproject.toml", "README.md", "chelation", "experiments", "benchmarks", "conf",
           "hydra_plugins")


def test_the_listed_packages_are_the_packages_on_disk() -> None:
    """pyproject lists its packages (discovery cannot map conf/ to experiments.conf): a package
    added on disk and not listed would be missing from the wheel, and this names it."""
    setuptools = PYPROJECT["tool"]["setuptools"]
    on_disk = {".".join(init.parent.relative_to(REPO).parts)
               for top in ("chelation", "experiments", "benchmarks", "hydra_plugins")
               for init in (REPO / top).rglob("__init__.py")}
    assert set(setuptools["packages"]) == on_disk | {"experiments.conf"}
    assert setuptools["package-dir"] == {"experiments.conf": "conf"}


def test_the_source_tree_composes_from_conf_at_the_top() -> None:
    from experiments.train import CONF

    assert Path(CONF) == REPO / "conf"


def test_console_scripts_name_modules_that_exist() -> None:
    for script, target in PYPROJECT["project"]["scripts"].items():
        module, _, function = target.partition(":")
        path = REPO.joinpath(*module.split(".")).with_suffix(".py")
        assert path.is_file(), (script, target)
        assert f"def {function}(" in path.read_text(), (script, target)


@pytest.mark.slow
def test_a_job_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    """Build a wheel, install it into a bare folder, and run one job through its console script
    from outside the repository (dependencies from this interpreter's environment)."""
    source, wheels, site, work = (tmp_path / n for n in ("source", "wheels", "site", "work"))
    source.mkdir()
    for name in SOURCES:  # a copy: the build's own folders stay out of the checkout
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                    str(source)], check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("chelation-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    assert (site / "experiments" / "conf" / "config.yaml").is_file()
    assert (site / "experiments" / "conf" / "mode" / "hybrid.yaml").is_file()
    script = site / "bin" / "chelation-train"
    assert script.is_file()

    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               CHELATION_CACHE=os.environ["CHELATION_TEST_CACHE"])
    # the console script, run in a process that first says where its modules came from
    probe = ("import sys, runpy, chelation, experiments, experiments.train as t; "
             "print('MODULES', experiments.__file__, t.__file__, chelation.__file__, t.CONF); "
             f"sys.argv[0] = {str(script)!r}; runpy.run_path(sys.argv[0], run_name='__main__')")
    done = subprocess.run(
        [sys.executable, "-c", probe, "mode=baseline", "cycles=1", "queries_per_cycle=10",
         "query_cost_sample=0", "show_progress=false", f"tracking.uri=sqlite:///{work}/mlflow.db",
         f"hydra.run.dir={work}/job"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("MODULES "))
    paths = line.split()[1:]
    assert len(paths) == 4
    for path in paths:  # the wheel's code and menu, not the checkout's
        assert Path(path).is_relative_to(site), path
    results = json.loads((work / "job" / "results.json").read_text())
    assert results["config_label"] == "baseline" and len(results["cycles"]) == 2
    assert 0.0 < results["final_ndcg_at_10"] <= 1.0
    assert "experiments/conf" in (work / "job" / ".hydra" / "hydra.yaml").read_text()
