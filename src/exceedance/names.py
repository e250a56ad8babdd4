"""The names this package writes into MLflow and reads back: tags, param and metric keys, files.

Recording, the fast store reader, the pick and the printed tables import them from here, so a
key is spelled once. Pure modules (`pareto`) see arrays and plain records, never these keys.
"""

from __future__ import annotations

from exceedance.config import PENALTY_FORMS, QUALITY_DIRECTIONS

# Tags on every run this package creates.
ROLE = "exceedance.role"  # one of the roles below
SEARCH, TRIAL, TRAINING = "search", "trial", "training"
SEARCH_KEY = "exceedance.search_key"  # a search's stable name (see `run_search.search_key`)
TRIAL_ID = "exceedance.trial_id"
FAILURE_REASON = "exceedance.failure_reason"  # why a FAILED trial failed
MODEL_NAME = "exceedance.model_name"  # on a training run: the registered model it became
PARENT = "mlflow.parentRunId"  # MLflow's own: a trial run's search run
ON_FRONT = "pareto"  # "true" on a trial that is on its search's Pareto front
VAL_ROWS = "val_rows"  # a trial's validation rows: the sample size of its rate's confidence bound
TEST_EXCEEDANCE_RATE = "test_exceedance_rate"
CERTIFICATE = "exceedance.certificate."  # prefix of a certified model's tags (certify.Certificate's fields)
PICKED = "picked"  # "true" on the one trial of an experiment `exceedance-pick` picked last
OVERRIDES, JOB_NUM = "hydra.overrides", "hydra.job_num"  # a multirun job's parent run

# A trial's params: what it tried (the searched values, in the user's units) ...
FORM = "form"  # the penalty form
THRESHOLD_OFFSET = "threshold_offset"  # searched; `threshold` is the value it gives
TARGET_RATE = "target_rate"  # a target-rate trial's target; its lambda is learned, the metric `lam`
SEARCHED = (
    FORM,
    "threshold",
    "lam",
    *sorted({e for extras in PENALTY_FORMS.values() for e in extras}),
    "learning_rate",
)
# ... and what it was measured against (also `base_loss`, `epochs`, `batch_size`). Trials that
# share these three are comparable: they can be on one front.
DATA, LIMIT, QUALITY = "data", "limit", "quality"  # data set name, evaluation limit, quality metric name

# Metric keys: every epoch's value is logged with the epoch as its step. On a search's parent run,
# with the number of finished trials as the step: the hypervolume of its own front, and of the
# experiment's joint front (all comparable trials of every search in the experiment).
HYPERVOLUME, JOINT_HYPERVOLUME = "hypervolume", "joint_hypervolume"
EXCEEDANCE_RATE = "exceedance_rate"
VAL_EXCEEDANCE_RATE = f"val_{EXCEEDANCE_RATE}"
VAL_QUALITIES = tuple(f"val_{q}" for q in QUALITY_DIRECTIONS)


def val_quality(quality: str) -> str:
    """The metric key of a quality on the validation rows, e.g. `val_within_tolerance`."""
    return f"val_{quality}"


# Artifacts.
CONFIG_FILE = "config.yaml"  # on a search or training run: its config, without tracking
FRONT_TABLE, FRONT_FIGURE = "pareto.csv", "pareto.png"  # on a search run
HISTOGRAM = "predictions.png"  # on a finished trial run
