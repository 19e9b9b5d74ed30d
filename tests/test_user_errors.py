"""Hydra's multi-line composition errors said in one line (the CLI itself: tests/test_faults.py
and the battery, benchmarks/bad_inputs.py)."""

from __future__ import annotations

from experiments.user_errors import hydra_error_line

MISSING_OPTION = """In 'config': Could not find 'weight/nope'

Available options in 'weight':
\tconstant
\tcosine
\tlinear
Config search path:
\tprovider=hydra, path=pkg://hydra.conf

Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.
"""

WRONG_TYPE = """Error merging override cycles=many
Value 'many' of type 'str' could not be converted to Integer
    full_key: cycles
    object_type=JobConfig

Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.
"""


def test_a_missing_option_keeps_the_choices_on_one_line() -> None:
    assert hydra_error_line(MISSING_OPTION) == (
        "In 'config': Could not find 'weight/nope'; available options in 'weight': "
        "constant, cosine, linear")


def test_a_value_of_the_wrong_type_names_its_key() -> None:
    line = hydra_error_line(WRONG_TYPE)
    assert "\n" not in line and "full_key: cycles" in line and "Set the environment" not in line
