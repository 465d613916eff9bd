"""End to end: a run trains, evaluates, checkpoints, resumes exactly, stops cleanly, and refuses a
directory that holds another config. Most runs are in this process (`run_here`); signals, fake
devices and the command's output need a subprocess (`train`)."""
import json
import logging
import os
import signal

import numpy as np
import pytest

from jaxreviews.train import WorkdirError, format_results, loop
from tests.training import REPO, results, run_here, tiny, train, wait_for_checkpoint


def train_losses(workdir) -> dict[int, float]:
    """step -> training loss from metrics.jsonl, asserting that no step is recorded twice."""
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert len(steps) == len(set(steps)), "a step is recorded twice"
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """han_upa:tiny as `make test`'s reference run (TensorBoard on, as by default)."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    return workdir, run_here(workdir, tiny(**{"train.tensorboard": True}))


def test_tiny_run_writes_everything(uninterrupted):
    workdir, r = uninterrupted
    assert r.num_members == 1 and r.members[0] == r.test and r.members_std["accuracy"] == 0
    for split in (r.test, r.validation):
        assert {"accuracy", "rmse", "mae"} <= set(split)
        assert 0 <= split["accuracy"] <= 1
    assert {"majority", "mean_rating"} <= set(r.baselines)
    assert len(r.param_checksum) == 64
    assert r.compilations["train_step"] <= len(r.buckets)
    assert results(workdir) == json.loads(json.dumps(r.to_json()))
    for name in ("config.json", "vocab.txt", "model.json"):
        assert os.path.exists(os.path.join(workdir, name))
    assert os.listdir(os.path.join(workdir, "checkpoints", "latest"))
    assert os.listdir(os.path.join(workdir, "checkpoints", "best"))
    assert [f for f in os.listdir(os.path.join(workdir, "tensorboard")) if "tfevents" in f]
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert {"train", "validation", "test"} <= {rec["kind"] for rec in records}
    assert sum(rec["kind"] == "validation" for rec in records) >= 2
    train_records = [rec for rec in records if rec["kind"] == "train"]
    assert {"loss", "grad_norm", "param_norm", "update_norm", "lr"} <= set(train_records[0])
    assert r.train_seconds > 0 and r.docs_per_s > 0 and r.compile["seconds"] > 0
    assert "baseline: majority" in format_results(r)


def test_the_same_command_again_reports_the_finished_run(uninterrupted):
    workdir, r = uninterrupted
    again = train(workdir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "finished run" in again.stdout
    assert f"param_checksum {r.param_checksum}" in again.stdout


def test_sigkill_then_resume_gives_identical_parameters(uninterrupted, tmp_path, caplog):
    workdir, r = uninterrupted
    process = train(tmp_path, "--config.train.tensorboard=False", wait=False)
    wait_for_checkpoint(tmp_path, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not os.path.exists(tmp_path / "results.json")
    with caplog.at_level(logging.INFO, logger="jaxreviews"):
        resumed = run_here(tmp_path, tiny())
    assert "resumed from step" in caplog.text
    assert resumed.param_checksum == r.param_checksum
    assert resumed.test == r.test
    assert train_losses(tmp_path) == train_losses(workdir)  # each step once, the same losses


def test_sigterm_saves_and_exits_zero_then_resumes(uninterrupted, tmp_path):
    workdir, r = uninterrupted
    process = train(tmp_path, "--config.train.tensorboard=False", wait=False)
    wait_for_checkpoint(tmp_path, process)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=900)
    assert process.returncode == 0, out
    assert "saved step" in out
    resumed = run_here(tmp_path, tiny())
    assert resumed.param_checksum == r.param_checksum
    assert train_losses(tmp_path) == train_losses(workdir)


@pytest.mark.slow
@pytest.mark.parametrize("signal_to_send", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_and_resuming_many_times_always_ends_with_the_same_parameters(uninterrupted, tmp_path,
                                                                               signal_to_send):
    """Preemption after preemption: every SIGTERM saves and exits 0 (never an abort at shutdown),
    and the run still ends with the uninterrupted run's parameters."""
    workdir, r = uninterrupted
    for attempt in range(6):
        process = train(tmp_path, "--config.train.tensorboard=False", wait=False)
        wait_for_checkpoint(tmp_path, process, minimum_step=10 + 20 * attempt)
        if process.poll() is not None:
            break
        process.send_signal(signal_to_send)
        out, _ = process.communicate(timeout=900)
        expected = 0 if signal_to_send == signal.SIGTERM else -signal.SIGKILL
        assert process.returncode == expected, out
    finished = train(tmp_path, "--config.train.tensorboard=False")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert results(tmp_path)["param_checksum"] == r.param_checksum
    assert train_losses(tmp_path) == train_losses(workdir)


class StopAfter:
    """A stop request after `steps` steps (the loop asks `is_set()` once after each step)."""

    def __init__(self, steps):
        self.steps, self.asked = steps, 0

    def is_set(self):
        self.asked += 1
        return self.asked >= self.steps


def test_a_stop_request_saves_the_step_and_the_same_call_resumes(uninterrupted, tmp_path):
    """What SIGTERM does in the command, through the library: `stop` set after step 25 (between
    two records), the run saves step 25 with the open metrics window and returns None; the same
    call resumes to the uninterrupted run's parameters and records."""
    workdir, r = uninterrupted
    assert run_here(tmp_path, tiny(), stop=StopAfter(25)) is None
    assert not os.path.exists(tmp_path / "results.json")
    assert sorted(int(n) for n in os.listdir(tmp_path / "checkpoints" / "latest") if n.isdigit())[-1] == 25
    resumed = run_here(tmp_path, tiny())
    assert resumed.param_checksum == r.param_checksum
    assert train_losses(tmp_path) == train_losses(workdir)
    assert resumed.train_seconds > 0 and resumed.eval_seconds > 0  # the sessions' times add up


def test_another_config_is_refused_naming_the_keys_and_more_epochs_continue(tmp_path, caplog):
    first = run_here(tmp_path, tiny(**{"train.epochs": 1}))
    with pytest.raises(WorkdirError, match=r"finished run of another config \(model.embed_dim: 16 -> 32\)"):
        run_here(tmp_path, tiny(**{"train.epochs": 1, "model.embed_dim": 32}))
    os.remove(tmp_path / "results.json")  # as if it had been stopped: checkpoints remain
    with pytest.raises(WorkdirError, match=r"optimizer.learning_rate: 0.01 -> 0.5; train.batch_size: 16 -> 8"):
        run_here(tmp_path, tiny(**{"train.epochs": 1, "train.batch_size": 8, "optimizer.learning_rate": 0.5}))
    with caplog.at_level(logging.INFO, logger="jaxreviews"):
        again = run_here(tmp_path, tiny(**{"train.epochs": 1, "train.log_every_steps": 3}))
    assert "resuming with changed settings: train.log_every_steps" in caplog.text
    assert again.param_checksum == first.param_checksum
    assert again.train_seconds == pytest.approx(first.train_seconds, abs=0.02)  # kept from the first session
    with caplog.at_level(logging.INFO, logger="jaxreviews"):
        longer = run_here(tmp_path, tiny(**{"train.epochs": 2, "train.patience": 0}))
    assert "continuing the finished run" in caplog.text and "train.epochs 1 -> 2" in caplog.text
    assert longer.steps == 2 * first.steps
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in records if r["kind"] == "test"] == [longer.steps]  # one test record, the last
    with pytest.raises(WorkdirError, match="cannot be shortened"):
        run_here(tmp_path, tiny(**{"train.epochs": 1, "train.patience": 0}))


def test_max_steps_ends_training_mid_epoch_validates_there_and_continues_further(tmp_path):
    """Large corpora train by steps: max_steps=7 of 6 epochs ends at step 7 with a validation and
    the test there; a larger max_steps continues the finished run, a smaller one is refused."""
    config = tiny("cnn", **{"train.max_steps": 7, "train.patience": 0})
    first = run_here(tmp_path, config)
    assert first.steps == 7
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in records if r["kind"] == "validation"][-1] == 7
    assert [r["step"] for r in records if r["kind"] == "test"] == [7]
    longer = run_here(tmp_path, tiny("cnn", **{"train.max_steps": 12, "train.patience": 0}))
    assert longer.steps == 12
    with pytest.raises(WorkdirError, match="cannot be shortened to train.max_steps=5"):
        run_here(tmp_path, tiny("cnn", **{"train.max_steps": 5, "train.patience": 0}))


def test_a_run_saved_before_an_option_existed_reads_it_at_its_default(tmp_path, caplog):
    """config.json of an older version lacks today's options: they count at their defaults, so
    the finished run is reported, not continued (train.max_steps came after many runs)."""
    first = run_here(tmp_path, tiny("cnn", **{"train.epochs": 1}))
    saved = json.load(open(tmp_path / "config.json"))
    del saved["train"]["max_steps"]
    json.dump(saved, open(tmp_path / "config.json", "w"))
    with caplog.at_level(logging.INFO, logger="jaxreviews"):
        again = run_here(tmp_path, tiny("cnn", **{"train.epochs": 1}))
    assert "continuing" not in caplog.text and again.param_checksum == first.param_checksum
    assert not os.path.exists(tmp_path / "results.previous.json")


def test_the_logged_learning_rate_is_the_optimiser_steps_under_accumulation(tmp_path):
    """With 2 micro-steps an update, the schedule moves every second step, and so does the log."""
    run_here(tmp_path, tiny("cnn", **{"train.epochs": 1, "optimizer.accumulation_steps": 2, "train.log_every_steps": 1,
                                      "optimizer.schedule.name": "exponential",
                                      "optimizer.schedule.decay_epochs": 0.1}))
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    rates = [r["lr"] for r in sorted((r for r in records if r["kind"] == "train"), key=lambda r: r["step"])]
    assert len(rates) >= 6 and rates[0] > rates[-1]
    assert all(rates[i] == rates[i + 1] for i in range(0, len(rates) - 1, 2))  # pairs of micro-steps


def test_non_finite_loss_stops_with_a_message_and_keeps_checkpoints(tmp_path):
    config = tiny("cnn", **{"optimizer.learning_rate": 1e12, "optimizer.name": "sgd", "optimizer.momentum": 0.0})
    with pytest.raises(loop.NonFiniteLossError, match=r"steps \d+-\d+: the loss is nan .*learning rate too high"):
        run_here(tmp_path, config)
    assert not os.path.exists(tmp_path / "results.json")


def test_training_from_an_amazon_file(tmp_path):
    from jaxreviews.data import readers, synthetic
    reviews = synthetic.generate(synthetic.default_spec("tiny")).reviews
    path = tmp_path / "reviews.json"
    readers.write_amazon(path, reviews)
    r = run_here(tmp_path / "run", tiny(**{"data.name": "files", "data.format": "amazon", "data.path": str(path),
                                          "train.epochs": 2}))
    assert r.data["train"]["reviews"] + r.data["validation"]["reviews"] + r.data["test"]["reviews"] == len(reviews)


def test_batch_sharded_over_eight_devices_trains_as_one_device(tmp_path):
    """The global batch split over 8 devices gives the parameters of 1 device (float tolerance)."""
    config = f"--config={REPO}/experiments/configs/cnn.py:tiny"
    done = train(tmp_path / "eight", "--config.train.epochs=1", config=config, devices=8)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "8 devices" in done.stdout
    assert results(tmp_path / "eight")["test"]["reviews"] == 60
    run_here(tmp_path / "one", tiny("cnn", **{"train.epochs": 1, "train.tensorboard": True}))
    import jax
    import jaxreviews
    eight_params, one_params = (jaxreviews.load_run(tmp_path / name).params for name in ("eight", "one"))
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(one_params)[0], jax.tree.leaves(eight_params)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))


def test_a_repeated_run_compiles_nothing(tmp_path):
    """The persistent compilation cache, across processes: the same config again reads every
    program back."""
    cache = f"--config.compilation.cache_dir={tmp_path / 'cache'}"
    config = f"--config={REPO}/experiments/configs/mf.py:tiny"
    first = train(tmp_path / "first", cache, "--config.train.epochs=2", config=config)
    second = train(tmp_path / "second", cache, "--config.train.epochs=2", config=config)
    assert first.returncode == 0 and second.returncode == 0, first.stdout + first.stderr + second.stderr
    compiled, again = results(tmp_path / "first")["compile"], results(tmp_path / "second")["compile"]
    assert compiled["programs"] > 0 and again["programs"] == 0 and again["cache_reads"] >= compiled["programs"]
    assert results(tmp_path / "second")["param_checksum"] == results(tmp_path / "first")["param_checksum"]
    assert "compilation" in second.stdout and "read from the cache" in second.stdout


def test_padded_layout_still_trains(tmp_path):
    r = run_here(tmp_path, tiny(**{"data.layout": "padded", "train.epochs": 2}))
    assert r.layout == "padded" and len(r.buckets) == 2
    assert r.compilations["train_step"] <= 2 and r.test["reviews"] == 60


def test_packed_batches_sharded_over_eight_devices(tmp_path):
    done = train(tmp_path, "--config.train.epochs=1", devices=8)
    assert done.returncode == 0, done.stdout + done.stderr
    r = results(tmp_path)
    assert "8 devices" in done.stdout and r["layout"] == "packed"
    assert r["buckets"][0][0] % 8 == 0 and r["buckets"][0][2] % 8 == 0  # rows shard evenly
    assert r["test"]["reviews"] == 60


def test_batches_moved_in_groups_train_as_one_at_a_time(uninterrupted, tmp_path):
    """train.steps_per_transfer (accelerators' default 16): 4 batches moved at once, each step
    picking its own inside the program, stopped at step 25 (inside a group), resumed with groups
    of 7 (an epoch of 30 steps ends inside a group either way): the uninterrupted run's parameters
    and records, one train program."""
    workdir, r = uninterrupted
    assert run_here(tmp_path, tiny(**{"train.steps_per_transfer": 4}), stop=StopAfter(25)) is None
    resumed = run_here(tmp_path, tiny(**{"train.steps_per_transfer": 7}))
    assert resumed.param_checksum == r.param_checksum
    assert train_losses(tmp_path) == train_losses(workdir)
    assert resumed.compilations["train_step"] <= 1


def test_members_with_their_own_orders_move_in_groups_too(tmp_path):
    """Each member its own batches ([K, B, ...]), stacked in groups of 3: as one at a time."""
    config = dict(num_seeds=2, member_data_order=True, **{"train.epochs": 1})
    one = run_here(tmp_path / "one", tiny("cnn", **config))
    grouped = run_here(tmp_path / "grouped", tiny("cnn", **config, **{"train.steps_per_transfer": 3}))
    assert grouped.param_checksum == one.param_checksum and grouped.test == one.test
