"""Every conf/ option composes; every bad value gets a one-line message naming the field."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
import typing

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import CONF_DIR, compose_config
from exceedance.config import Config, ConfigError, DataConfig, Range, to_config
from exceedance.run_search import search_key
from exceedance.validation import validate, whole_number

GROUPS = ["data", "model", "penalty", "search", "tracking"]
OPTIONS = [(g, p.name[:-5]) for g in GROUPS for p in sorted((CONF_DIR / g).iterdir()) if p.name.endswith(".yaml")]
SWEEPS = sorted(p.name[:-5] for p in (CONF_DIR / "sweeps").iterdir() if p.name.endswith(".yaml"))
FILE_DATA = ["data.path=/x.csv", "data.targets=[y]", "data.limit=1"]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(group, option):
    config = compose_config([f"{group}={option}", *(FILE_DATA if option == "file" else [])])
    validate(config)


def sweep_jobs(sweep: str) -> list[list[str]]:
    """The overrides of every job of a sweep file, as Hydra's basic sweeper expands them."""
    params = compose_config([f"+sweeps={sweep}"], return_hydra_config=True).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    values = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in parsed]
    return [list(job) for job in itertools.product(*values)]


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_job_of_every_sweep_file_composes_and_validates(sweep):
    jobs = sweep_jobs(sweep)
    assert len(jobs) >= 2, f"sweeps/{sweep}.yaml sweeps nothing"
    for job in jobs:
        config = compose_config([f"+sweeps={sweep}", *job])
        validate(config)
        assert config.name == sweep


def test_a_typo_in_a_sweep_parameter_fails_composition():
    with pytest.raises(Exception, match="penalty/l3"):
        compose_config(["+sweeps=penalty_forms", "penalty=l3"])


def test_penalty_option_restricts_forms():
    assert compose_config(["penalty=l2"]).penalty.forms == ["l2"]
    assert compose_config([]).penalty.forms == ["l1", "l2", "sigmoid_count"]


def test_classification_data_sets_its_loss_and_output():
    config = compose_config(["data=breast_cancer"])
    assert config.model.output_activation == "sigmoid"
    assert config.penalty.base_loss == "binary_crossentropy"
    assert config.quality_direction == "max"


BAD = [
    ("penalty.forms=[l3]", "penalty.forms: unknown value 'l3'; allowed: l1, l2, sigmoid_count"),
    ("penalty.lam.low=-1", "penalty.lam.low: must be >= 0, got -1.0"),
    ("penalty.temperature.low=0", "penalty.temperature.low: must be > 0, got 0.0"),
    ("penalty.threshold_offset.high=inf", "penalty.threshold_offset.high: must be a finite number, got inf"),
    ("penalty.threshold_offset.low=nan", "penalty.threshold_offset.low: must be a finite number, got nan"),
    ("data.limit=nan", "data.limit: must be a finite number, got nan"),
    ("penalty.threshold_offset.low=2", "penalty.threshold_offset: low (2.0) must be <= high (0.2)"),
    ("search.max_trials=0", "search.max_trials: must be in 1..1000000, got 0"),
    ("search.epochs=0", "search.epochs: must be in 1..1000000, got 0"),
    ("search.oracle=annealing", "search.oracle: unknown value 'annealing'; allowed: random, bayesian"),
    ("data.name=mnist", "data.name: unknown value 'mnist'; allowed: synthetic"),
    ("search.sampler=cmaes", "search.sampler: unknown value 'cmaes'; allowed: tpe, nsga2"),
    ("search.max_exceedance=1.5", "search.max_exceedance: must be a rate in 0..1, got 1.5"),
    ("search.target_rates=[0.1,0]", "search.target_rates: needs rates in (0, 1), got [0.1, 0.0]"),
    ("search.reference_quality=nan", "search.reference_quality: must be a finite number, got nan"),
    ("data.quality=mae", "search.reference_quality: is required with data.quality=mae: the worst mae"),
    ("penalty.target_rate=0", "penalty.target_rate: must be a rate in (0, 1), got 0.0"),
    ("penalty.target_rate=1.5", "penalty.target_rate: must be a rate in (0, 1), got 1.5"),
    ("penalty.dual_lr=0", "penalty.dual_lr: must be a finite number > 0, got 0.0"),
    ("penalty.dual_lr=inf", "penalty.dual_lr: must be a finite number, got inf"),
    ("penalty.dual_rows=0.5", "penalty.dual_rows: must be in [0, 0.5), got 0.5"),
    # upper bounds where a huge value would crash after TensorFlow starts
    ("search.batch_size=99999999999999999999", "search.batch_size: must be in 1..1048576, got 99999999999999999999"),
    ("data.n_samples=1000000000000", "data.n_samples: must be in 1..100000000, got 1000000000000"),
    ("data.n_samples=20000000", "data.n_samples: 20000000 rows of 8 features and 4 outputs are 2.4e+08 values"),
    ("data.limit=1e39", "data.limit: must be a finite number, got 1e+39; a float32 model holds numbers within"),
    ("data.tolerance=inf", "data.tolerance: must be a finite number, got inf"),
    ("model.hidden_units=[8,1000000000]", "model.hidden_units: every layer needs 1..65536 units"),
    ("search.intra_op_threads=4294967296", "search.intra_op_threads: must be in 0..1024, got 4294967296"),
    ("tracking.start_timeout_s=0", "tracking.start_timeout_s: must be in (0, 86400] seconds, got 0.0"),
    ("tracking.timeout_s=1e300", "tracking.timeout_s: must be in (0, 86400] seconds, got 1e+300"),
    ("search.grid_points=1000", "search.grid_points: must be in 1..100, got 1000"),
]


@pytest.mark.parametrize(("override", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_values_name_the_field(override, message):
    with pytest.raises(ConfigError) as err:
        validate(compose_config([override]))
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_thread_settings_do_not_change_which_search_a_run_resumes():
    base = compose_config([])
    tuned = compose_config(["search.intra_op_threads=1", "search.inter_op_threads=1", "search.overwrite=true"])
    other = compose_config(["search.epochs=3"])
    assert search_key(tuned) == search_key(base) != search_key(other)


def test_targets_accept_a_single_name():
    file = ["data=file", "data.limit=1", "data.path=x.csv"]
    assert compose_config([*file, "data.targets=peak"]).data.targets == ["peak"]
    assert compose_config([*file, "data.targets=[peak]"]).data.targets == ["peak"]


def test_every_extension_point_names_the_same_entries_as_its_registry():
    """config.py lists each extension point's names for the checks before Keras is imported; the
    module that implements it holds the registry. Adding an entry to one and not the other fails here."""
    from exceedance import data, losses, metrics, oracles
    from exceedance.config import DATASETS, ORACLES, PENALTY_FORMS, QUALITY_DIRECTIONS, PenaltyConfig

    assert list(losses.FORMS) == list(PENALTY_FORMS)
    for form, function in losses.FORMS.items():
        extras = list(inspect.signature(function).parameters)[1:]
        assert extras == list(PENALTY_FORMS[form]), form
        for extra in extras:  # each searched from a range of its own in the penalty config
            assert isinstance(getattr(PenaltyConfig(), extra), Range), extra
    assert list(data.LOADERS) == list(DATASETS)
    assert list(metrics.QUALITIES) == list(metrics.QUALITY_VALUES) == list(QUALITY_DIRECTIONS)
    assert sorted(oracles.ORACLES) == sorted(ORACLES)


def test_unknown_names_raise_instead_of_falling_through():
    import numpy as np

    from exceedance import data, losses, metrics, oracles
    from exceedance.config import Config, DataConfig

    with pytest.raises(ValueError, match="unknown penalty form 'hinge'"):
        losses.penalty(np.zeros((2, 2)), 1.0, "hinge")
    with pytest.raises(ConfigError, match="unknown data set 'iris'"):
        data.load(DataConfig(name="iris", limit=1.0))
    with pytest.raises(ValueError, match="unknown quality metric 'r2'"):
        metrics.quality_metric("r2", 0.25)
    config = Config(data=DataConfig(limit=1.0))
    config.search.oracle = "annealing"
    with pytest.raises(ValueError, match="unknown oracle 'annealing'"):
        oracles.make_oracle(config)


# Text fields that hold numbers, with a value too large for them; every other text field is a name.
NUMERIC_TEXT = {
    "search.trials_per_step": "9" * 20,
    "search.listen": "127.0.0.1:" + "9" * 20,
    "search.join": "10.0.0.1:" + "9" * 20,
}
NAMES = {
    "name", "data.name", "data.quality", "data.path", "model._target_", "model.activation",
    "model.output_activation", "penalty.base_loss", "search.oracle", "search.sampler", "search.directory",
    "tracking.uri", "tracking.store_dir", "tracking.host",
}  # fmt: skip
NOT_NUMBERS = {"data.targets", "data.features", "model.options", "penalty.forms"}  # names; the builder's own


def numeric_fields(cls: type = Config, prefix: str = ""):
    """(field, values that must be refused) for every numeric field of the schema, found by walking
    its dataclasses: a field added without bounds in `validate` fails the test below."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path, kind = f"{prefix}{f.name}", hints[f.name]
        if kind is Range:
            for side in ("low", "high"):
                yield f"{path}.{side}", [1e300, -1e300, math.nan]
        elif dataclasses.is_dataclass(kind):
            yield from numeric_fields(kind, f"{path}.")
        elif kind is bool or kind == (bool | None):
            continue
        elif kind is int:
            yield path, [10**20, -(10**20), 10**5000]
        elif kind in (float, float | None):
            yield path, [1e300, -1e300, math.nan]
        elif kind == list[int]:
            yield path, [[10**20], [-(10**20)], [10**5000]]
        elif kind == list[float]:
            yield path, [[1e300], [-1e300]]
        elif kind is str and path in NUMERIC_TEXT:
            yield path, [NUMERIC_TEXT[path]]
        else:
            assert path in NAMES | NOT_NUMBERS, f"{path} ({kind}): is it a number? give it bounds in validate"


def _with(config: Config, path: str, value) -> Config:
    *sections, name = path.split(".")
    target = config
    for section in sections:
        target = getattr(target, section)
    setattr(target, name, value)
    return config


@pytest.mark.parametrize(("path", "values"), list(numeric_fields()), ids=[p for p, _ in numeric_fields()])
def test_every_numeric_field_has_both_bounds(path, values):
    validate(Config(data=DataConfig(limit=1.0)))  # the base passes
    for value in values:
        with pytest.raises(ConfigError) as err:
            validate(_with(Config(data=DataConfig(limit=1.0)), path, value))
        field = path.removesuffix(".low").removesuffix(".high")
        assert str(err.value).startswith(field), (value, str(err.value))
        assert "\n" not in str(err.value) and len(str(err.value)) < 300


def test_the_walk_finds_the_numeric_fields():
    found = {path for path, _ in numeric_fields()}
    assert {"data.n_samples", "search.batch_size", "tracking.port", "penalty.lam.high", "search.listen"} <= found
    assert {"model.hidden_units", "search.target_rates", "tracking.start_timeout_s"} <= found


@pytest.mark.parametrize(
    "text", ["\u00b2", "\u0663", "\uff11", "\u09e9", "1\u00b9", "-2", "+2", "1e3", "", " 8", "8\n", "9" * 5000]
)
def test_whole_numbers_are_ascii_digits_only(text):
    assert whole_number(text) is None  # '²' passes str.isdigit() but not int(); '٣' passes both
    steps = Config(data=DataConfig(limit=1.0))
    steps.search.trials_per_step = text
    with pytest.raises(ConfigError, match=r"^search\.trials_per_step: expected auto or a whole number in 1\.\.1024"):
        validate(steps)
    for field, value in (("listen", f"127.0.0.1:{text}"), ("join", f"10.0.0.1:{text}")):
        with pytest.raises(ConfigError, match=rf"^search\.{field}: must be HOST:PORT with a port in"):
            validate(_with(Config(data=DataConfig(limit=1.0)), f"search.{field}", value))


def test_whole_numbers_in_ascii_digits_are_read():
    assert [whole_number(t) for t in ("0", "8", "0016", "65535")] == [0, 8, 16, 65535]


PICKED = """\
{defaults}name: edited-picked
data: {{name: synthetic, limit: 1.0, n_samples: 300}}
penalty: {{forms: [l2]}}
search: {{batch_size: {batch_size}}}
"""


@pytest.mark.parametrize(
    ("defaults", "batch_size", "message"),
    [
        ("", 64, "config: picked.yaml does not start from the schema (its first line must be 'defaults: [base_config"),
        ("defaults: [_self_]\n", 64, "config: picked.yaml does not start from the schema"),
        ("defaults: [base_config, _self_]\n", 10**20, "search.batch_size: must be in 1..1048576"),
    ],
)
def test_an_edited_picked_file_is_one_line(tmp_path, defaults, batch_size, message):
    from hydra import compose, initialize_config_dir

    (tmp_path / "picked.yaml").write_text(PICKED.format(defaults=defaults, batch_size=batch_size))
    with pytest.raises(ConfigError) as err:
        with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
            validate(to_config(compose(config_name="picked"), "picked.yaml"))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
