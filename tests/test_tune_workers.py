"""Sweep workers as users run them (`python -m experiments.sweep` in subprocesses): a worker killed
mid-trial loses no trial (its trial is re-run, resuming its checkpoints, and counted once), and
three workers share one study in a real PostgreSQL server, one of them killed mid-trial."""
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import optuna
import pytest

from jaxreviews.tune.study import driver_url
from tests.training import CACHE, REPO

State = optuna.trial.TrialState
CNN = f"--config={REPO}/experiments/configs/cnn.py:tiny"
SPACE = json.dumps({"optimizer.learning_rate": {"log": [3e-3, 3e-2]}})


def sweep(workdir, *flags, wait=True):
    command = [sys.executable, "-m", "experiments.sweep", CNN, f"--workdir={workdir}",
               f"--config.search.space={SPACE}", "--config.search.pruner=none", "--config.train.epochs=3",
               "--config.train.tensorboard=False", "--method=random", *flags]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": CACHE}
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def checkpointed(trial_dir) -> bool:
    """Whether the run in `trial_dir` has saved a training step."""
    return any(name.isdigit() and name != "0" for name in os.listdir(os.path.join(trial_dir, "checkpoints", "latest"))) \
        if os.path.isdir(os.path.join(trial_dir, "checkpoints", "latest")) else False


def wait_for(condition, process):
    """Polls `condition` until it holds; fails as soon as the worker ends first. No wall-clock
    limit: a busy machine is only slower."""
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the worker ended first:\n{process.stdout.read()[-3000:]}")
        time.sleep(0.2)


def train_steps(trial_dir) -> list[int]:
    with open(os.path.join(trial_dir, "metrics.jsonl")) as f:
        return [r["step"] for r in map(json.loads, f) if r["kind"] == "train"]


def test_a_killed_trial_is_run_again_never_lost_nor_counted_twice(tmp_path):
    worker = sweep(tmp_path, "--trials=2", wait=False)
    wait_for(lambda: checkpointed(tmp_path / "trials" / "0001"), worker)
    worker.send_signal(signal.SIGKILL)  # mid-trial, after its first checkpoint
    worker.wait()
    done = sweep(tmp_path, "--trials=1")  # the same command, one more trial
    assert "trial 1 was interrupted" in done.stdout and "resumes the run directory of interrupted trial 1" in done.stdout
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{tmp_path}/study.db")
    first, killed, rerun = sorted(study.trials, key=lambda t: t.number)
    assert [first.state, killed.state, rerun.state] == [State.COMPLETE, State.FAIL, State.COMPLETE]
    assert killed.user_attrs["fail_reason"].startswith("interrupted: its worker") and "ended" in killed.user_attrs["fail_reason"]
    assert rerun.user_attrs["retry_of"] == 1 and rerun.params == killed.params
    assert rerun.user_attrs["resumed_from"] == "trials/0001" and not os.path.exists(tmp_path / "trials" / "0001")
    steps = train_steps(tmp_path / "trials" / "0002")  # resumed: every record (each 10 steps) once
    assert steps == list(range(10, max(steps) + 1, 10))
    results = json.load(open(tmp_path / "trials" / "0002" / "results.json"))
    assert results["steps"] == max(steps)
    # counted once: two complete trials, as two commands of --trials=2 (killed) and --trials=1 make
    assert sum(t.state == State.COMPLETE for t in study.trials) == 2


# -- PostgreSQL ----------------------------------------------------------------------------------------

def postgres_bin() -> str | None:
    """The folder of a PostgreSQL server's initdb / pg_ctl (Debian's /usr/lib/postgresql/N/bin first)."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(folder, "initdb")) and os.path.exists(os.path.join(folder, "pg_ctl")):
            return folder
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb and shutil.which("pg_ctl") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1 (as the `postgres` user when this is root, since
    the server refuses to run as root), with a database `sweep`; stopped afterwards."""
    folder = postgres_bin()
    if folder is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    as_user = []
    if os.geteuid() == 0:
        if subprocess.run(["id", "-u", "postgres"], capture_output=True).returncode != 0:
            pytest.skip("running as root and there is no 'postgres' user to run the server as "
                        "(.ci/run creates it: useradd --system postgres)")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = tempfile.mkdtemp(prefix="jaxreviews-postgres-")
    data, log = os.path.join(root, "data"), os.path.join(root, "server.log")
    if as_user:
        shutil.chown(root, user="postgres")
    port = free_port()

    def run(*command):
        done = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command[0]}: {done.stdout}{done.stderr}"

    run(f"{folder}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    run(f"{folder}/pg_ctl", "-D", data, "-l", log, "-w", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        run(f"{folder}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "sweep")
        yield f"postgresql://postgres@127.0.0.1:{port}/sweep"
    finally:
        subprocess.run([*as_user, f"{folder}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_three_workers_share_a_postgresql_study_and_one_dies_mid_trial(tmp_path, postgres_url):
    workers = [sweep(tmp_path, f"--storage={postgres_url}", "--study=shared", f"--trials={n}", wait=False)
               for n in (1, 3, 3)]
    doomed = workers[0]
    study = None

    def doomed_mid_trial() -> bool:
        nonlocal study
        try:
            study = study or optuna.load_study(study_name="shared", storage=driver_url(postgres_url))
        except KeyError:  # not created yet
            return False
        for trial in study.get_trials(deepcopy=False, states=(State.RUNNING,)):
            if trial.user_attrs.get("worker", {}).get("pid") == doomed.pid and \
                    checkpointed(tmp_path / "trials" / f"{trial.number:04d}"):
                return True
        return False

    wait_for(doomed_mid_trial, doomed)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    outputs = []
    for worker in workers[1:]:
        output, _ = worker.communicate(timeout=600)
        assert worker.returncode == 0, output[-3000:]
        outputs.append(output)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    states = [t.state for t in trials]
    assert states.count(State.RUNNING) == 0 and states.count(State.WAITING) == 0
    killed = [t for t in trials if t.state == State.FAIL]
    assert len(killed) == 1 and killed[0].user_attrs["worker"]["pid"] == doomed.pid
    assert killed[0].user_attrs["fail_reason"].startswith("interrupted")
    reruns = [t for t in trials if t.user_attrs.get("retry_of") == killed[0].number]
    assert len(reruns) == 1 and reruns[0].state == State.COMPLETE and reruns[0].params == killed[0].params
    # the two surviving workers ran their 3 trials each, the re-run among them: 6 complete, once each
    complete = [t for t in trials if t.state == State.COMPLETE]
    assert len(complete) == 6 and len(trials) == 7
    assert sorted(t.user_attrs["worker"]["pid"] for t in complete) == sorted([workers[1].pid] * 3 + [workers[2].pid] * 3)
    for trial in complete:
        summary = json.load(open(tmp_path / "trials" / f"{trial.number:04d}" / "trial.json"))
        assert summary["state"] == "COMPLETE" and summary["value"] == trial.value
    assert all("3 trials in" in output for output in outputs)
