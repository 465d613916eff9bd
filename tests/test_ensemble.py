"""Ensembles: K members in one program equal K single runs; sharded equals unsharded; per-member
early stopping; snapshot ensembles; populations; the ensemble's predictions and resume."""
import json
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxreviews
from jaxreviews import options
from jaxreviews.models import heads
from jaxreviews.train import format_results, members as members_lib, population
from jaxreviews.train.early_stopping import MemberStopping
from tests.training import REPO, records, run_here, tiny, train, wait_for_checkpoint

CNN = f"--config={REPO}/experiments/configs/cnn.py:tiny"


def ran(workdir, *flags, config=CNN, devices=None):
    done = train(workdir, *flags, config=config, devices=devices)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def cnn(**overrides):
    return tiny("cnn", **overrides)


def member(params, i):
    return jax.tree.map(lambda x: np.asarray(x[i]), params)


def assert_close(actual, expected, rtol=2e-4, atol=2e-5):
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(expected)[0], jax.tree.leaves(actual)):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def three_seeds(tmp_path_factory):
    """cnn, 3 members in one program, the shared order of seed 0, 2 epochs."""
    workdir = tmp_path_factory.mktemp("three_seeds")
    return workdir, run_here(workdir, cnn(**{"num_seeds": 3, "train.epochs": 2}))


def test_member_equals_the_single_run_of_its_seed(three_seeds, tmp_path):
    workdir, r = three_seeds
    single_results = run_here(tmp_path, cnn(**{"seed": 2, "data.shuffle_seed": 0, "train.epochs": 2}))
    ensemble, single = jaxreviews.load_run(workdir, "latest"), jaxreviews.load_run(tmp_path, "latest")
    assert ensemble.members == 3 and single.members == 0  # one member loads as one model
    assert_close(member(ensemble.params, 2), single.params)
    # The ensemble's step is the single step's work three times over (counted matmuls).
    costs = r.accounting, single_results.accounting
    assert costs[0]["flops_per_step"] == pytest.approx(3 * costs[1]["flops_per_step"], rel=1e-6)
    # ... and not the others: members really differ
    assert not np.allclose(member(ensemble.params, 0)["head"]["output"]["kernel"],
                           member(ensemble.params, 2)["head"]["output"]["kernel"])


def test_results_hold_members_their_statistics_and_the_ensemble(three_seeds):
    workdir, r = three_seeds
    assert r.num_members == 3 and r.member_seeds == [0, 1, 2] and len(r.members) == 3
    assert set(r.test) == set(r.members[0]) and r.test != r.members[0]
    for key in ("accuracy", "rmse", "nll", "macro_f1"):
        values = [m[key] for m in r.members]
        assert r.members_mean[key] == pytest.approx(np.mean(values))
        assert r.members_std[key] == pytest.approx(np.std(values, ddof=1))
    assert r.model_docs_per_s == pytest.approx(3 * r.docs_per_s, rel=1e-3)
    assert r.compilations["train_step"] <= 1  # one program for all members
    table = format_results(r)
    assert "ensemble of 3 (test)" in table and "members (test, mean ± std)" in table
    # Averaging probabilities cannot raise the NLL above the members' mean (convexity), and the mean
    # rating's error is at most the members' mean error.
    assert r.test["nll"] <= r.members_mean["nll"] + 1e-9
    assert r.test["rmse"] <= r.members_mean["rmse"] + 1e-9
    validation = records(workdir, "validation")
    assert len(validation) == 2 and len(validation[0]["member_accuracy"]) == 3


def test_the_loaded_ensemble_predicts_the_mean_of_its_members(three_seeds):
    workdir, _ = three_seeds
    run = jaxreviews.load_run(workdir)
    reviews = [{"user": "u1", "product": "p1", "text": "great strings , would buy again .", "rating": 5},
               {"user": "nobody", "product": "p2", "text": "broke after a week . awful .", "rating": 1}]
    predictions = list(run.predict(reviews))
    (_, batch), = list(run.batches(run.encode([r for r, _ in run.reviews(reviews)])))
    probabilities = []
    for i in range(run.members):
        outputs = run.model.apply({"params": member(run.params, i), **member(run.model_state, i)}, batch, train=False)
        probabilities.append(jax.nn.softmax(outputs["logits"], axis=-1))
    expected = np.mean(probabilities, axis=0)
    for slot, prediction in enumerate(predictions):
        np.testing.assert_allclose(prediction["probabilities"], expected[slot], atol=1e-5)
        assert prediction["predicted_class"] == int(np.argmax(expected[slot]))
    from jaxreviews.data import pipeline
    splits = pipeline.load_splits(run.config.data)
    metrics = run.evaluate(b for _, b in run.batches(splits.test))
    r = three_seeds[1]
    assert metrics["accuracy"] == pytest.approx(r.test["accuracy"])
    assert metrics["rmse"] == pytest.approx(r.test["rmse"], rel=1e-5)


def test_sigkill_then_resume_gives_the_uninterrupted_ensemble(three_seeds, tmp_path):
    workdir, r = three_seeds
    process = train(tmp_path, "--config.num_seeds=3", "--config.train.epochs=2", "--config.train.tensorboard=False",
                    config=CNN, wait=False)
    wait_for_checkpoint(tmp_path, process, minimum_step=20)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = run_here(tmp_path, cnn(**{"num_seeds": 3, "train.epochs": 2}))
    assert resumed.param_checksum == r.param_checksum
    assert resumed.members == r.members


def test_own_training_orders_equal_single_runs_of_each_seed(tmp_path):
    run_here(tmp_path / "own", cnn(**{"num_seeds": 2, "member_data_order": True, "train.epochs": 1}))
    run_here(tmp_path / "single", cnn(**{"seed": 1, "train.epochs": 1}))
    ensemble, single = jaxreviews.load_run(tmp_path / "own", "latest"), jaxreviews.load_run(tmp_path / "single", "latest")
    assert_close(member(ensemble.params, 1), single.params)


def test_population_members_equal_single_runs_with_their_hyperparameters(tmp_path):
    r = run_here(tmp_path / "population", cnn(**{"num_seeds": 2, "train.epochs": 1,
                                                 "population.learning_rate": (3e-3, 2e-2),
                                                 "population.head_dropout": (0.1, 0.6)}))
    run_here(tmp_path / "single", cnn(**{"seed": 1, "data.shuffle_seed": 0, "train.epochs": 1,
                                         "optimizer.learning_rate": 2e-2, "model.head_dropout": 0.6}))
    assert r.member_hyperparameters == [pytest.approx({"learning_rate": 3e-3, "head_dropout": 0.1}),
                                        pytest.approx({"learning_rate": 2e-2, "head_dropout": 0.6})]
    ensemble = jaxreviews.load_run(tmp_path / "population", "latest")
    assert_close(member(ensemble.params, 1), jaxreviews.load_run(tmp_path / "single", "latest").params)
    assert ensemble.model_state["hyperparams"]["head_dropout"]["rate"].tolist() == pytest.approx([0.1, 0.6])
    assert r.members[0] != r.members[1]


def test_each_member_keeps_its_own_best_and_stops_on_its_own(tmp_path):
    """A member whose learning rate is 0 never improves after its first evaluation and stops; the
    other keeps improving: their best steps differ, and the best checkpoint holds each one's best."""
    r = run_here(tmp_path, cnn(**{"num_seeds": 2, "train.epochs": 4, "train.patience": 1,
                                  "population.learning_rate": (0.0, 1e-2)})).to_json()
    steps_per_epoch = 30
    assert r["member_best_steps"][0] == steps_per_epoch
    assert r["member_best_steps"][1] > steps_per_epoch
    validation = records(tmp_path, "validation")
    assert validation[1]["stopped"] == [True, False]  # stopped after one evaluation without improvement
    for i in range(2):  # the recorded best is the best of the member's validation history
        history = [(v["member_accuracy"][i], -v["step"]) for v in validation]
        assert -max(history)[1] == r["member_best_steps"][i]
    best, latest = jaxreviews.load_run(tmp_path), jaxreviews.load_run(tmp_path, "latest")
    initial = member(best.params, 0)  # lr 0: the member's parameters never moved
    assert_close(member(latest.params, 0), initial, rtol=0, atol=0)


def test_snapshot_ensemble_takes_a_snapshot_at_each_cycle_end(tmp_path):
    r = run_here(tmp_path, cnn(**{"train.snapshots": 3, "train.epochs": 3, "train.log_every_steps": 1})).to_json()
    assert r["snapshot_steps"] == [30, 60, 90] and len(r["members"]) == 3
    assert sorted(int(n) for n in os.listdir(tmp_path / "checkpoints" / "snapshots") if n.isdigit()) == [30, 60, 90]
    lr = {rec["step"]: rec["lr"] for rec in records(tmp_path, "train")}
    peak = 1e-2  # the tiny config's learning rate
    for start in (0, 30, 60):  # each cycle starts at the peak and ends near zero
        assert lr[start + 1] == pytest.approx(peak)
        assert lr[start + 30] < 0.01 * peak
    run = jaxreviews.load_run(tmp_path)
    assert run.members == 3
    assert r["test"]["nll"] <= r["members_mean"]["nll"] + 1e-9


def test_members_sharded_over_devices_equal_members_on_one(tmp_path):
    common = ("--config.num_seeds=8", "--config.train.epochs=1")
    sharded = ran(tmp_path / "sharded", *common, devices=8)
    assert "mesh {'members': 8, 'data': 1, 'model': 1}" in sharded.stdout
    data = ran(tmp_path / "data", *common, "--config.mesh.members=1", devices=8)
    assert "mesh {'members': 1, 'data': 8, 'model': 1}" in data.stdout
    a, b = (jaxreviews.load_run(tmp_path / name, "latest").params for name in ("sharded", "data"))
    assert_close(a, b)


# -- units --------------------------------------------------------------------------------------------

def test_member_stopping_tracks_each_member():
    stopping = MemberStopping.create("accuracy", patience=2, num_members=3)
    assert stopping.update([0.5, 0.5, 0.5], 10).tolist() == [True, True, True]
    assert stopping.update([0.6, 0.4, 0.5], 20).tolist() == [True, False, False]
    assert stopping.update([0.7, 0.4, 0.4], 30).tolist() == [True, False, False]
    assert stopping.stopped == [False, True, True] and not stopping.stopped_early
    assert stopping.update([0.8, 0.9, 0.9], 40).tolist() == [True, False, False]  # stopped members stay put
    assert stopping.best_steps == [40, 10, 10]
    again = MemberStopping.create("accuracy", 2, 3).load_state_dict(json.loads(json.dumps(stopping.state_dict())))
    assert again == stopping
    with pytest.raises(ValueError, match="holds 3 members"):
        MemberStopping.create("accuracy", 2, 2).load_state_dict(stopping.state_dict())


def _config(num_seeds, **population_values):
    config = options.default_config("cnn")
    config.num_seeds = num_seeds
    for name, value in population_values.items():
        config.population[name] = value
    return config


def test_population_ranges_spread_on_the_right_scales():
    values = population.values(_config(5, learning_rate_range=(1e-4, 1e-2), head_dropout_range=(0.1, 0.5)))
    np.testing.assert_allclose(values["learning_rate"], [1e-4, 10 ** -3.5, 1e-3, 10 ** -2.5, 1e-2], rtol=1e-5)
    np.testing.assert_allclose(values["head_dropout"], [0.1, 0.2, 0.3, 0.4, 0.5], rtol=1e-5)
    config = _config(64, learning_rate_range=(1e-4, 1e-2))
    config.population.spacing = "random"
    drawn = population.values(config)["learning_rate"]
    assert drawn.min() >= 1e-4 * (1 - 1e-6) and drawn.max() <= 1e-2 * (1 + 1e-6)
    assert np.mean(drawn < 1e-3) == pytest.approx(0.5, abs=0.2)  # log-uniform: half below the geometric middle
    assert population.values(_config(3, weight_decay=(0, 1e-4, 1e-3)))["weight_decay"].tolist() == pytest.approx(
        [0, 1e-4, 1e-3])
    with pytest.raises(ValueError, match="lists 2 values for num_seeds=3"):
        population.values(_config(3, learning_rate=(1e-3, 1e-2)))
    assert population.injected_hyperparameters(_config(2, weight_decay_range=(1e-5, 1e-3))) == ("weight_decay",)
    # validate() says the same before any data is read, naming the option and the way out
    problems = options.problems(_config(3, learning_rate=(1e-3, 1e-2)))
    assert problems == ["population.learning_rate lists 2 values for num_seeds=3 members (a range: "
                        "population.learning_rate_range=(low, high))"]
    assert options.problems(_config(2, head_dropout_range=(0.5, 1.0))) == [
        "population.head_dropout_range=(0.5, 1.0): dropout rates must lie in [0, 1)"]
    assert "give the members' values or a range, not both" in options.problems(
        _config(2, learning_rate=(1e-3, 1e-2), learning_rate_range=(1e-3, 1e-2)))[0]


def test_combined_outputs_average_probabilities_and_ratings():
    logits = jnp.log(jnp.array([[[0.7, 0.2, 0.1]], [[0.1, 0.2, 0.7]]]))  # 2 members, 1 review, 3 classes
    combined = heads.combine_outputs({"logits": logits, "rating": jnp.array([[1.0], [2.0]])}, (1.0, 3.0), 3)
    np.testing.assert_allclose(jax.nn.softmax(combined["logits"]), [[0.4, 0.2, 0.4]], atol=1e-6)
    np.testing.assert_allclose(combined["rating"], [1.5])
    assert combined["predicted_rating"].tolist() == [1.5]


def test_members_axis_takes_the_devices_that_split_members_and_batch():
    assert members_lib.members_axis_size(8, 8, 16) == 8
    assert members_lib.members_axis_size(4, 8, 16) == 4  # 4 members x 2 data
    assert members_lib.members_axis_size(3, 8, 16) == 1  # 3 members do not split over 8 devices
    assert members_lib.members_axis_size(5, 1, 16) == 1
    with pytest.raises(ValueError, match="must divide"):
        members_lib.members_axis_size(6, 8, 16, requested=4)


@pytest.mark.slow
def test_the_ensemble_is_no_worse_than_its_mean_member_on_the_synthetic_corpus(tmp_path):
    config = options.default_config("cnn")
    config.num_seeds, config.train.epochs = 3, 3
    r = run_here(tmp_path, config)
    assert r.test["reviews"] == 2000
    assert r.test["accuracy"] >= r.members_mean["accuracy"]
    assert r.test["macro_f1"] >= r.members_mean["macro_f1"]
    assert r.test["rmse"] <= r.members_mean["rmse"]
    assert r.test["nll"] <= r.members_mean["nll"]


def test_members_initialise_without_batched_cpu_qr():
    """A vmapped init hands jaxlib a batched QR (the LSTMs' orthogonal kernels), which on a 2-thread
    XLA:CPU pool can wait forever on itself (members_lib.init_members); on CPU the members are
    initialised one after another, so every QR factorises one matrix. Checked in the compiled
    program: the same init vmapped does batch its QRs."""
    from experiments.configs import han_upa
    from jaxreviews import models

    config = options.default_config("han_upa", "tiny").model
    model = models.build_model(config, vocab_size=50, num_users=5, num_products=5, num_classes=5,
                               rating_range=(1.0, 5.0))
    batch = {"words": jnp.ones((2, 3, 4), jnp.int32), "sentence_mask": jnp.ones((2, 3), bool),
             "word_mask": jnp.ones((2, 3, 4), bool), "user": jnp.ones((2,), jnp.int32),
             "product": jnp.ones((2,), jnp.int32)}
    keys = jax.random.split(jax.random.key(0), 4)

    def init(key):
        return model.init({"params": key}, batch, train=False)["params"]

    def qr_operands(text):  # the shape each QR factorises: f32[rows,cols] or f32[batch,rows,cols]
        calls = [line for line in text.splitlines() if 'custom_call_target="lapack_sgeqrf' in line]
        return [line.split("operand_layout_constraints={")[1].split("{")[0] for line in calls]

    import optax

    mesh = members_lib.make_mesh(4, 2, devices=jax.devices()[:1])
    program = members_lib.init_program(model, optax.adam(1e-3), mesh, members_lib.member_sharding(mesh), 4)
    mapped = qr_operands(program.lower(np.arange(4, dtype=np.int32), batch, None).compile().as_text())  # seeds
    vmapped = qr_operands(jax.jit(jax.vmap(init)).lower(keys).compile().as_text())
    assert mapped and vmapped
    assert all(operand.startswith("f32[") and operand.count(",") == 1 for operand in mapped), mapped
    assert all(operand.count(",") == 2 for operand in vmapped), vmapped
