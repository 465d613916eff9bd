"""A run directory and what a run leaves behind: the results schema, the lock, callbacks, and no
process-wide state set by the library."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import jax
import pytest

from jaxreviews.train import RunDirectory, RunResults, WorkdirError, loop
from tests.training import REPO, run_here, tiny


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mf")
    return workdir, run_here(workdir, tiny("mf", **{"train.epochs": 2}))


def test_results_round_trip_and_older_files_read(finished):
    workdir, results = finished
    loaded = RunResults.load(os.path.join(workdir, "results.json"))
    assert loaded == results and loaded.schema_version == 2
    assert json.load(open(os.path.join(workdir, "results.json")))["num_members"] == 1
    old_single = {"test": {"accuracy": 0.5, "rmse": 1.0, "reviews": 60}, "validation": {"accuracy": 0.4},
                  "baselines": {}, "param_checksum": "x", "model": "cnn", "best_step": 30, "steps": 60,
                  "stopped_early": False, "parameters": 10}
    read = RunResults.from_json(old_single)
    assert read.num_members == 1 and read.members == [old_single["test"]] and read.members_std["rmse"] == 0.0
    old_ensemble = {**old_single, "ensemble": old_single["test"], "num_seeds": 2, "members": [{}, {}],
                    "members_validation": [{}, {}], "members_mean": {}, "members_std": {}, "member_seeds": [0, 1],
                    "member_best_steps": [30, 30]}
    assert RunResults.from_json(old_ensemble).num_members == 2


def test_a_second_run_on_a_directory_is_refused_at_once_and_the_lock_outlives_no_process(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from jaxreviews.train import RunDirectory
        with RunDirectory({str(tmp_path)!r}).locked():
            print("locked", flush=True)
            time.sleep(600)
        """)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirError, match=rf"{tmp_path} is in use by process {holder.pid} on "):
            run_here(tmp_path, tiny("mf"))
        assert not os.path.exists(tmp_path / "metrics.jsonl")  # refused before writing anything
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunDirectory(tmp_path).locked():  # its process is gone: the lock is free
        pass


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(WorkdirError, match="is a file, not a directory"):
        run_here(path, tiny("mf"))


def test_callbacks_see_every_evaluation_and_can_stop_members(tmp_path):
    class Recorder(loop.Callback):
        def __init__(self):
            self.started, self.evaluations, self.metrics = False, [], 0

        def on_start(self, trainer):
            self.started = trainer.costs is not None and trainer.step == 0

        def on_train_metrics(self, trainer, values, step):  # every log_every_steps: the window's sums
            self.metrics += trainer.window_steps
            assert values["loss"].shape == (2,) and step == trainer.step

        def on_evaluation(self, trainer, values, step):
            self.evaluations.append((step, len(values["members"])))
            trainer.stopping.stop(0)  # member 0 keeps its first best; member 1 trains on

    recorder = Recorder()
    r = run_here(tmp_path, tiny("mf", **{"num_seeds": 2, "train.epochs": 3, "train.patience": 0}),
                 callbacks=[recorder])
    steps = r.steps // 3
    assert recorder.started and recorder.metrics == r.steps
    assert recorder.evaluations == [(steps, 2), (2 * steps, 2), (3 * steps, 2)]
    assert r.member_best_steps[0] == steps and r.member_best_steps[1] >= steps


def test_the_library_leaves_the_process_as_it_found_it(tmp_path):
    """train_and_evaluate (and importing the tuner) set no process-wide state: the compilation
    cache settings, the SIGTERM handler, the log levels and JAX's monitoring listeners are as before."""
    import logging

    from jax._src import monitoring  # the listeners' list: no public accessor

    before = {"cache": jax.config.jax_compilation_cache_dir,
              "min_time": jax.config.jax_persistent_cache_min_compile_time_secs,
              "sigterm": signal.getsignal(signal.SIGTERM), "listeners": len(monitoring._event_duration_secs_listeners),
              "orbax": logging.getLogger("orbax").level, "absl": logging.getLogger("absl").level,
              "jaxreviews_handlers": list(logging.getLogger("jaxreviews").handlers)}
    import optuna
    optuna_level = optuna.logging.get_verbosity()
    import jaxreviews.tune.sweep  # noqa: F401
    run_here(tmp_path, tiny("mf", **{"train.epochs": 1}))
    after = {"cache": jax.config.jax_compilation_cache_dir,
             "min_time": jax.config.jax_persistent_cache_min_compile_time_secs,
             "sigterm": signal.getsignal(signal.SIGTERM), "listeners": len(monitoring._event_duration_secs_listeners),
             "orbax": logging.getLogger("orbax").level, "absl": logging.getLogger("absl").level,
             "jaxreviews_handlers": list(logging.getLogger("jaxreviews").handlers)}
    assert after == before
    assert optuna.logging.get_verbosity() == optuna_level
