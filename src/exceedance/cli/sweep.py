"""`exceedance-sweep`: compose the Hydra config and run one tracked search per job."""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from exceedance import names
from exceedance.cli.errors import USAGE_ERROR, exit_on_user_error, run_hydra
from exceedance.cli.guard import CALLBACK_OVERRIDE, forget_job_folder, keep_secrets_from_hydra
from exceedance.cli.pick import DEFAULT_PICK_RATE, next_store
from exceedance.cli.table import cell, front_line
from exceedance.config import Config, register_configs, to_config
from exceedance.errors import redact
from exceedance.quiet import quiet_libraries, take_verbose_flag
from exceedance.recording.reader import open_trial_store
from exceedance.run_search import SearchResult, join, run
from exceedance.signals import end_like_ctrl_c, pass_to_the_jobs
from exceedance.store_folders import require_free_space
from exceedance.stores import resolve_uri

COMMAND = "exceedance-sweep"
# Hydra resolves the output folders (through the `safe_name` resolver) in the launching process
# and in every joblib worker, which imports this module to run its job.
register_configs()
# conf/ (with sweeps/) ships inside the package; see pyproject.toml.
CONFIG_MODULE = "exceedance.conf"


def format_front(result: SearchResult) -> str:
    """The Pareto-optimal trials as a fixed-width table."""
    return "\n".join(front_line(row) for row in [None, *result.front])


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="config")
def _sweep(cfg: DictConfig) -> None:
    end_like_ctrl_c()  # in a multirun's job too
    with _siblings_end_first(), _forgotten_if_refused():
        exit_on_user_error(COMMAND, _run_and_print, cfg)


@contextmanager
def _forgotten_if_refused():
    """A job whose input is refused (exit 2) leaves nothing: not even Hydra's files for it."""
    try:
        yield
    except SystemExit as stop:
        if stop.code == USAGE_ERROR:
            hydra_config = HydraConfig.get()
            multirun = hydra_config.mode == RunMode.MULTIRUN
            sweep_dir = hydra_config.sweep.dir if multirun else None
            forget_job_folder(hydra_config.runtime.output_dir, hydra_config.job.name, sweep_dir)
        raise


@contextmanager
def _siblings_end_first():
    """In a multirun, a job that fails (Ctrl-C included) waits until its sibling jobs have ended
    their searches before it reports: joblib answers a failed job by SIGKILLing the process tree
    of every other job, which would cut their records short and leave their runs RUNNING.

    Every running job holds a shared lock on one file of the multirun; a failing job drops its
    own and takes the lock exclusively, which it gets once no sibling is still recording.
    """
    hydra_config = HydraConfig.get()
    if hydra_config.mode != RunMode.MULTIRUN:
        yield
        return
    import fcntl

    path = Path(hydra_config.sweep.dir).resolve() / "jobs.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        try:
            yield
        except BaseException:
            fcntl.flock(handle, fcntl.LOCK_UN)
            fcntl.flock(handle, fcntl.LOCK_EX)
            raise


def job_overrides() -> list[str]:
    """This job's overrides that tell it apart: those of a named sweep's swept keys when it has
    them, else all but the sweep's name and Hydra's own."""
    hydra_config = HydraConfig.get()
    overrides = [o for o in hydra_config.overrides.task if not o.lstrip("+~").startswith(("sweeps=", "hydra"))]
    swept = set(hydra_config.sweeper.get("params") or {})
    return [o for o in overrides if o.lstrip("+~").partition("=")[0] in swept] or overrides


def _run_and_print(cfg: DictConfig) -> None:
    config = to_config(cfg, f"{HydraConfig.get().job.config_name}.yaml")  # a file without the schema: one line
    hydra_config = HydraConfig.get()
    overrides = " ".join(job_overrides())
    tags = {names.OVERRIDES: overrides or "(none)"}
    label = ""
    if hydra_config.mode == RunMode.MULTIRUN:
        tags[names.JOB_NUM] = str(hydra_config.job.num)
        label = f"[job {hydra_config.job.num}{' ' + overrides if overrides else ''}] "
    run_name = f"{config.name}: {overrides}" if overrides else config.name
    report = lambda line: print(f"{label}{line}", flush=True)  # noqa: E731
    if config.search.join:  # workers on a search another command serves
        ended_well = join(config, report)
        print(f"{label}{ended_well} of {config.search.workers} workers ended; the search's command prints its front")
        return
    result = run(config, report=report, tags=tags, run_name=run_name, label=label)
    if result.started == 0:
        print(
            f"{label}nothing new to run: search {run_name!r} had already finished its {result.trials} trials; "
            "raise search.max_trials to run more, or set search.overwrite=true to start it over"
        )
    if label:  # a multirun's jobs end with one line each; the launcher prints the joint front
        print(f"{label}{result.trials} finished trials, {len(result.front)} on this search's front", flush=True)
        return
    print(
        f"\n{result.trials} finished trials in experiment {result.experiment!r} "
        f"(parent run {result.parent_run_id}) at {redact(result.tracking_uri)}"
    )
    print(
        f"Pareto-optimal trials (validation {config.data.quality} against exceedance rate on limit "
        f"{config.data.limit:g}):"
    )
    print(format_front(result))
    print(f"\nBrowse: {redact(result.ui_command)}")
    print(f"Next: {pick_command(config, result.tracking_uri, result.front, [])}")


def pick_command(config: Config, uri: str, front: list[dict], limits: list[str]) -> str:
    """The `exceedance-pick` command for the experiment just swept: the searches' own cap when
    they set one, else 1 % when a front trial meets it, else the knee; the store when it is not
    the default; a limit when there are several."""
    command = f"exceedance-pick {config.name}"
    if config.search.max_exceedance is not None:
        pass
    elif any(row["exceedance_rate"] <= DEFAULT_PICK_RATE for row in front):
        command += f" --max-exceedance {DEFAULT_PICK_RATE:g}"
    else:
        command += " --knee"
    if len(limits) > 1:
        command += f" --limit {limits[0]}  (limits: {', '.join(limits)})"
    return next_store(command, uri)


class JointSummary(Callback):
    """At the end of a multirun, in the launching process: the experiment's joint Pareto front
    across its jobs (what the `front` run holds), how to browse it, and the command to pick."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        exit_on_user_error(COMMAND, _print_joint_front, config)


def _print_joint_front(cfg: DictConfig) -> None:
    from exceedance.recording.experiment import Experiment
    from exceedance.recording.front import joint_rows

    without_hydra = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    config: Config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), without_hydra))
    uri = resolve_uri(config.tracking)
    if open_trial_store(uri).experiment_id(config.name) is None:
        return  # no job got as far as recording
    experiment = Experiment(uri, config.name)
    groups = joint_rows(experiment)
    rows = [row for group in groups.values() for row in group]
    front = [row for row in rows if row["pareto"]]
    searches = len({row["search"] for row in rows})
    print(f"\n{experiment.name}: {len(rows)} finished trials of {searches} searches at {redact(uri)}")
    for (_, quality, limit), group in groups.items():
        print(f"Joint Pareto front (validation {quality} against exceedance rate on limit {cell(limit)}):")
        print(f"{'job':>4}  {front_line(None)}")
        for row in (r for r in group if r["pareto"]):
            print(f"{row['job']:>4}  {front_line(row)}")
    print(f"({len(front)} trials on the front; the `front` run holds it with a figure and a page)")
    print(f"\nBrowse: {redact(experiment.ui_command())}")
    print(f"Next: {pick_command(config, uri, front, sorted({key[2] for key in groups}))}")


def _ctrl_c_to_the_jobs(signum, frame) -> None:
    """A multirun's first Ctrl-C is for its jobs: each ends its search in order (records
    complete, runs KILLED) and the multirun ends with them. Were the launcher interrupted too,
    joblib would SIGKILL every job's process tree mid-write. A second Ctrl-C stops the launcher."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main() -> None:
    """Console entry point."""
    sys.argv[1:] = take_verbose_flag(sys.argv[1:])
    quiet_libraries()
    if {"-m", "--multirun"} & set(sys.argv[1:]):
        signal.signal(signal.SIGINT, _ctrl_c_to_the_jobs)
        pass_to_the_jobs()
    else:
        end_like_ctrl_c()
    sys.argv[1:] = [*exit_on_user_error(COMMAND, keep_secrets_from_hydra, sys.argv[1:]), CALLBACK_OVERRIDE]
    # Hydra writes its run folder under mlruns/ before the search starts: a full disk there
    # would fail inside Hydra, in a write that names no file.
    outputs = Path("mlruns").resolve()
    exit_on_user_error(COMMAND, require_free_space, outputs if outputs.is_dir() else Path.cwd())
    run_hydra(COMMAND, _sweep)


if __name__ == "__main__":
    sys.exit(main())
