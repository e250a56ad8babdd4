"""Shared fixtures: tiny real configs composed by Hydra, and a temporary MLflow store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from mlflow import MlflowClient
from omegaconf import OmegaConf

from exceedance.cli.sweep import CONFIG_MODULE
from exceedance.config import register_configs

register_configs()

TINY = [
    "data.n_samples=300",
    "search.max_trials=2",
    "search.epochs=2",
    "search.batch_size=64",
    "model.hidden_units=[8]",
]


CONF_DIR = resources.files(CONFIG_MODULE)  # conf/ as the command finds it (with sweeps/)


def compose_config(overrides: list[str], return_hydra_config: bool = False):
    """Compose `conf/` with Hydra exactly as the command does and convert to the schema (or, with
    `return_hydra_config`, the composed config with its `hydra` section)."""
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=return_hydra_config)
    return cfg if return_hydra_config else OmegaConf.to_object(cfg)


def free_port() -> int:
    """A TCP port nobody listens on right now, for a test's own MLflow server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_mlflow(args: list[str], port: int, cwd: Path | None = None) -> subprocess.Popen:
    """`mlflow ARGS --host 127.0.0.1 --port PORT` (a `server` or the `ui`) in its own process
    group, returned once it answers `/health`; stop it with `stop_process`."""
    import urllib.request

    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", *args, "--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return process
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop_process(process)
                raise AssertionError(f"mlflow {args[0]} did not start") from None
            time.sleep(0.5)


def stop_process(process: subprocess.Popen) -> None:
    """Kill a process started in its own group (`serve_mlflow`), and its children."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture
def store(tmp_path: Path) -> list[str]:
    """Overrides that point tracking and the tuner directory into a temp dir."""
    return [f"tracking.uri=sqlite:///{tmp_path}/mlruns/mlflow.db", f"search.directory={tmp_path}/tuner"]


@pytest.fixture
def tiny(store: list[str]) -> list[str]:
    return [*TINY, *store]


# Runs a command's `main()` as the console script does and reports, on exit, whether TensorFlow
# was imported: bad input must be refused before it is.
_PROBE = """
import atexit, sys
atexit.register(lambda: print("tensorflow imported:", "tensorflow" in sys.modules, flush=True))
from exceedance.cli.{command} import main
sys.argv[0] = "exceedance-{command}"
main()
"""


def command(name: str, args: list[str], cwd: Path, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
    """`exceedance-<name> args` in `cwd`, as a user runs it (a fresh process, no stdin)."""
    return subprocess.run(
        [sys.executable, "-c", _PROBE.format(command=name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **popen,
    )


def last_line(done: subprocess.CompletedProcess) -> str:
    """The line a failed command ends on; asserts it printed no traceback."""
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert lines, f"no message (exit {done.returncode}); stdout: {done.stdout[-2000:]}"
    return lines[-1]


def tensorflow_imported(done: subprocess.CompletedProcess) -> bool:
    return "tensorflow imported: True" in done.stdout


def trial_runs(client: MlflowClient, name: str = "exceedance"):
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`exceedance.role` = 'trial'")
    return runs


# Three trials of a few seconds each, one model per trial: long enough to interrupt the second
# one mid-training.
SLOW_TRIALS = [
    "data.n_samples=3000",
    "search.max_trials=3",
    "search.epochs=30",
    "model.hidden_units=[16]",
    "search.trials_per_step=1",
]
# Two steps of three trials trained together, a few seconds each: long enough to interrupt the
# second step mid-training.
SLOW_STEPS = [
    "data.n_samples=6000",
    "search.max_trials=6",
    "search.epochs=300",  # about 8 s per step of 3
    "model.hidden_units=[16]",
    "search.trials_per_step=3",
]


def sweep_process(args: list[str], cwd: Path, stderr=subprocess.DEVNULL) -> subprocess.Popen:
    """A sweep in its own process group, as a terminal runs it: Ctrl-C reaches the whole group,
    and SIGINT is not ignored (as it is for a job a non-interactive shell puts in the background,
    which the sweep would inherit)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "exceedance.cli.sweep", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def in_second_trial(sweep: subprocess.Popen, tmp_path: Path, after: str = "trial 0:", running: str = "1"):
    """Return a client on the sweep's store once trial 0 is done (its line, `after`, printed)
    and trial 1 (`running`) is training (its run exists). The client is made only then: MLflow
    creates and migrates a store in `MlflowClient()`, and doing so beside the sweep while it
    does the same races."""
    for line in sweep.stdout:
        if line.startswith(after):
            break
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    for _ in range(100):
        if any(r.data.tags.get("exceedance.trial_id") == running for r in trial_runs(client)):
            break
        time.sleep(0.1)
    return client


def in_second_step(sweep: subprocess.Popen, tmp_path: Path) -> MlflowClient:
    """`in_second_trial` for `SLOW_STEPS`: once trials 0-2 are done and trials 3-5 are training
    (the run of the step's last one exists)."""
    return in_second_trial(sweep, tmp_path, after="trial 2:", running="5")


def _live_parent(pid: int) -> int | None:
    """The parent of a live process; None once it has exited (or is a zombie)."""
    try:
        state, ppid = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
    except OSError:
        return None
    return None if state == "Z" else int(ppid)


def children(pid: int) -> list[int]:
    """Live processes whose parent is `pid`: the sweep's MLflow recording process (and the
    resource tracker that multiprocessing starts beside it)."""
    return [int(p.name) for p in Path("/proc").glob("[0-9]*") if _live_parent(int(p.name)) == pid]


def all_gone(pids: list[int], within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if all(_live_parent(p) is None for p in pids):
            return True
        time.sleep(0.2)
    return False
