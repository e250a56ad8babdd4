"""Every conf/ option composes; every bad value gets a one-line message naming the field."""

from __future__ import annotations

import inspect
import itertools

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import CONF_DIR, compose_config
from exceedance.config import ConfigError, Range
from exceedance.run_search import search_key
from exceedance.validation import validate

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
    ("search.max_trials=0", "search.max_trials: must be >= 1, got 0"),
    ("search.epochs=0", "search.epochs: must be >= 1, got 0"),
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
    ("penalty.dual_lr=inf", "penalty.dual_lr: must be a finite number > 0, got inf"),
    ("penalty.dual_rows=0.5", "penalty.dual_rows: must be in [0, 0.5), got 0.5"),
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
