"""`exceedance-sweep`: compose the Hydra config and run one tracked search per job."""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from exceedance.cli.errors import exit_on_user_error, run_hydra
from exceedance.cli.table import front_line
from exceedance.config import Config, register_configs
from exceedance.errors import ConfigError, has_userinfo, redact
from exceedance.run_search import SearchResult, run
from exceedance.stores import require_free_space

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
    with _siblings_end_first():
        exit_on_user_error(COMMAND, _run_and_print, cfg)


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


def _run_and_print(cfg: DictConfig) -> None:
    config: Config = OmegaConf.to_object(cfg)
    job = HydraConfig.get().job
    tags = {
        "hydra.overrides": " ".join(job.override_dirname.split(",")) or "(none)",
        "hydra.job_num": str(job.get("num", 0)),
    }
    result = run(config, tags=tags)
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


def keep_secrets_from_hydra(argv: list[str]) -> list[str]:
    """Take a credentialed `tracking.uri=` out of the overrides and pass it the way MLflow
    itself does, in `MLFLOW_TRACKING_URI`: Hydra writes its overrides into run directories,
    logs and error lines, and the sweep tags its parent run with them.

    Raises:
        ConfigError: for a password in any other override.
    """
    kept = []
    for arg in argv:
        key, _, value = arg.partition("=")
        if not has_userinfo(value):
            kept.append(arg)
        elif key.lstrip("+~") == "tracking.uri":
            os.environ["MLFLOW_TRACKING_URI"] = value
        else:
            raise ConfigError(f"{key}: {redact(value)!r} holds a password; only tracking.uri may carry credentials")
    return kept


def _ctrl_c_to_the_jobs(signum, frame) -> None:
    """A multirun's first Ctrl-C is for its jobs: each ends its search in order (records
    complete, runs KILLED) and the multirun ends with them. Were the launcher interrupted too,
    joblib would SIGKILL every job's process tree mid-write. A second Ctrl-C stops the launcher."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main() -> None:
    """Console entry point."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if {"-m", "--multirun"} & set(sys.argv[1:]):
        signal.signal(signal.SIGINT, _ctrl_c_to_the_jobs)
    sys.argv[1:] = exit_on_user_error(COMMAND, keep_secrets_from_hydra, sys.argv[1:])
    # Hydra writes its run folder under mlruns/ before the search starts: a full disk there
    # would fail inside Hydra, in a write that names no file.
    outputs = Path("mlruns").resolve()
    exit_on_user_error(COMMAND, require_free_space, outputs if outputs.is_dir() else Path.cwd())
    run_hydra(COMMAND, _sweep)


if __name__ == "__main__":
    sys.exit(main())
