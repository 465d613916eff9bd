"""End to end: the experiment module trains, evaluates, checkpoints, resumes exactly, stops cleanly."""
import json
import os
import signal

import numpy as np
import pytest

from tests.training import REPO, TINY, results, train, wait_for_checkpoint


def train_losses(workdir) -> dict[int, float]:
    """step -> training loss from metrics.jsonl, asserting that no step is recorded twice."""
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert len(steps) == len(set(steps)), "a step is recorded twice"
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    done = train(workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    return workdir, done


def test_tiny_run_writes_everything(uninterrupted):
    workdir, done = uninterrupted
    r = results(workdir)
    for split in ("test", "validation"):
        assert {"accuracy", "rmse", "mae"} <= set(r[split])
        assert 0 <= r[split]["accuracy"] <= 1
    assert {"majority", "mean_rating"} <= set(r["baselines"])
    assert len(r["param_checksum"]) == 64
    assert r["compilations"]["train_step"] <= len(r["buckets"])
    assert os.path.exists(os.path.join(workdir, "config.json"))
    assert os.path.exists(os.path.join(workdir, "vocab.txt"))
    assert os.listdir(os.path.join(workdir, "checkpoints", "latest"))
    assert os.listdir(os.path.join(workdir, "checkpoints", "best"))
    assert [f for f in os.listdir(os.path.join(workdir, "tensorboard")) if "tfevents" in f]
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    kinds = {rec["kind"] for rec in records}
    assert {"train", "validation", "test"} <= kinds
    assert sum(rec["kind"] == "validation" for rec in records) >= 2
    train_records = [rec for rec in records if rec["kind"] == "train"]
    assert {"loss", "grad_norm", "param_norm", "update_norm", "lr"} <= set(train_records[0])
    assert "baseline: majority" in done.stdout


def test_same_command_again_reports_the_finished_run(uninterrupted):
    workdir, _ = uninterrupted
    again = train(workdir)
    assert again.returncode == 0
    assert "finished run" in again.stdout
    assert f"param_checksum {results(workdir)['param_checksum']}" in again.stdout


def test_sigkill_then_resume_gives_identical_parameters(uninterrupted, tmp_path):
    workdir, _ = uninterrupted
    process = train(tmp_path, wait=False)
    wait_for_checkpoint(tmp_path, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not os.path.exists(tmp_path / "results.json")
    resumed = train(tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from step" in resumed.stdout
    assert results(tmp_path)["param_checksum"] == results(workdir)["param_checksum"]
    assert results(tmp_path)["test"] == results(workdir)["test"]
    assert train_losses(tmp_path) == train_losses(workdir)  # each step once, the same losses


def test_sigterm_saves_and_exits_zero_then_resumes(uninterrupted, tmp_path):
    workdir, _ = uninterrupted
    process = train(tmp_path, wait=False)
    wait_for_checkpoint(tmp_path, process)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=900)
    assert process.returncode == 0, out
    assert "SIGTERM" in out
    resumed = train(tmp_path)
    assert resumed.returncode == 0
    assert results(tmp_path)["param_checksum"] == results(workdir)["param_checksum"]
    assert train_losses(tmp_path) == train_losses(workdir)


@pytest.mark.slow
@pytest.mark.parametrize("signal_to_send", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_and_resuming_many_times_always_ends_with_the_same_parameters(uninterrupted, tmp_path,
                                                                               signal_to_send):
    """Preemption after preemption: every SIGTERM saves and exits 0 (never an abort at shutdown),
    and the run still ends with the uninterrupted run's parameters."""
    workdir, _ = uninterrupted
    for attempt in range(6):
        process = train(tmp_path, wait=False)
        wait_for_checkpoint(tmp_path, process, minimum_step=10 + 20 * attempt)
        if process.poll() is not None:
            break
        process.send_signal(signal_to_send)
        out, _ = process.communicate(timeout=900)
        expected = 0 if signal_to_send == signal.SIGTERM else -signal.SIGKILL
        assert process.returncode == expected, out
    finished = train(tmp_path)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert results(tmp_path)["param_checksum"] == results(workdir)["param_checksum"]
    assert train_losses(tmp_path) == train_losses(workdir)


def test_resuming_with_another_config_is_refused_naming_the_keys(tmp_path):
    first = train(tmp_path, "--config.train.epochs=1")
    assert first.returncode == 0, first.stdout + first.stderr
    os.remove(tmp_path / "results.json")  # as if it had been stopped: checkpoints remain
    changed = train(tmp_path, "--config.train.epochs=1", "--config.train.batch_size=8",
                    "--config.optimizer.learning_rate=0.5")
    assert changed.returncode != 0
    message = changed.stdout + changed.stderr
    assert "train.batch_size: 16 -> 8" in message and "optimizer.learning_rate" in message
    longer = train(tmp_path, "--config.train.epochs=2")
    assert longer.returncode == 0, longer.stdout + longer.stderr
    assert "resuming with changed settings: train.epochs" in longer.stdout


def test_the_logged_learning_rate_is_the_optimiser_steps_under_accumulation(tmp_path):
    """With 2 micro-steps an update, the schedule moves every second step, and so does the log."""
    done = train(tmp_path, "--config.train.epochs=1", "--config.optimizer.accumulation_steps=2",
                 "--config.optimizer.schedule.name=exponential", "--config.optimizer.schedule.decay_epochs=0.1",
                 config=f"--config={REPO}/experiments/configs/cnn.py:tiny")
    assert done.returncode == 0, done.stdout + done.stderr
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    rates = [r["lr"] for r in sorted((r for r in records if r["kind"] == "train"), key=lambda r: r["step"])]
    assert len(rates) >= 6 and rates[0] > rates[-1]
    assert all(rates[i] == rates[i + 1] for i in range(0, len(rates) - 1, 2))  # pairs of micro-steps


def test_non_finite_loss_stops_with_a_message_and_keeps_checkpoints(tmp_path):
    done = train(tmp_path, "--config.optimizer.learning_rate=1e12", "--config.optimizer.name=sgd",
                 "--config.optimizer.momentum=0.0", config=f"--config={REPO}/experiments/configs/cnn.py:tiny")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "learning rate" in done.stderr and "step" in done.stderr
    assert not os.path.exists(tmp_path / "results.json")


def test_training_from_an_amazon_file(tmp_path):
    from jaxreviews.data import readers, synthetic
    reviews = synthetic.generate(synthetic.default_spec("tiny")).reviews
    path = tmp_path / "reviews.json"
    readers.write_amazon(path, reviews)
    done = train(tmp_path / "run", "--config.data.name=files", "--config.data.format=amazon",
                 f"--config.data.path={path}", "--config.train.epochs=2")
    assert done.returncode == 0, done.stdout + done.stderr
    r = results(tmp_path / "run")
    assert r["data"]["train"]["reviews"] + r["data"]["validation"]["reviews"] + r["data"]["test"]["reviews"] == len(reviews)


def test_batch_sharded_over_eight_devices_trains_as_one_device(tmp_path):
    """The global batch split over 8 devices gives the parameters of 1 device (float tolerance)."""
    config = f"--config={REPO}/experiments/configs/cnn.py:tiny"
    done = train(tmp_path / "eight", "--config.train.epochs=1", config=config, devices=8)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 devices" in done.stdout
    assert results(tmp_path / "eight")["test"]["reviews"] == 60
    one = train(tmp_path / "one", "--config.train.epochs=1", config=config)
    assert one.returncode == 0, one.stdout + one.stderr
    import jax
    import jaxreviews
    eight_params, one_params = (jaxreviews.load_run(tmp_path / name).params for name in ("eight", "one"))
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(one_params)[0], jax.tree.leaves(eight_params)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))


def test_a_repeated_run_compiles_nothing(tmp_path):
    """The persistent compilation cache: the same config again reads every program back."""
    cache = f"--config.compilation_cache_dir={tmp_path / 'cache'}"
    first = train(tmp_path / "first", cache, "--config.train.epochs=2")
    second = train(tmp_path / "second", cache, "--config.train.epochs=2")
    assert first.returncode == 0 and second.returncode == 0, first.stdout + first.stderr + second.stderr
    compiled, again = results(tmp_path / "first")["compile"], results(tmp_path / "second")["compile"]
    assert compiled["programs"] > 0 and again["programs"] == 0 and again["cache_reads"] >= compiled["programs"]
    assert results(tmp_path / "second")["param_checksum"] == results(tmp_path / "first")["param_checksum"]
    assert "compilation" in second.stdout and "read from the cache" in second.stdout
    r = results(tmp_path / "second")
    assert r["train_seconds"] > 0 and r["docs_per_s"] > 0 and r["layout"] == "packed"


def test_padded_layout_still_trains(tmp_path):
    done = train(tmp_path, "--config.data.layout=padded", "--config.train.epochs=2")
    assert done.returncode == 0, done.stdout + done.stderr
    r = results(tmp_path)
    assert r["layout"] == "padded" and len(r["buckets"]) == 2
    assert r["compilations"]["train_step"] <= 2 and r["test"]["reviews"] == 60


def test_packed_batches_sharded_over_eight_devices(tmp_path):
    done = train(tmp_path, "--config.train.epochs=1", devices=8)
    assert done.returncode == 0, done.stdout + done.stderr
    r = results(tmp_path)
    assert "8 devices" in done.stdout and r["layout"] == "packed"
    assert r["buckets"][0][0] % 8 == 0 and r["buckets"][0][2] % 8 == 0  # rows shard evenly
    assert r["test"]["reviews"] == 60
