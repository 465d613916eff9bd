"""Checkpoints saved in the background (`train.async_checkpoints`, auto on accelerators): safe with the train
step's donated buffers, the same files and results as saves that block, and a write that fails is
reported as one line at the next save or at the end, never lost."""
import errno
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxreviews.train import checkpoints, loop
from tests.training import run_here, tiny


def test_a_background_save_holds_the_values_of_buffers_donated_right_after(tmp_path):
    """The save returns once the arrays are on the host: a step that donates them and writes its
    result into the same memory cannot change what is written."""
    ckpt = checkpoints.RunCheckpoints(str(tmp_path), background=True)
    state = {"w": jnp.arange(4096, dtype=jnp.float32), "b": jnp.ones((64, 64))}
    saved = jax.tree.map(np.asarray, state)
    ckpt.save_latest(10, state, {"step": 10})
    overwrite = jax.jit(lambda tree: jax.tree.map(lambda x: x * 0 - 7, tree), donate_argnums=0)
    state = overwrite(state)
    jax.block_until_ready(state)
    restored, meta = ckpt.restore_latest(state)
    assert meta == {"step": 10}
    for name in saved:
        np.testing.assert_array_equal(np.asarray(restored[name]), saved[name])
    assert float(state["w"][0]) == -7.0
    ckpt.close()


def test_background_saves_give_the_run_that_blocking_saves_give(tmp_path):
    """Same parameters, same results, the same latest and best checkpoints on disk."""
    runs = {}
    for background in (False, True):
        workdir = tmp_path / f"background-{background}"
        config = tiny("han_upa", **{"train.epochs": 2, "train.checkpoint_every_steps": 3,
                                    "train.async_checkpoints": "background" if background else "blocking"})
        runs[background] = (run_here(workdir, config), workdir)
    (blocking, blocking_dir), (background, background_dir) = runs[False], runs[True]
    assert background.param_checksum == blocking.param_checksum
    assert background.test == blocking.test
    for kind in ("latest", "best"):
        steps = sorted(os.listdir(blocking_dir / "checkpoints" / kind))
        assert sorted(os.listdir(background_dir / "checkpoints" / kind)) == steps
    saved = {}
    for workdir in (blocking_dir, background_dir):
        ckpt = checkpoints.RunCheckpoints(str(workdir))
        state, _ = ckpt.restore_latest(None)
        saved[workdir] = loop.param_checksum(state.params if hasattr(state, "params") else state["params"])
        ckpt.close()
    assert saved[background_dir] == saved[blocking_dir]


def _failing_renames(monkeypatch, under: pathlib.Path):
    """Orbax's last step of a save (its temporary directory renamed to the checkpoint's, on its
    background thread) fails under `under` as on a full disk."""
    from orbax.checkpoint._src.path import async_path

    original = async_path.rename

    async def rename(source, target):
        if str(source).startswith(str(under)):
            raise OSError(errno.ENOSPC, "No space left on device", str(source))
        return await original(source, target)

    monkeypatch.setattr(async_path, "rename", rename)


def test_a_background_write_that_fails_is_raised_at_the_next_save_as_a_full_disk(tmp_path, monkeypatch):
    ckpt = checkpoints.RunCheckpoints(str(tmp_path), background=True)
    state = {"w": jnp.ones(8)}
    ckpt.save_latest(1, state, {"step": 1})
    ckpt.wait()
    _failing_renames(monkeypatch, tmp_path / "checkpoints")
    ckpt.save_latest(2, state, {"step": 2})  # returns: the write fails on orbax's thread
    with pytest.raises(OSError) as raised:
        ckpt.save_latest(3, state, {"step": 3})
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(tmp_path / "checkpoints" / "latest")
    monkeypatch.undo()
    assert checkpoints.latest_steps(str(tmp_path)) == [1]  # the last complete checkpoint stays
    restored, meta = ckpt.restore_latest(state)
    assert meta == {"step": 1}
    ckpt.close()


def test_a_background_write_that_fails_last_is_raised_by_close(tmp_path, monkeypatch):
    ckpt = checkpoints.RunCheckpoints(str(tmp_path), background=True)
    _failing_renames(monkeypatch, tmp_path / "checkpoints")
    ckpt.save_best(5, {"w": jnp.ones(8)}, {"step": 5})
    with pytest.raises(OSError) as raised:
        ckpt.close()
    assert raised.value.errno == errno.ENOSPC and "best" in raised.value.filename
