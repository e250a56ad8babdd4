"""One tracked search, from a validated config to the Pareto table: `run(config) -> SearchResult`.

A sweep (`exceedance-sweep -m`) runs one of these per job.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import logging
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from exceedance import data as data_module
from exceedance.config import Config
from exceedance.errors import ConfigError, SearchStopped, TrackingLost
from exceedance.quiet import import_tensorflow
from exceedance.recording.events import FAILED, FINISHED, KILLED, SearchEnded, SearchStarted, TrialsScored, WorkerLost
from exceedance.recording.process import Recorder
from exceedance.signals import STOPPING, Terminated
from exceedance.stores import connect
from exceedance.tuner_folder import check_tuner_directory, claim
from exceedance.validation import validate


@dataclass
class SearchResult:
    """What a finished search left behind, and where."""

    tracking_uri: str
    experiment: str
    parent_run_id: str
    front: list[dict]
    ui_command: str
    trials: int
    started: int = 0  # trials this run started: 0 for a rerun of a finished search
    joint_front: list[dict] = dataclasses.field(default_factory=list)  # the experiment's (`recording.front`)


def search_key(config: Config) -> str:
    """A stable name for a search: the same command (same data, model, penalty and search
    settings) maps to the same key, so rerunning it resumes instead of starting over."""
    defining = dataclasses.asdict(config)
    defining.pop("tracking")
    for how_not_what in ("overwrite", "intra_op_threads", "inter_op_threads", "workers", "listen", "join"):
        defining["search"].pop(how_not_what)
    digest = hashlib.sha1(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:10]
    return f"{config.name}-{digest}"


def run(
    config: Config,
    report: Callable[[str], None] = print,
    tags: dict[str, str] | None = None,
    run_name: str = "",
    label: str = "",
) -> SearchResult:
    """Validate, load data, check the store and the tuner directory, claim the search, then run
    and track one keras-tuner search.

    Everything that can be wrong with the input is checked before TensorFlow is imported and
    before anything is written to MLflow.

    Args:
        config: the composed configuration.
        report: receives one progress line per trial.
        tags: extra tags for the parent run (e.g. Hydra overrides).
        run_name: the parent run's name (default: `config.name`).
        label: what `report` puts before each line (a multirun job's), for the workers' lines.

    Returns:
        A `SearchResult` with the Pareto table of the search.

    Raises:
        ConfigError: bad input (config, data, store, tuner directory).
        SearchStopped: the search is running elsewhere, or stopped (failures, lost store).
    """
    validate(config)
    dataset = data_module.load(config.data)
    key = search_key(config)
    project = check_tuner_directory(Path(config.search.directory), key, config.search.overwrite)
    uri = connect(config.tracking, config.name)  # the first write: every check above wrote nothing
    project.mkdir(parents=True, exist_ok=True)
    with claim(project), recording(config) as recorder:
        started = SearchStarted(uri, config, key, tags or {}, run_name)
        return _search(config, dataset, started, recorder, report, label)


def join(config: Config, report: Callable[[str], None] = print) -> int:
    """Start `search.workers` workers on the search served at `search.join` (from another host);
    return how many ended well. The input is checked as `run` checks it."""
    from exceedance import workers

    validate(config)
    data_module.load(config.data)
    key = search_key(config)
    check_tuner_directory(Path(config.search.directory), key, overwrite=False)
    uri = connect(config.tracking, config.name)
    return workers.join(config, uri, key, report)


def work(config: Config, report: Callable[[str], None]) -> None:
    """One worker process of a search whose oracle is served elsewhere (`workers`): keras-tuner's
    `KERASTUNER_*` variables say where, and name this worker."""
    from exceedance.worker import TUNER_ID

    dataset = data_module.load(config.data)
    uri = connect(config.tracking, config.name)
    with recording(config) as recorder:
        started = SearchStarted(uri, config, search_key(config), worker=os.environ[TUNER_ID])
        _search(config, dataset, started, recorder, report)


@contextmanager
def recording(config: Config):
    """A `Recorder` for the search, started now, alongside the TensorFlow import; its process
    dying is one line."""
    recorder = Recorder(config.tracking.timeout_s)
    try:
        yield recorder
    except BrokenProcessPool:
        raise SearchStopped(
            "search stopped: the MLflow recording process died (killed or out of memory); the trials it "
            "recorded are kept: rerun the same command to resume the search"
        ) from None
    finally:
        recorder.close()


def as_os_error(err: BaseException) -> OSError | None:
    """keras-tuner saves its state through TensorFlow's file API, whose errors are not `OSError`s:
    a full disk is a `ResourceExhaustedError` reading "<path>; No space left on device"."""
    import tensorflow as tf

    if not isinstance(err, tf.errors.OpError):
        return None
    path, _, reason = str(err.message).partition("; ")
    if not reason:
        return None
    code = errno.ENOSPC if "space" in reason.lower() else errno.EACCES if "ermission" in reason else errno.EIO
    return OSError(code, reason, path)


@contextmanager
def ctrl_c_deferred():
    """Let the search's end be recorded whole: a Ctrl-C (or SIGTERM, SIGHUP) that arrives meanwhile
    (one just as the last trial ends, or a second one while a cut search is being closed) is held
    back and raised once the records are complete, so no run is left RUNNING."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[KeyboardInterrupt] = []
    held = {signal.SIGINT: lambda *_: pressed.append(KeyboardInterrupt())}
    held.update({each: lambda signum, _: pressed.append(Terminated(signum)) for each in STOPPING})
    previous = {each: signal.getsignal(each) for each in held}
    for each, hold in held.items():
        if previous[each] not in (signal.SIG_IGN, None):  # one that already stopped us is ignored from then on
            signal.signal(each, hold)
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)
    if pressed:
        raise pressed[0]


def _search(
    config: Config,
    dataset: data_module.Dataset,
    started: SearchStarted,
    recorder: Recorder,
    report: Callable[[str], None],
    label: str = "",
) -> SearchResult:
    import_tensorflow()
    from exceedance.fitting import use_threads
    from exceedance.oracles import make_oracle
    from exceedance.search import ExceedanceHyperModel
    from exceedance.trial import ExceedanceTuner, failure_hint

    use_threads(config.search)

    # Every trial builds a new model, so fit() traces new graphs by design; that warning is noise here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    directory, project = str(Path(config.search.directory).resolve()), started.search_key
    overwrite = config.search.overwrite
    if started.worker:  # its own folder (the oracle's state is the chief's), started afresh
        directory, project, overwrite = f"{directory}/{project}/workers", started.worker, True
    try:
        with redirect_stdout(io.StringIO()):  # keras-tuner prints "Reloading Tuner from <file>" on a resume
            tuner = ExceedanceTuner(
                make_oracle(config),
                ExceedanceHyperModel(config, dataset.n_features, dataset.n_outputs, dataset.target),
                config,
                recorder,
                directory=directory,
                project_name=project,
                overwrite=overwrite,
                report=report,
            )
    except (ValueError, KeyError, TypeError, OSError) as err:  # state keras-tuner wrote but cannot reload
        raise ConfigError(
            f"search.directory: keras-tuner cannot resume from {directory}/{project} ({type(err).__name__}: {err}); "
            "rerun with search.overwrite=true to start this search over (its MLflow runs are kept)"
        ) from None
    chief = None
    if config.search.workers > 1 and not started.worker:
        from exceedance.workers import Chief

        def scored(scores: dict[str, tuple[float, float]]) -> None:  # a failure to record shows at the end
            recorder.send(TrialsScored(scores))

        def lost(worker: str, trial_ids: list[str]) -> None:
            recorder.send(WorkerLost(worker, tuple(trial_ids)))

        chief = Chief(tuner.oracle, config, started.uri, report, scored, lost, label)
    # The parent run is opened (and a resumed one set RUNNING) only once the tuner has loaded.
    parent_id = recorder.send(started).result()
    elsewhere = 0  # trials the workers started
    try:
        if chief is None:
            tuner.search(dataset)
        else:
            elsewhere = chief.run()
    except TrackingLost:
        raise  # the store is gone: nothing more can be recorded; a rerun resumes
    except BaseException as err:
        with ctrl_c_deferred():
            tuner.flush(raise_errors=False)
            recorder.send(SearchEnded(KILLED if isinstance(err, KeyboardInterrupt) else FAILED)).result()
        raise as_os_error(err) or err  # noqa: B904 (the error itself, or its OSError form)
    with ctrl_c_deferred():
        tuner.flush()
        summary = recorder.send(SearchEnded(FINISHED, elsewhere)).result()
    if summary.finished == 0 and not started.worker:
        reason = tuner.progress.last_failure or "see the workers' lines above"
        raise SearchStopped(f"search ended with no finished trial; last reason: {reason}. {failure_hint(reason)}")
    front = [row for row in summary.rows if row["pareto"]]
    return SearchResult(
        started.uri,
        config.name,
        parent_id,
        front,
        summary.ui_command,
        summary.finished,
        summary.started,
        summary.joint_front,
    )
