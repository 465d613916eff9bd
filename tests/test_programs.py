"""A run's compiled programs: init, train and eval, and nothing else for one member. The keys come
out of the init program, the train step's metrics and the evaluation's sums add up inside their
programs, and a best is kept without a program when every member improved."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreviews.models import heads
from jaxreviews.train import evaluation, experiment as experiment_lib, loop, members, step as step_lib
from tests.training import programs, results, tiny, train


def build(tmp_path, model: str = "han_upa", **overrides):
    config = loop.prepare_config(tiny(model, **overrides))
    return experiment_lib.build(config, str(tmp_path), cache=programs())


def test_a_default_run_compiles_three_programs_and_a_repeat_none(tmp_path):
    """The CPU goal of a default run (init, train, eval), counted on an empty compilation cache;
    the same command on another workdir then reads those three back."""
    cache = f"--config.compilation.cache_dir={tmp_path / 'cache'}"
    first = train(tmp_path / "first", cache, "--config.train.epochs=2")
    second = train(tmp_path / "second", cache, "--config.train.epochs=2")
    assert first.returncode == 0 and second.returncode == 0, first.stdout + first.stderr + second.stderr
    compiled, again = results(tmp_path / "first")["compile"], results(tmp_path / "second")["compile"]
    assert compiled["programs"] == 3 and compiled["cache_reads"] == 0, compiled
    assert again["programs"] == 0 and again["cache_reads"] == 3, again
    assert results(tmp_path / "second")["param_checksum"] == results(tmp_path / "first")["param_checksum"]


def test_the_init_program_makes_each_members_keys_from_its_seed(tmp_path):
    experiment = build(tmp_path, num_seeds=2, seed=7)
    state, run_keys = experiment.init_state()
    for i, seed in enumerate((7, 8)):
        init_key, run_key = jax.random.split(jax.random.key(seed))
        np.testing.assert_array_equal(jax.random.key_data(run_keys)[i], jax.random.key_data(run_key))
        alone = step_lib.init_state(experiment.model, experiment.tx, experiment.to_device(experiment.example_batch),
                                    init_key)
        for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(state.params)):  # eager vs jitted: 1 ulp
            np.testing.assert_allclose(np.asarray(b[i]), np.asarray(a), rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="2147483648 is not a 32-bit"):
        members.seeds_array([2 ** 31], experiment.mesh)


@pytest.mark.parametrize("kind", ["classification", "regression", "both"])
def test_the_running_sums_are_named_before_any_step_is_traced(kind):
    """The train window and the evaluation sums are made from these names: they must be the
    metrics' keys exactly (a mismatch would be an error at trace time)."""
    outputs = heads.split_outputs(jnp.zeros((3, 6)), kind, 5, (1.0, 5.0), "sigmoid")
    batch = {"label": jnp.array([0, 1, 4]), "rating": jnp.array([1.0, 2.0, 5.0]), "weight": jnp.ones(3)}
    config = tiny(**{"model.head.kind": kind}).model.head
    assert tuple(heads.metric_sums(outputs, batch, config)) == heads.metric_sum_names(kind)


def test_a_mismatched_running_sum_is_named():
    with pytest.raises(ValueError, match="train step's sums"):
        members.add_sums({"loss": jnp.zeros(1)}, {"loss": jnp.zeros(1), "weight": jnp.zeros(1)}, "train step")


def test_evaluation_sums_kept_in_the_program_equal_sums_added_per_batch(tmp_path):
    experiment = build(tmp_path, num_seeds=2)
    state, _ = experiment.init_state()
    in_program = experiment.evaluate(state.params, state.model_state, experiment.valid_batches)
    plain = jax.jit(step_lib.make_eval_step(experiment.model, experiment.config.model.head,
                                            experiment.splits.num_classes))
    for i, member in enumerate(in_program["members"]):
        params, model_state = jax.tree.map(lambda x, i=i: x[i], (state.params, state.model_state))
        added = evaluation.evaluate(plain, params, model_state, experiment.valid_batches.evaluation())
        assert member.keys() == added.keys()
        for name, value in added.items():
            assert member[name] == pytest.approx(value, rel=1e-6), name


def test_bests_are_copies_when_all_improved_and_selected_otherwise(tmp_path):
    experiment = build(tmp_path, num_seeds=2)
    state, _ = experiment.init_state()
    current, old = state.params, jax.tree.map(lambda x: x + 1, state.params)
    compiled = []

    def select(*args):
        compiled.append(True)
        return members.select_members(*args)

    copies = members.keep_best(np.array([True, True]), current, old, select)
    assert not compiled
    for a, b in zip(jax.tree.leaves(copies), jax.tree.leaves(current)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert a.unsafe_buffer_pointer() != b.unsafe_buffer_pointer()  # the train step donates `current`
    picked = members.keep_best(np.array([False, True]), current, old, select)
    assert compiled
    for a, b, c in zip(jax.tree.leaves(picked), jax.tree.leaves(current), jax.tree.leaves(old)):
        np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(c[0]))
        np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))
