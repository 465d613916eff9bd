"""Embedding tables split by rows over a `model` mesh axis (jaxreviews/train/sharding.py): the axes
are named once on the parameters, the state is born split, and a 2 x 4 mesh of 8 CPU devices
trains as one device does."""
import jax
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from jaxreviews import options
from jaxreviews.models import layers
from jaxreviews.train import members, optimizers, sharding, step as step_lib
from tests.test_models import VOCAB, build, make_batch, tiny_config
from tests.training import REPO, results, train


def abstract_state_and_shardings(tx, name="han_upa"):
    model, batch = build(tiny_config(name)), make_batch()
    abstract = jax.eval_shape(lambda b: step_lib.init_state(model, tx, b, jax.random.key(0)), batch)
    mesh = members.make_mesh(1, 16)
    params = sharding.param_shardings(sharding.param_logical_axes(model, batch), mesh)
    return model, batch, abstract, sharding.state_shardings(abstract, params, mesh)


def test_tables_are_named_once_and_model_init_stays_plain():
    model, batch, abstract, shardings = abstract_state_and_shardings(optax.adam(1e-3))
    axes = sharding.param_logical_axes(model, batch)
    assert axes["word_embedding"]["embedding"] == P(*layers.VOCAB_AXES)
    assert axes["user_embedding"]["embedding"] == axes["product_embedding"]["embedding"] == P(*layers.ID_AXES)
    assert shardings.params["word_embedding"]["embedding"].spec == P("model", None)
    assert shardings.params["user_embedding"]["embedding"].spec == P("model", None)
    assert all(s.spec == P() for name, tree in shardings.params.items() if "embedding" not in name and "bias" not in name
               for s in jax.tree.leaves(tree))
    # Without logical axis rules in effect, init returns plain arrays, not boxed values.
    variables = jax.eval_shape(lambda b: model.init({"params": jax.random.key(0)}, b, train=False), batch)
    assert isinstance(variables["params"]["word_embedding"]["embedding"], jax.ShapeDtypeStruct)


def test_optimiser_state_of_a_table_is_split_as_the_table():
    """Adam's moments, also nested in the library's optimiser (clipping, frozen groups, decay)."""
    config = options.section("optimizer", "cnn")
    config.clip_norm, config.freeze, config.unfreeze_epoch, config.name = 1.0, "word_embedding", 1, "adamw"
    tx, _ = optimizers.make_optimizer(config, steps_per_epoch=10, total_epochs=2, batch_size=16)
    _, _, abstract, shardings = abstract_state_and_shardings(tx)
    split = []
    for (path, leaf), spec in zip(jax.tree_util.tree_flatten_with_path(abstract.opt_state)[0],
                                  jax.tree.leaves(shardings.opt_state)):
        name = jax.tree_util.keystr(path)
        is_table = name.endswith("']['embedding']")  # the word, user and product tables and the rating biases
        if is_table and len(leaf.shape) == 2:
            assert spec.spec == P("model", None), name
            split.append(name)
        else:
            assert spec.spec == P(), name
    assert len(split) >= 6  # mu and nu of every table (twice: frozen group and rest)


def test_padded_tables_start_with_the_rows_of_unpadded_ones():
    """Rows added so a table splits evenly leave the real rows' initial values as they were."""
    batch = make_batch()
    config = tiny_config("cnn")
    from jaxreviews import models
    small, padded = (models.build_model(config, vocab_size=size, num_users=8, num_products=8, num_classes=5,
                                        rating_range=(1.0, 5.0)) for size in (VOCAB, VOCAB + 3))
    tables = [jax.jit(lambda b, m=m: m.init({"params": jax.random.key(0)}, b, train=False))(batch)
              ["params"]["word_embedding"]["embedding"] for m in (small, padded)]
    np.testing.assert_array_equal(tables[1][:VOCAB], tables[0])


def test_tables_split_over_a_2x4_mesh_train_as_one_device(tmp_path):
    """data 2 x model 4 on 8 CPU devices against one device: the same parameters (the 8-device run's
    tables have rows added to split by 4; those are left out of the comparison), and each device
    holds a quarter of every table. Dropout on the packed rows is off: 8 devices pack the batch in
    rows of a multiple of 8, and a mask is drawn per slot of the rows (shape-stable dropout, on
    the head and the ids, stays on)."""
    flags = ("--config.train.epochs=1", "--config.model.embedding_dropout=0", "--config.model.dropout=0")
    split_params, one_params = train_split_and_one(tmp_path, flags, "--config.mesh.model=4", 8,
                                                   "mesh {'members': 1, 'data': 2, 'model': 4}")
    assert_params_close(split_params, one_params)
    split_memory, one_memory = (results(tmp_path / name)["accounting"] for name in ("split", "one"))
    tables = sum(int(np.prod(one_params[name]["embedding"].shape)) * 4
                 for name in ("word_embedding", "user_embedding", "product_embedding", "user_bias", "product_bias"))
    # Per device: the tables' parameters (and Adam's two moments of them) shrink to about a quarter.
    assert split_memory["parameter_bytes"] < one_memory["parameter_bytes"] - 0.6 * tables
    assert split_memory["optimizer_state_bytes"] < one_memory["optimizer_state_bytes"] - 1.2 * tables
    assert results(tmp_path / "split")["test"]["reviews"] == results(tmp_path / "one")["test"]["reviews"] == 60


def test_an_ensemble_splits_its_tables_too(tmp_path):
    """Members and tables on one mesh: 2 members x 2 model devices on 4 CPU devices train as the
    2 members on one device (every array of the state has its member axis first, then the table
    split: `members.with_member_axis`)."""
    flags = ("--config.train.epochs=1", "--config.num_seeds=2", "--config.model.embedding_dropout=0",
             "--config.model.dropout=0")
    split_params, one_params = train_split_and_one(tmp_path, flags, "--config.mesh.model=2", 4,
                                                   "mesh {'members': 2, 'data': 1, 'model': 2}")
    assert_params_close(split_params, one_params, rows_axis=1)  # the member axis first


def train_split_and_one(tmp_path, flags, mesh_flag, devices, mesh_line):
    """(parameters split over `devices` fake devices, parameters of the same run on one device)."""
    split = train(tmp_path / "split", *flags, mesh_flag, devices=devices)
    assert split.returncode == 0, split.stdout + split.stderr
    assert mesh_line in split.stdout
    one = train(tmp_path / "one", *flags)
    assert one.returncode == 0, one.stdout + one.stderr
    import jaxreviews

    return tuple(jaxreviews.load_run(tmp_path / name).params for name in ("split", "one"))


def assert_params_close(split_params, one_params, rows_axis: int = 0) -> None:
    """Two runs' parameters alike, the split run's tables cut to the unsplit row counts (rows
    added so that a table splits evenly are never used). Sums in another order (gradients of split
    tables, several devices' partial sums) make float differences that 30 Adam steps at lr 1e-2
    carry on: at most 5e-5 measured."""
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(one_params)[0], jax.tree.leaves(split_params)):
        b = np.asarray(b)
        if b.ndim > rows_axis:
            b = b[(slice(None),) * rows_axis + (slice(0, np.shape(a)[rows_axis]),)]
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=2e-4, err_msg=jax.tree_util.keystr(path))
