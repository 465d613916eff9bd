"""The study: Optuna's storage of every trial, shared by every worker of a sweep.

Without `--storage` the study lives in `DIR/study.db` (SQLite); `--storage=postgresql://...`
(or any SQLAlchemy URL Optuna takes) shares one study between workers on many machines. The
study remembers what it searches (`user_attrs`: the base config, the space, the metric and its
direction, folds and seeds): a worker that joins it with anything else is refused, naming the
keys that differ, so the trials of a study stay comparable.

Trials that die with their worker. A worker records itself on each trial it runs (`worker`: host,
pid and the process's start time) and beats a heartbeat (Optuna's, every `HEARTBEAT_SECONDS`)
while it trains. Before it asks for new trials, every worker looks for RUNNING trials whose worker
is gone: on its own host a process that no longer exists, on any host a heartbeat older than
`GRACE_SECONDS`. It fails such a trial (`fail_reason`: "interrupted ...") through the storage's
atomic state change, so that of several workers exactly one wins it, and the winner enqueues the
same parameters as a new trial (`retry_of`), which the next `ask` of any worker takes first. So an
interrupted trial is run again, never lost, and counted once: the interrupted trial is FAIL and
its re-run is the one that counts. The re-run resumes the interrupted trial's checkpoints when its
run directory is there (`runner`).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import warnings

import optuna
from optuna.trial import TrialState

from jaxreviews import options

HEARTBEAT_SECONDS = 20
GRACE_SECONDS = 90
# What a study records of its sweep; a worker joining it must agree on these.
STUDY_ATTRS = ("config", "space", "metric", "direction", "folds", "seeds")



@contextlib.contextmanager
def quiet():
    """Without Optuna's notes on what we do on purpose: heartbeats outside `Study.optimize`, an
    experimental argument."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        yield


def storage_url(workdir: str, storage: str = "") -> str:
    """`storage`, or the SQLite file `workdir/study.db`."""
    if storage:
        return storage
    return "sqlite:///" + os.path.join(os.path.abspath(workdir), "study.db")


def driver_url(url: str) -> str:
    """`postgresql://...` with the PostgreSQL driver that is installed (psycopg 3, a dependency, or
    psycopg2), whichever SQLAlchemy would pick by default; other URLs as they are."""
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    rest = url.split("://", 1)[1]
    for module, dialect in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        try:
            __import__(module)
        except ImportError:
            continue
        return f"{dialect}://{rest}"
    raise ImportError("--storage=postgresql://... needs a PostgreSQL driver: pip install 'psycopg[binary]'")


def open_storage(url: str, on_stale=None) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage of `url`, with heartbeats: a trial whose worker stopped beating is
    failed by `optuna.storages.fail_stale_trials` (`recover_interrupted`), which then calls
    `on_stale(study, trial)` (a `StaleTrials`)."""
    url = driver_url(url)
    engine = {}
    if url.startswith("sqlite"):
        engine = {"connect_args": {"timeout": 60}}  # several local workers wait for the file's lock
    else:
        engine = {"pool_pre_ping": True}
    with quiet():
        return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS,
                                          grace_period=GRACE_SECONDS, heartbeat_stale_trial_callback=on_stale)


def open_study(storage: optuna.storages.RDBStorage, name: str, *, direction: str, attrs: dict, pruner=None,
               sampler=None, url: str = "") -> optuna.Study:
    """The study `name` in `storage` (at `url`), created with `attrs` when new; an existing study
    must have the same `attrs` (ValueError naming what differs)."""
    study = optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True,
                                pruner=pruner, sampler=sampler)
    saved = study.user_attrs
    if not saved.get("created"):
        for key in STUDY_ATTRS:
            study.set_user_attr(key, attrs[key])
        study.set_user_attr("created", time.strftime("%Y-%m-%d %H:%M:%S"))
        return study
    differ = []
    for key in STUDY_ATTRS:
        old, new = saved.get(key), json.loads(json.dumps(attrs[key]))
        if key == "config":
            new = new or {}
            old = options.with_defaults(old or {}, new)  # an option newer than the study: its default
            differ += [f"config {k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}"
                       for k in sorted(set(old) | set(new)) if old.get(k, "<absent>") != new.get(k, "<absent>")]
        elif old != new:
            differ.append(f"{key}: {json.dumps(old)} -> {json.dumps(new)}")
    if differ:
        raise ValueError(f"study {name!r} in {redact(url)} searches something else: {'; '.join(differ[:8])}"
                         f"{'; ...' if len(differ) > 8 else ''}. Continue it with the same config, space, "
                         "--folds and --seeds, or start another (--study=NAME or another --workdir).")
    return study


def redact(url: str) -> str:
    """`url` without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':')[0]}:***@{host}"
    return url


# -- workers ----------------------------------------------------------------------------------------

def _start_time(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot, /proc), None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def this_worker() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": _start_time(pid)}


def worker_gone(worker: dict | None) -> bool:
    """Whether `worker` (a trial's "worker" attribute) is a process of this host that has ended."""
    if not worker or worker.get("host") != socket.gethostname():
        return False
    started = _start_time(int(worker["pid"]))
    return started is None or (worker.get("started") is not None and started != worker["started"])


class Heartbeat:
    """A thread that records the heartbeat of the trials this worker runs."""

    def __init__(self, storage: optuna.storages.RDBStorage, interval: float = HEARTBEAT_SECONDS):
        self.storage, self.interval = storage, interval
        self.trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tune-heartbeat", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.interval):
            self.beat()

    def beat(self):
        with self._lock:
            ids = list(self.trial_ids)
        for trial_id in ids:
            with contextlib.suppress(Exception):  # a finished trial, a lost connection: next time
                self.storage.record_heartbeat(trial_id)

    @contextlib.contextmanager
    def running(self, trial_ids):
        with self._lock:
            self.trial_ids.update(trial_ids)
        for trial_id in trial_ids:
            self.storage.record_heartbeat(trial_id)
        try:
            yield
        finally:
            with self._lock:
                self.trial_ids.difference_update(trial_ids)

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)


def fail_trial(storage: optuna.storages.BaseStorage, trial_id: int, reason: str) -> bool:
    """FAIL a RUNNING trial with `reason`; False when it was finished meanwhile (another worker won)."""
    with contextlib.suppress(Exception):
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
    try:
        return bool(storage.set_trial_state_values(trial_id, state=TrialState.FAIL))
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
        return False


def enqueue_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> None:
    """The same parameters again, as a new trial the next `ask` takes first."""
    attrs = {key: value for key, value in trial.user_attrs.items()
             if key in ("overrides", "batch_with")}
    study.enqueue_trial(trial.params, user_attrs={**attrs, "retry_of": trial.number, "retry_reason": reason},
                        skip_if_exists=False)


class StaleTrials:
    """Optuna's stale-trial callback of a storage: a trial failed for its missing heartbeat is
    enqueued to run again; `recovered` and `reasons` say which (for `recover_interrupted`)."""

    def __init__(self):
        self.recovered: list[int] = []
        self.reasons: dict[int, str] = {}

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        worker = trial.user_attrs.get("worker")
        reason = (f"interrupted: no heartbeat for {GRACE_SECONDS}s from its worker {worker_name(worker)}; run again "
                  "as a new trial")
        enqueue_retry(study, trial, reason)
        self.recovered.append(trial.number)
        self.reasons[trial.number] = reason


def recover_interrupted(study: optuna.Study, storage: optuna.storages.RDBStorage, study_id: int,
                        stale: StaleTrials) -> list[int]:
    """Fails the RUNNING trials whose worker is gone (any host's heartbeat older than
    GRACE_SECONDS, through Optuna's `fail_stale_trials`; this host's ended processes at once) and
    enqueues each again; the numbers of those this worker won."""
    stale.recovered.clear()
    with quiet():
        optuna.storages.fail_stale_trials(study)
    recovered = list(stale.recovered)
    for number in recovered:  # the reason on the failed trial itself, for the report
        with contextlib.suppress(Exception):
            storage.set_trial_user_attr(storage.get_trial_id_from_study_id_trial_number(study_id, number),
                                        "fail_reason", stale.reasons.pop(number))
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if not worker_gone(worker):
            continue
        reason = f"interrupted: its worker {worker_name(worker)} ended; run again as a new trial"
        if fail_trial(storage, storage.get_trial_id_from_study_id_trial_number(study_id, trial.number), reason):
            enqueue_retry(study, trial, reason)
            recovered.append(trial.number)
    return recovered


def worker_name(worker: dict | None) -> str:
    return "?" if not worker else f"{worker.get('host')}:{worker.get('pid')}"


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state, and "interrupted" (FAIL trials run again as another trial)."""
    trials = study.get_trials(deepcopy=False)
    out = {state.name.lower(): 0 for state in TrialState}
    for trial in trials:
        out[trial.state.name.lower()] += 1
    out["interrupted"] = sum(1 for t in trials if str(t.user_attrs.get("fail_reason", "")).startswith("interrupted"))
    return out
