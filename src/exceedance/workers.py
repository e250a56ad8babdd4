"""Several worker processes on one search (`search.workers`), in keras-tuner's chief/worker mode.

The command that runs the search is its chief (`Chief`): it loads the oracle (resuming its saved
state), opens the parent run, serves the oracle over gRPC with keras-tuner's own servicer on
`search.listen`, and starts the workers, one process each (`python -m exceedance.worker`), told
where the oracle is by keras-tuner's variables `KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP` and
`KERASTUNER_ORACLE_PORT`. Each worker asks the oracle for trials, trains them stacked as a
single process does, records them under the parent run through its own recording process, and
reports their results back. On another host, `search.join=HOST:PORT` starts workers on the search
served there (`join`). Every oracle works this way, `pareto` too: its Optuna study lives in the
chief, which asks it for one trial per request (its constant-liar TPE tells trials in flight apart).

Guards against keras-tuner's known failures in this mode:
- A worker that dies mid-trial (killed, out of memory, a gRPC error: keras-team/keras-tuner#915)
  leaves its trials running in the oracle, and keras-tuner's own chief then waits for them
  forever. Our chief watches its workers: a dead worker's trials go back to the oracle's retry
  queue, once (a trial whose worker dies twice fails); a worker killed by a signal is replaced
  once, and so is one whose trials went back when no worker of the chief's is left to take them.
  Its recording process marks its open runs KILLED, and so does the chief's (`lost`), for a
  worker whose recording process died with it.
- A joined worker (another command, maybe another host) is no process of the chief's: the chief
  hears from each worker every second (`heartbeat`) and treats one that holds trials and has made
  no call for `EXCEEDANCE_WORKER_TIMEOUT_S` (30 s) as dead, as above. If it comes back, its calls
  are refused and it stops, so no trial is ended twice.
- The chief ends when its workers have ended (and any trial a joined worker still trains has
  ended), not when keras-tuner thinks every tuner was told to stop, which a dead one never is.
- Workers give up if the oracle takes minutes to start (#990): ours start once it is serving, and
  a joining command first waits for it (`JOIN_WAIT_S`).
- Killed and restarted, the chief resumes: keras-tuner reloads the oracle and queues the trials
  that were in flight for a retry; the parent's runs left RUNNING are marked KILLED.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from exceedance import heartbeat
from exceedance.config import Config
from exceedance.errors import ConfigError
from exceedance.heartbeat import belongs
from exceedance.validation import address
from exceedance.worker import Worker, exit_reason, require_one_ended_well, start_workers, stop_workers

JOIN_WAIT_S = 600.0  # how long a joining command waits for the search's oracle to answer
POLL_S = 0.2


class Chief:
    """Serves a search's oracle to its workers and watches them.

    Binds `search.listen` at once, so a port in use is a `ConfigError` before the parent run opens.

    Args:
        oracle: the search's keras-tuner oracle, loaded (or resumed) by the chief's tuner.
        config: the search's configuration.
        uri: the checked tracking URI the workers record to.
        report: receives the chief's lines (a worker died, its trials retried).
        scored: receives the trials the workers finished since the last call: trial id ->
            (validation quality, validation exceedance rate), for the parent run's summary.
        lost: receives a dead worker's name and the trials taken back from it, whose runs of
            them must end KILLED (its recording process may have died with it).
        label: the multirun job's label, before each worker's own.
    """

    def __init__(
        self,
        oracle,
        config: Config,
        uri: str,
        report: Callable[[str], None],
        scored: Callable[[dict[str, tuple[float, float]]], None],
        lost: Callable[[str, list[str]], None],
        label: str = "",
    ):
        from concurrent import futures

        import grpc
        from keras_tuner.src import protos

        self.oracle, self.config, self.uri, self.report, self.label = oracle, config, uri, report, label
        self.scored, self.lost = scored, lost
        self.liveness = heartbeat.Liveness(heartbeat.timeout_s())
        host, port = address("search.listen", config.search.listen, any_port=True)
        # Two threads per worker (its trials' calls, its heartbeat) and spares for joined ones: the
        # oracle's own lock serializes what must be.
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2 * config.search.workers + 8))
        servicer = heartbeat.watched_servicer(oracle, self.liveness)
        protos.get_service_grpc().add_OracleServicer_to_server(servicer, self._server)
        try:
            self.port = self._server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            self.port = 0
        if not self.port:
            raise ConfigError(
                f"search.listen: cannot serve the search's oracle on {host}:{port} (in use, or not this host's "
                "address); choose another port, or port 0 for any free one"
            )
        local = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host
        self.address = f"{local}:{self.port}"
        self._loopback = host in ("127.0.0.1", "localhost", "::1", "[::1]")
        # Each worker stops after its own max_consecutive_failures (one line, its own reason); the
        # oracle's count over all workers would instead fail a worker's gRPC call mid-trial.
        oracle.max_consecutive_failed_trials = None
        self.workers: list[Worker] = []
        self._retried: set[str] = set()

    def run(self) -> int:
        """Start the workers and watch them until the search is done; return how many trials they started.

        Raises:
            SearchStopped: every worker stopped with an error (each printed its own line).
        """
        started_before = len(self.oracle.start_order)
        count = self.config.search.workers
        line = f"oracle served on {self.address} to {count} workers"
        if not self._loopback:
            line += f"; on other hosts, the same command with search.join=<this host>:{self.port} adds workers"
        self.report(line)
        self._server.start()
        try:
            self.workers = start_workers(self.config, self.uri, self.address, count, self.label)
            self._watch()
        finally:
            stop_workers(self.workers)
            self._server.stop(grace=1.0)
        require_one_ended_well(self.workers)
        return len(self.oracle.start_order) - started_before

    def _watch(self) -> None:
        since: list[float] = []  # when the chief's own workers had ended with no trial in flight
        seen: set[str] = set()
        ended = len(self.oracle.end_order)  # trials that ended before this run of the search
        while True:
            ended = self._score(ended)
            for worker in self.workers:
                if worker.name in seen or worker.process.poll() is None:
                    continue
                seen.add(worker.name)
                if worker.process.returncode != 0:
                    self._worker_died(worker)
            for name in self.liveness.silent():
                if not self._own(name) and self._holds_trials(name) and self.liveness.give_up(name):
                    timeout = self.liveness.timeout_s
                    self._take_back(name, f"joined worker {name}", f"stopped answering for {timeout:g} s")
            if any(w.process.poll() is None for w in self.workers):
                since.clear()
            elif not self._joined(since):
                self._score(ended)
                return
            time.sleep(POLL_S)

    def _score(self, ended: int) -> int:
        """Pass on the scores of the trials that ended after the first `ended`; return how many have."""
        import math

        from exceedance import names

        order = list(self.oracle.end_order)
        keys = (names.val_quality(self.config.data.quality), names.VAL_EXCEEDANCE_RATE)
        scores = {}
        for trial_id in order[ended:]:
            trial = self.oracle.trials[trial_id]
            values = tuple(trial.metrics.get_last_value(key) for key in keys)
            if trial.status == "COMPLETED" and all(v is not None and math.isfinite(v) for v in values):
                scores[trial_id] = values
        if scores:
            self.scored(scores)
        return len(order)

    def _worker_died(self, worker: Worker) -> None:
        """One of the chief's own workers ended badly; one killed by a signal is replaced once."""
        code = worker.process.returncode
        self._take_back(worker.name, worker.label.strip(), exit_reason(code), replace=code < 0 and not worker.replaces)

    def _take_back(self, name: str, who: str, how: str, replace: bool = False) -> None:
        """A dead worker's trials go back to the oracle (once each), its runs of them end KILLED,
        and a worker replaces it when asked or when none of the chief's is left to take them."""
        retried, failed = requeue(self.oracle, name, self._retried)
        line = f"{who} ended ({how})"
        if retried:
            line += f"; trials {', '.join(retried)} go to another worker"
        if failed:
            line += f"; trials {', '.join(failed)} failed (their worker died twice)"
        self.report(line)
        if retried or failed:
            self.lost(name, retried + failed)
        if replace or (retried and all(w.process.poll() is not None for w in self.workers)):
            number = len(self.workers) + 1
            (replacement,) = start_workers(self.config, self.uri, self.address, 1, self.label, first=number)
            replacement.replaces = name
            self.workers.append(replacement)

    def _own(self, name: str) -> bool:
        return any(w.name == name for w in self.workers)

    def _holds_trials(self, name: str) -> bool:
        return any(belongs(tuner_id, name) for tuner_id in dict(self.oracle.ongoing_trials))

    def _joined(self, since: list[float]) -> bool:
        """Whether the chief, its own workers ended, waits for workers of other commands
        (`search.join`): while they have trials in flight, and for up to the heartbeat timeout
        while they still call (one between two steps would otherwise find the oracle gone, and
        wait for it an hour, keras-tuner's timeout, instead of being told the search is done)."""
        if any(not any(belongs(t, w.name) for w in self.workers) for t in dict(self.oracle.ongoing_trials)):
            since.clear()
            return True
        since[:] = since or [time.monotonic()]
        calling = [name for name in self.liveness.live(3 * heartbeat.PERIOD_S) if not self._own(name)]
        return bool(calling) and time.monotonic() - since[0] < self.liveness.timeout_s


def requeue(oracle, worker: str, retried: set[str]) -> tuple[list[str], list[str]]:
    """Take a dead worker's trials in flight back from `oracle`: each into the retry queue the
    first time, failed the second. Returns (retried, failed) trial ids."""
    import keras_tuner as kt

    @kt.synchronized
    def take_back(oracle) -> tuple[list[str], list[str]]:
        again, failed = [], []
        for tuner_id, trial in list(oracle.ongoing_trials.items()):
            if not belongs(tuner_id, worker):
                continue
            if trial.trial_id in retried:
                trial.status = kt.engine.trial.TrialStatus.FAILED
                trial.message = "FailedTrialError: its worker died twice while training it"
                try:
                    oracle.end_trial(trial)
                except RuntimeError:
                    pass  # too many failures in a row: the workers stop on their own count
                oracle.ongoing_trials.pop(tuner_id, None)
                failed.append(trial.trial_id)
            else:
                oracle.ongoing_trials.pop(tuner_id)
                oracle._retry_queue.append(trial.trial_id)
                retried.add(trial.trial_id)
                again.append(trial.trial_id)
        oracle.save()
        return again, failed

    return take_back(oracle)


def wait_for_oracle(oracle: str, timeout_s: float) -> None:
    """Return once the search's oracle answers at `oracle` (HOST:PORT).

    Raises:
        ConfigError: nothing answers there within `timeout_s`.
    """
    import grpc

    channel = grpc.insecure_channel(oracle)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        raise ConfigError(
            f"search.join: no search's oracle answers at {oracle} after {timeout_s:g} s; start the search there "
            "first (the same command with search.workers=N and search.listen=HOST:PORT)"
        ) from None
    finally:
        channel.close()


def join(config: Config, uri: str, search_key: str, report: Callable[[str], None]) -> int:
    """Start `search.workers` workers on this host on the search served at `search.join`, and
    wait for them; return how many ended well.

    Raises:
        ConfigError: no oracle answers there, or it serves no search `search_key` in `uri`
            (another config, overrides or store than the command serving it).
        SearchStopped: every worker stopped with an error.
    """
    from exceedance.recording.client import open_client
    from exceedance.recording.experiment import running_search

    wait_for_oracle(config.search.join, JOIN_WAIT_S)
    running_search(open_client(uri), config.name, uri, search_key)  # its parent opened before the oracle served
    report(f"joining the search served at {config.search.join} with {config.search.workers} workers")
    workers = start_workers(config, uri, config.search.join, config.search.workers, "")
    try:
        for worker in workers:
            worker.process.wait()
    finally:
        stop_workers(workers)
    return require_one_ended_well(workers)
