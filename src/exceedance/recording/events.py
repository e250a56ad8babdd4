"""What the trial loop tells the recording side: one small dataclass per thing that happened.

The training process sends these to the recording process (`process.Recorder.send`); the
recording side (`search.SearchRecording.handle`) decides what each means in MLflow. A field or
an event renamed on one side fails in the linter on the other, not at run time in another
process. Nothing here imports MLflow, Keras or matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from exceedance.config import Config

# A finished trial's and a search's status, in MLflow's words.
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


@dataclass(frozen=True)
class SearchStarted:
    """A search begins or resumes; the recording side answers with its parent run's id.

    Args:
        uri: the tracking URI (checked by `stores.connect`).
        config: the search's configuration.
        search_key: the search's stable name; an earlier parent run with it is resumed.
        tags: extra tags for a new parent run (e.g. a multirun job's overrides).
        run_name: the parent run's name in the UI (default: the search's `name`).
        worker: for one of several workers on the search (`workers`), its name: it records its
            trials under the running parent run, which it neither resumes nor ends.
    """

    uri: str
    config: Config
    search_key: str
    tags: dict[str, str] = field(default_factory=dict)
    run_name: str = ""
    worker: str = ""


@dataclass(frozen=True)
class TrialStarted:
    """A trial begins with these params (searched values, and what it is measured against)."""

    trial_id: str
    params: dict[str, float | str | int]


@dataclass(frozen=True)
class EpochEnded:
    """A trial's metrics after epoch `step` (1-based)."""

    trial_id: str
    step: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class TrialEnded:
    """A trial ended: `FINISHED` with its test figures (after `step` epochs), or `FAILED` with a reason."""

    trial_id: str
    status: str
    step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str | None = None


@dataclass(frozen=True)
class TrialPredictions:
    """A finished trial's validation predictions (user units) and training threshold, to draw."""

    trial_id: str
    predictions: np.ndarray
    threshold: float


@dataclass(frozen=True)
class TrialsScored:
    """Trials that workers finished since the last such event (`workers`): trial id -> its final
    validation (quality, exceedance rate), as the chief's oracle has them, for the parent's summary."""

    scores: dict[str, tuple[float, float]]


@dataclass(frozen=True)
class WorkerLost:
    """The chief took back trials from a dead worker (`workers`): that worker's runs of them end
    KILLED, now and again when the search ends (its recording process may have died with it, or
    may record an end after the chief gave up on it)."""

    worker: str
    trial_ids: tuple[str, ...]


@dataclass(frozen=True)
class SearchEnded:
    """The search ended with `status`; the recording side answers with a `SearchSummary`."""

    status: str
    started: int = 0  # trials that workers started for it (`workers`), beside this process's own


@dataclass(frozen=True)
class SearchSummary:
    """What the recording side knows once a search has ended."""

    rows: list[dict]  # every finished trial as a Pareto table row, front first
    finished: int  # how many trials finished
    ui_command: str  # how to browse them
    started: int = 0  # how many trials this run of the search started (0: a rerun of a finished search)
    joint_front: list[dict] = field(default_factory=list)  # the experiment's joint front (see `front`)


Event = (
    SearchStarted | TrialStarted | EpochEnded | TrialEnded | TrialPredictions | TrialsScored | WorkerLost | SearchEnded
)
