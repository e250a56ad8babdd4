"""The names this package writes into MLflow and reads back: tags, param and metric keys, files.

Recording, the fast store reader, the pick and the printed tables import them from here, so a
key is spelled once. Pure modules (`pareto`) see arrays and plain records, never these keys.
"""

from __future__ import annotations

from exceedance.config import PENALTY_FORMS, QUALITY_DIRECTIONS

# Tags on every run this package creates.
ROLE = "exceedance.role"  # one of the roles below
SEARCH, TRIAL, TRAINING, FRONT = "search", "trial", "training", "front"  # FRONT: the experiment's joint front
SEARCH_KEY = "exceedance.search_key"  # a search's stable name (see `run_search.search_key`)
TRIAL_ID = "exceedance.trial_id"
FAILURE_REASON = "exceedance.failure_reason"  # why a FAILED trial failed
MODEL_NAME = "exceedance.model_name"  # on a training run: the registered model it became
PARENT = "mlflow.parentRunId"  # MLflow's own: a trial run's search run
ON_FRONT = "pareto"  # "true" on a trial that is on its search's Pareto front
VAL_ROWS = "val_rows"  # a trial's validation rows: the sample size of its rate's confidence bound
# A trial's test-row figures, one value each: tags (`test/exceedance_rate`), which MLflow lists
# on the run's overview, not metrics, each of which would get a one-point chart. A training run
# logs them as metrics under the same names.
TEST = "test/"
TEST_EXCEEDANCE_RATE = f"{TEST}exceedance_rate"
CERTIFICATE = "exceedance.certificate."  # prefix of a certified model's tags (certify.Certificate's fields)
PICKED = "picked"  # "true" on the one trial of an experiment `exceedance-pick` picked last
OVERRIDES, JOB_NUM = "hydra.overrides", "hydra.job_num"  # a multirun job's parent run
JOB = "exceedance.job"  # on a trial run: its multirun job's number (trial ids repeat across jobs)
WORKER = "exceedance.worker"  # on a trial run of a search with workers: the worker that trained it
# An experiment tag MLflow's UI writes when a user chooses the experiment's kind.
EXPERIMENT_KIND, MACHINE_LEARNING = "mlflow.experimentKind", "custom_model_development"
NOTE = "mlflow.note.content"  # a run's description, which MLflow shows as Markdown on its page

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
# Also on a search's parent run, after every finished trial: how the search is going.
FINISHED_TRIALS, FRONT_SIZE, LEAST_EXCEEDANCE_RATE = "finished_trials", "front_size", "least_val_exceedance_rate"
EXCEEDANCE_RATE = "exceedance_rate"
VAL_EXCEEDANCE_RATE = f"val_{EXCEEDANCE_RATE}"
VAL_QUALITIES = tuple(f"val_{q}" for q in QUALITY_DIRECTIONS)


def val_quality(quality: str) -> str:
    """The metric key of a quality on the validation rows, e.g. `val_within_tolerance`."""
    return f"val_{quality}"


def best_quality(quality: str) -> str:
    """The parent run's metric of its best validation quality so far, e.g. `best_val_within_tolerance`."""
    return f"best_val_{quality}"


# Artifacts.
CONFIG_FILE = "config.yaml"  # on a search or training run: its config, without tracking
FRONT_TABLE, FRONT_FIGURE = "pareto.csv", "pareto.png"  # on a search run
HISTOGRAM, CURVES = "predictions.png", "curves.png"  # on a finished trial run
# On the experiment's `front` run: its joint front as a table, a figure and an interactive page.
JOINT_TABLE, JOINT_FIGURE, JOINT_PAGE = "front.csv", "front.png", "front.html"
