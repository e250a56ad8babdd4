"""One tracked search, from a validated config to the Pareto table: `run(config) -> SweepResult`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from exceedance import data as data_module
from exceedance.config import Config, validate
from exceedance.recorder import Recorder
from exceedance.tracking import connect


class SearchStopped(RuntimeError):
    """The search cannot usefully go on (e.g. every recent trial diverged); the message says why."""


@dataclass
class SweepResult:
    """What a finished search left behind, and where."""

    tracking_uri: str
    experiment: str
    parent_run_id: str
    front: list[dict]
    ui_command: str
    trials: int


def search_key(config: Config) -> str:
    """A stable name for a search: the same command (same data, model, penalty and search
    settings) maps to the same key, so rerunning it resumes instead of starting over."""
    defining = dataclasses.asdict(config)
    defining.pop("tracking")
    for how_not_what in ("overwrite", "intra_op_threads", "inter_op_threads"):
        defining["search"].pop(how_not_what)
    digest = hashlib.sha1(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:10]
    return f"{config.name}-{digest}"


def run(config: Config, report: Callable[[str], None] = print, tags: dict[str, str] | None = None) -> SweepResult:
    """Validate, load data, check the store, then run and track one keras-tuner search.

    Everything that can be wrong with the input is checked before TensorFlow is imported and
    before anything is written to MLflow.

    Args:
        config: the composed configuration.
        report: receives one progress line per trial.
        tags: extra tags for the parent run (e.g. Hydra overrides).

    Returns:
        A `SweepResult` with the Pareto table of the search.
    """
    validate(config)
    dataset = data_module.load(config.data)
    uri = connect(config.tracking)
    recorder = Recorder()  # starts now, alongside the TensorFlow import
    try:
        return _search(config, dataset, uri, recorder, report, tags or {})
    except BrokenProcessPool:
        raise SearchStopped(
            "search stopped: the MLflow recording process died (killed or out of memory); the trials it "
            "recorded are kept: rerun the same command to resume the search"
        ) from None
    finally:
        recorder.close()


def _search(
    config: Config, dataset: data_module.Dataset, uri: str, recorder: Recorder, report, tags: dict[str, str]
) -> SweepResult:
    from exceedance.search import ExceedanceHyperModel, make_oracle
    from exceedance.trial import TrackedTuner, use_threads

    use_threads(config.search)

    # Every trial builds a new model, so fit() traces new graphs by design; that warning is noise here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    key = search_key(config)
    parent_id = recorder.open(uri, config, key, tags)
    tuner = TrackedTuner(
        make_oracle(config),
        ExceedanceHyperModel(config, dataset.n_features, dataset.n_outputs),
        config,
        recorder,
        directory=str(Path(config.search.directory).resolve()),
        project_name=key,
        overwrite=config.search.overwrite,
        report=report,
    )
    try:
        tuner.search(dataset)
    except BaseException as err:
        tuner.flush(raise_errors=False)
        recorder.submit("finish", "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED").result()
        raise
    tuner.flush()
    rows, trials, ui_command = recorder.submit("finish", "FINISHED").result()
    front = [row for row in rows if row["pareto"]]
    return SweepResult(uri, config.name, parent_id, front, ui_command, trials)
