"""Heartbeats from a search's workers to its chief, and the fence that keeps a worker the chief
gave up on from ending a trial that another worker now trains.

Why: the chief sees its own workers' processes exit, but a worker of another command
(`search.join`, maybe on another host) is no process of its own: killed, frozen or cut off, it
would leave its trials in flight, and the chief waiting for them, until the chief is restarted.
So, as Optuna's RDB storage does for its trials (a heartbeat interval and a grace period), every
worker calls the chief every `PERIOD_S` seconds, and the chief gives up on a worker that holds
trials and has made no call for `timeout_s()` seconds: its trials go back once, as a dead
worker's do (`workers.Chief`).

No new service and no new proto: the heartbeat is keras-tuner's own `GetSpace` call, marked as a
heartbeat in its metadata and answered empty, without touching the oracle; and every call of a
worker carries its name in its metadata (`name_channels`), which keras-tuner's calls do not (only
`CreateTrial` names a tuner).

The fence: keras-tuner's `Oracle.end_trial` ends whatever trial it is given, in flight or not,
and takes it off the list of whichever tuner holds it now. A worker that comes back after the
chief gave up on it (a long pause, a network cut that heals) would end, a second time, a trial
that another worker trains. So the chief's servicer (`watched_servicer`) refuses every call of a
worker it gave up on, and a trial's report or end from a worker that no longer holds it; the
worker stops at the first refusal, with one line, and its recording process marks its open runs
KILLED, as for any worker that dies.
"""

from __future__ import annotations

import collections
import math
import os
import threading
import time

import grpc

from exceedance.errors import ConfigError

NAME_KEY, BEAT_KEY = "exceedance-worker", "exceedance-heartbeat"  # gRPC metadata keys
PERIOD_S = 1.0  # how often a worker calls its chief
TIMEOUT_ENV = "EXCEEDANCE_WORKER_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 30.0
GET_SPACE = "/keras_tuner.Oracle/GetSpace"  # keras-tuner's service and method names (its protos)
REFUSED = "exceedance: "  # starts the details of the chief's refusals, which stop a worker


def timeout_s() -> float:
    """How long the chief waits for a call from a worker that holds trials before it gives up on
    it: `EXCEEDANCE_WORKER_TIMEOUT_S`, or 30 s.

    Raises:
        ConfigError: not a number of seconds, or less than three heartbeats.
    """
    text = os.environ.get(TIMEOUT_ENV, "")
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 3 * PERIOD_S):
        raise ConfigError(
            f"{TIMEOUT_ENV}: must be a number of seconds >= {3 * PERIOD_S:g} (three heartbeats), got {text!r}; "
            f"unset it for the default {DEFAULT_TIMEOUT_S:g}"
        )
    return value


def belongs(tuner_id: str, worker: str) -> bool:
    """Whether a keras-tuner tuner id is the worker's: its name (one trial per step), or
    `name-K` for the K-th trial of its step (`trial.ExceedanceTuner`). Names end in `w<number>`,
    so no name is another's with a slot after it."""
    return tuner_id == worker or (tuner_id.startswith(f"{worker}-") and tuner_id[len(worker) + 1 :].isdigit())


# The worker's side.


_CALL_FIELDS = ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")


class _Details(collections.namedtuple("_Details", _CALL_FIELDS), grpc.ClientCallDetails):
    pass


class _Named(grpc.UnaryUnaryClientInterceptor):
    """Names the worker in each call; a call the chief refuses ends the worker's process."""

    def __init__(self, name: str, label: str):
        self.name, self.label = name, label

    def intercept_unary_unary(self, continuation, details, request):
        metadata = (*(details.metadata or ()), (NAME_KEY, self.name))
        details = _Details(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready, details.compression
        )
        outcome = continuation(details, request)
        err = outcome.exception()
        if isinstance(err, grpc.Call) and err.code() == grpc.StatusCode.FAILED_PRECONDITION:
            reason = err.details() or ""
            if reason.startswith(REFUSED):
                # Before keras-tuner sees an error and ends the trial its own way (FAILED in MLflow).
                print(f"{self.label}stopped: {reason[len(REFUSED) :]}", flush=True)
                os._exit(1)
        return outcome


def name_channels(name: str, label: str) -> None:
    """Make every gRPC channel this worker process opens from now on (keras-tuner's
    `OracleClient`'s, the heartbeat's) name the worker `name` in each call, and end the process
    with one line (`label` first) when the chief refuses a call: it gave up on this worker."""
    open_channel = grpc.insecure_channel

    def named(target, options=None, compression=None):
        return grpc.intercept_channel(open_channel(target, options, compression), _Named(name, label))

    grpc.insecure_channel = named


def start_heartbeat(oracle: str) -> None:
    """Call the chief serving the oracle at `oracle` (HOST:PORT) every `PERIOD_S` seconds, from a
    daemon thread, for as long as the process runs."""
    channel = grpc.insecure_channel(oracle)
    beat = channel.unary_unary(GET_SPACE)  # bytes in and out: an empty GetSpaceRequest is b""

    def loop():
        while True:
            try:
                beat(b"", timeout=5 * PERIOD_S, metadata=((BEAT_KEY, "1"),))
            except grpc.RpcError:
                pass  # not answering now: the next beat tries again (a refusal has ended the process)
            time.sleep(PERIOD_S)

    threading.Thread(target=loop, name="heartbeat", daemon=True).start()


# The chief's side.


class Liveness:
    """When the chief last heard from each worker (any call naming it), and the workers it gave up on."""

    def __init__(self, timeout: float):
        self.timeout_s = timeout
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._lost: set[str] = set()

    def heard(self, name: str) -> bool:
        """Note a call from `name`; False if the chief gave up on it (the call is refused)."""
        with self._lock:
            if name in self._lost:
                return False
            self._last[name] = time.monotonic()
            return True

    def silent(self, within_s: float | None = None) -> list[str]:
        """The workers not heard from for `within_s` (default: the timeout), not given up on yet."""
        limit = time.monotonic() - (self.timeout_s if within_s is None else within_s)
        with self._lock:
            return [name for name, last in self._last.items() if last < limit and name not in self._lost]

    def live(self, within_s: float) -> list[str]:
        """The workers heard from within the last `within_s` seconds."""
        limit = time.monotonic() - within_s
        with self._lock:
            return [name for name, last in self._last.items() if last >= limit and name not in self._lost]

    def give_up(self, name: str) -> bool:
        """Give up on `name` if it is still silent; from now on its calls are refused."""
        with self._lock:
            if name in self._lost or time.monotonic() - self._last.get(name, -math.inf) <= self.timeout_s:
                return False
            self._lost.add(name)
            return True

    def given_up(self, name: str) -> bool:
        with self._lock:
            return name in self._lost


def holds(oracle, name: str, trial_id: str) -> bool:
    """Whether worker `name` has trial `trial_id` in flight in `oracle` (call under its lock)."""
    return any(belongs(t, name) and trial.trial_id == trial_id for t, trial in oracle.ongoing_trials.items())


def watched_servicer(oracle, liveness: Liveness):
    """keras-tuner's `OracleServicer` for `oracle`, which notes each worker's calls in `liveness`,
    answers heartbeats, and refuses (see the module's docstring): a call naming no worker; every
    call of a worker the chief gave up on; a trial's report or end from a worker not holding it."""
    import keras_tuner as kt
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer

    refuse = grpc.StatusCode.FAILED_PRECONDITION

    class Watched(OracleServicer):
        def _caller(self, context) -> str:
            metadata = dict(context.invocation_metadata())
            name = metadata.get(NAME_KEY, "")
            if not name:
                context.abort(refuse, f"{REFUSED}a call that names no worker; start workers with exceedance-sweep")
            if not liveness.heard(name):
                context.abort(refuse, f"{REFUSED}{_gave_up(name, liveness)}")
            return name

        def _holding(self, context, trial_id: str, call, request):
            name = self._caller(context)

            @kt.synchronized
            def locked(oracle):  # keras-tuner's lock is not released on an error: return it instead
                if liveness.given_up(name) or not holds(oracle, name, trial_id):
                    return None
                try:
                    return call(request, context)
                except Exception as err:
                    return err

            answer = locked(oracle)
            if answer is None:
                reason = _gave_up(name, liveness) if liveness.given_up(name) else f"{name} does not hold it"
                context.abort(refuse, f"{REFUSED}trial {trial_id} is not this worker's to report ({reason})")
            if isinstance(answer, Exception):
                raise answer
            return answer

        def GetSpace(self, request, context):
            self._caller(context)
            if BEAT_KEY in dict(context.invocation_metadata()):
                return protos.get_service().GetSpaceResponse()
            return super().GetSpace(request, context)

        def UpdateSpace(self, request, context):
            self._caller(context)
            return super().UpdateSpace(request, context)

        def CreateTrial(self, request, context):
            self._caller(context)
            return super().CreateTrial(request, context)

        def UpdateTrial(self, request, context):
            return self._holding(context, request.trial_id, super().UpdateTrial, request)

        def EndTrial(self, request, context):
            return self._holding(context, request.trial.trial_id, super().EndTrial, request)

        def GetTrial(self, request, context):
            self._caller(context)
            return super().GetTrial(request, context)

        def GetBestTrials(self, request, context):
            self._caller(context)
            return super().GetBestTrials(request, context)

    return Watched(oracle)


def _gave_up(name: str, liveness: Liveness) -> str:
    return (
        f"the search's chief gave up on worker {name} after {liveness.timeout_s:g} s without a call "
        "and gave its trials to other workers"
    )
