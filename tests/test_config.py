"""Every conf/ option composes; every bad value gets a one-line message naming the field."""

from __future__ import annotations

import pytest

from conftest import compose_config
from exceedance.cli.sweep import CONF_DIR
from exceedance.config import ConfigError, validate
from exceedance.sweep import search_key

GROUPS = ["data", "model", "penalty", "search", "tracking"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]
FILE_DATA = ["data.path=/x.csv", "data.targets=[y]", "data.limit=1"]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(group, option):
    config = compose_config([f"{group}={option}", *(FILE_DATA if option == "file" else [])])
    validate(config)


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
