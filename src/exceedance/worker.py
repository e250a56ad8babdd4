"""One worker process of a search with several (`search.workers`, see `workers`): how it is
started (keras-tuner's `KERASTUNER_*` variables say where the oracle is and name it; the
config comes whole in the environment), how it is stopped, and what it runs (`run_search.work`).
Every call it makes names it, and it calls its chief every second (`heartbeat`), so a chief on
another host sees it stop.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from exceedance import heartbeat
from exceedance.config import Config
from exceedance.errors import SearchStopped
from exceedance.validation import address

TUNER_ID, ORACLE_IP, ORACLE_PORT = "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"
CONFIG_ENV, LABEL_ENV, CHIEF_PID_ENV = "EXCEEDANCE_WORKER_CONFIG", "EXCEEDANCE_WORKER_LABEL", "EXCEEDANCE_CHIEF_PID"
STOP_WAIT_S = 60.0  # how long stopped workers get to record their ends before they are killed


@dataclasses.dataclass
class Worker:
    """One worker process and its name (its keras-tuner tuner id, and its trials' `worker` tag)."""

    name: str
    label: str
    process: subprocess.Popen
    replaces: str = ""  # the worker it replaced, if any


def worker_name(number: int) -> str:
    """A name no other worker of any host has: keras-tuner treats a tuner id holding "chief" as its chief."""
    host = socket.gethostname().replace("chief", "chf")
    return f"{host}-{os.getpid()}-w{number}"


def worker_config(config: Config) -> Config:
    """The config each of the `search.workers` workers on this host runs: the cores shared among
    them when the thread settings are TensorFlow's defaults, and no store of its own to start."""
    search = config.search
    cores = max(1, (os.cpu_count() or 1) // search.workers)
    return dataclasses.replace(
        config,
        search=dataclasses.replace(
            search,
            intra_op_threads=search.intra_op_threads or cores,
            inter_op_threads=search.inter_op_threads or cores,
        ),
        tracking=dataclasses.replace(config.tracking, uri="", server=False),
    )


def start_workers(config: Config, uri: str, oracle: str, count: int, label: str, first: int = 1) -> list[Worker]:
    """Start `count` workers of the search whose oracle answers at `oracle` (HOST:PORT)."""
    host, port = address("search.listen", oracle)
    settings = json.dumps(dataclasses.asdict(worker_config(config)))  # a replacement takes a share too
    started = []
    for number in range(first, first + count):
        name, worker_label = worker_name(number), f"{label}[worker {number}] "
        env = {
            **os.environ,
            TUNER_ID: name,
            ORACLE_IP: host,
            ORACLE_PORT: str(port),
            CONFIG_ENV: settings,
            LABEL_ENV: worker_label,
            CHIEF_PID_ENV: str(os.getpid()),
            "MLFLOW_TRACKING_URI": uri,  # the store the search was checked against; never printed
        }
        process = subprocess.Popen([sys.executable, "-m", "exceedance.worker"], env=env)
        started.append(Worker(name, worker_label, process))
    return started


def stop_workers(workers: list[Worker]) -> None:
    """Ask live workers to stop (as Ctrl-C does: each records its end), then kill the late ones."""
    live = [w for w in workers if w.process.poll() is None]
    for worker in live:
        worker.process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_WAIT_S
    for worker in live:
        try:
            worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


def require_one_ended_well(workers: list[Worker]) -> int:
    """How many of `workers` ended well (exit code 0).

    Raises:
        SearchStopped: none did; naming how each ended (each printed its own reason).
    """
    ended_well = sum(1 for w in workers if w.process.returncode == 0)
    if workers and not ended_well:
        ends = ", ".join(f"{w.label.strip()} {exit_reason(w.process.returncode)}" for w in workers)
        raise SearchStopped(f"search stopped: every worker stopped ({ends}); rerun the same command to resume")
    return ended_well


def exit_reason(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _exit_with_chief(chief_pid: int) -> None:
    """A worker whose chief is gone (killed) stops at once; its recording process then marks its
    open runs KILLED, and the restarted chief retries their trials."""

    def watch():
        while os.getppid() == chief_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def main() -> None:
    """A worker process: the config and where the oracle is come from the chief's environment."""
    from omegaconf import OmegaConf

    from exceedance.cli.errors import exit_on_user_error
    from exceedance.quiet import quiet_libraries
    from exceedance.run_search import work
    from exceedance.signals import end_like_ctrl_c

    quiet_libraries()
    end_like_ctrl_c()  # SIGTERM or SIGHUP to the group: this worker's trials end KILLED, as on Ctrl-C
    # A worker stopped at once (its chief gone, or its trials taken back) leaves its recording
    # pool's semaphore to multiprocessing's resource tracker, whose warning would follow its line.
    warnings = [os.environ.get("PYTHONWARNINGS", ""), "ignore:resource_tracker:UserWarning"]
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, warnings))
    _exit_with_chief(int(os.environ[CHIEF_PID_ENV]))
    label = os.environ.get(LABEL_ENV, "")
    heartbeat.name_channels(os.environ[TUNER_ID], label)
    heartbeat.start_heartbeat(f"{os.environ[ORACLE_IP]}:{os.environ[ORACLE_PORT]}")
    settings = OmegaConf.merge(OmegaConf.structured(Config), json.loads(os.environ[CONFIG_ENV]))
    config: Config = OmegaConf.to_object(settings)
    exit_on_user_error(f"{label}exceedance-sweep", work, config, lambda line: print(f"{label}{line}", flush=True))


if __name__ == "__main__":
    main()
