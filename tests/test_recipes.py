"""Every command the README and results/*.md give a reader runs today: each `python -m MODULE`
names a module that exists, each `chelation-*` a console script the project installs, and each
training command's overrides compose into a valid job config (every value of every sweep,
a preset's own sweep included), as `--cfg job` would check them."""

from __future__ import annotations

import importlib.util
import itertools
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "results").glob("*.md"))]
TRAIN_ENTRIES = {"experiments.train", "chelation-train"}
COMMAND = re.compile(r"(?:\.venv/bin/)?(?:python -m ([\w.]+)|(chelation-[\w-]+))")
# what a reader substitutes by hand: left out of the composed overrides
PLACEHOLDER = re.compile(r"[<>]|\.\.\.|\bPORT\b|\bHEAD\b|\bN\b$")


@dataclass(frozen=True)
class Recipe:
    where: str  # file:line
    entry: str  # a module (python -m) or a console script
    args: tuple[str, ...]


def _shell_variables(text: str) -> dict[str, str]:
    """NAME=value and NAME="value" definitions a document makes for its commands."""
    found = {}
    for name, quoted, bare in re.findall(r'\b([A-Z][A-Z_]*)=(?:"([^"]*)"|([^\s`,;)]+))', text):
        found[name] = quoted or bare
    return found


def _expand(line: str, variables: dict[str, str]) -> str:
    for _ in range(3):  # definitions may use each other ($COMMON holds $URI)
        line = re.sub(r"\$([A-Za-z_]+)", lambda m: variables.get(m.group(1), m.group(0)), line)
    return line


def _recipes(path: Path) -> Iterator[Recipe]:
    text = path.read_text()
    variables = _shell_variables(text)
    lines = text.splitlines()
    loop: dict[str, list[str]] = {}
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i].strip()
        i += 1
        if m := re.search(r"\bfor (\w+) in ([^;]+); do", line):
            loop = {m.group(1): m.group(2).split()}
            continue
        for segment in re.split(r"`", line):
            found = COMMAND.search(segment)
            if not found:
                continue
            entry = found.group(1) or found.group(2)
            rest = segment[found.end():].split("#")[0]
            names = [n for n in loop if f"${n}" in rest] or [None]
            for name in names:
                values = loop[name] if name else [None]
                for value in values:
                    scope = {**variables, **({name: value} if name else {})}
                    try:
                        args = shlex.split(_expand(rest, scope))
                    except ValueError:
                        args = _expand(rest, scope).split()
                    yield Recipe(f"{path.relative_to(ROOT)}:{number}", entry, tuple(args))


RECIPES = [r for doc in DOCUMENTS for r in _recipes(doc)]


def test_the_documents_hold_recipes() -> None:
    entries = {r.entry for r in RECIPES}
    assert {"experiments.train", "chelation-train", "experiments.analyse"} <= entries
    assert len(RECIPES) > 30


def _console_scripts() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: f"{r.where}:{r.entry}")
def test_every_entry_point_exists(recipe: Recipe) -> None:
    if recipe.entry.startswith("chelation-"):
        assert recipe.entry in _console_scripts(), f"{recipe.where}: no script {recipe.entry}"
    else:
        try:
            found = importlib.util.find_spec(recipe.entry)
        except ModuleNotFoundError:  # its package is missing
            found = None
        assert found is not None, f"{recipe.where}: no module {recipe.entry}"


def _overrides(args: tuple[str, ...]) -> list[str]:
    return [a for a in args if "=" in a and not a.startswith("-") and "$" not in a
            and not PLACEHOLDER.search(a)]


def _variants(overrides: list[str]) -> Iterator[list[str]]:
    """Every value of every sweep, each beside the first value of the others."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = [_values(o) for o in parsed]
    firsts = [c[0] for c in choices]
    seen = set()
    for k, values in enumerate(choices):
        for value in values:
            variant = tuple(firsts[:k] + [value] + firsts[k + 1:])
            if variant not in seen:
                seen.add(variant)
                yield list(variant)


def _values(override) -> list[str]:
    if not override.is_sweep_override():
        return [override.input_line]
    key = override.get_key_element()
    if override.value_type == ValueType.INTERVAL_SWEEP:  # an Optuna range: its two ends
        interval = override.value()
        return [f"{key}={interval.start}", f"{key}={interval.end}"]
    return [f"{key}={v}" for v in override.sweep_string_iterator()]


def _sweep_params(cfg) -> list[str]:
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    return [f"{key}={value}" for key, value in params.items()]


TRAIN = [r for r in RECIPES if r.entry in TRAIN_ENTRIES]
_COMPOSED: set[tuple[str, ...]] = set()  # many recipes share presets: each variant checked once


@pytest.fixture(scope="module")
def conf_dir() -> str:
    from experiments.train import CONF

    return CONF


@pytest.mark.parametrize("recipe", TRAIN, ids=lambda r: f"{r.where}")
def test_every_training_recipe_composes_into_a_valid_job(recipe: Recipe, conf_dir: str) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from experiments.schema import register
    from experiments.train import job_config

    register()
    overrides = _overrides(recipe.args)
    with initialize_config_dir(conf_dir, version_base="1.3"):
        for variant in _variants(overrides):
            cfg = compose("config", overrides=variant, return_hydra_config=True)
            preset_sweep = _sweep_params(cfg)
            given = {o.split("=")[0].lstrip("+~") for o in variant}
            extra = [p for p in preset_sweep if p.split("=")[0] not in given]
            for full in itertools.islice(_variants(variant + extra), 40):
                if tuple(full) in _COMPOSED:
                    continue
                _COMPOSED.add(tuple(full))
                try:
                    composed = compose("config", overrides=full, return_hydra_config=True)
                    HydraConfig.instance().set_config(composed)  # presets interpolate it
                    with open_dict(composed):
                        del composed["hydra"]
                    job_config(composed)
                except Exception as err:  # noqa: BLE001 - the message names the recipe
                    pytest.fail(f"{recipe.where}: {' '.join(full)}: {err}")
