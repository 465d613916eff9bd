"""Prepared directories and streamed batches (`jaxreviews.data.prepared`, `streaming`).

The promises: a prepared directory holds exactly the splits, vocabulary, id maps and rating scale
load_splits makes of the same options; streamed batches (Grain, any number of workers) equal the
in-memory ones; P processes read disjoint records that together are the split; a run from a
prepared directory ends with the in-memory run's parameters, after a SIGKILL and restart too; bad
directories and options are one-line errors.
"""
import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from jaxreviews import options
from jaxreviews.data import packing, pipeline, prepared, readers, streaming, synthetic
from jaxreviews.data.batching import Batcher
from jaxreviews.data.packing import PackedBatcher
from tests.training import REPO, results, run_here, tiny, train, wait_for_checkpoint

FIELDS = ("token_ids", "token_offsets", "sentence_offsets", "users", "products", "ratings")


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    """The tiny synthetic corpus as a literature-format file, with a few exact copies (duplicate groups)."""
    reviews = synthetic.generate(synthetic.default_spec("tiny")).reviews
    path = tmp_path_factory.mktemp("corpus") / "reviews.txt"
    readers.write_tang(path, list(reviews) + list(reviews[:25]))
    return str(path)


def data_config(**overrides):
    config = options.default_config("han_upa", "tiny").data
    config.name = "files"
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture(scope="module")
def prepared_dir(corpus_file, tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("prepared") / "dir")
    prepared.prepare(data_config(path=corpus_file), directory, shards=3)
    return directory


def assert_same_splits(memory, streamed):
    assert memory.vocab == streamed.vocab and memory.users == streamed.users and memory.products == streamed.products
    assert memory.rating_range == streamed.rating_range and memory.rating_step == streamed.rating_step
    for name in prepared.SPLITS:
        a, b = getattr(memory, name), getattr(streamed, name)
        assert prepared.is_streamed(b) and len(a) == len(b)
        read = b.materialize()
        for field in FIELDS:
            np.testing.assert_array_equal(getattr(a.arrays, field), getattr(read.arrays, field), err_msg=name + field)
        assert a.unseen_counts() == b.unseen_counts()


@pytest.mark.parametrize("case", ["one file", "separate files", "copies dropped, folds", "wrapped sentences"])
def test_a_prepared_directory_holds_the_splits_load_splits_makes(case, corpus_file, tmp_path):
    if case == "separate files":
        lines = open(corpus_file).read().splitlines(keepends=True)
        (tmp_path / "train.txt").write_text("".join(lines[:500]))
        (tmp_path / "test.txt").write_text("".join(lines[500:]))
        config = data_config(train=str(tmp_path / "train.txt"), test=str(tmp_path / "test.txt"))
    elif case == "copies dropped, folds":
        config = data_config(path=corpus_file, drop_duplicates=True, folds=4, fold=1, split_seed=3)
    else:
        config = data_config(path=corpus_file)
    directory = str(tmp_path / "prepared")
    stats = prepared.prepare(config, directory, shards=2)
    if case == "wrapped sentences":  # applied when loaded: one directory serves both
        config.wrap_sentences = 5
    assert_same_splits(pipeline.load_splits(config), prepared.load(directory, wrap_sentences=config.wrap_sentences))
    memory = pipeline.load_splits(config)
    for name in prepared.SPLITS:
        split = stats["splits"][name]
        assert split["reviews"] == len(getattr(memory, name))
        assert sum(split["tokens_per_review"].values()) == split["reviews"]
        assert split["tokens"] == int(getattr(memory, name).arrays.num_tokens.sum())
    if case == "copies dropped, folds":
        assert stats["duplicates_dropped"] == 25


def test_several_input_files_are_read_as_one_corpus(corpus_file, tmp_path):
    lines = open(corpus_file).read().splitlines(keepends=True)
    (tmp_path / "a.txt").write_text("".join(lines[:300]))
    (tmp_path / "b.txt").write_text("".join(lines[300:]))
    whole = pipeline.load_splits(data_config(path=corpus_file))
    parts = pipeline.load_splits(data_config(path=f"{tmp_path / 'a.txt'},{tmp_path / 'b.txt'}"))
    for name in prepared.SPLITS:
        np.testing.assert_array_equal(getattr(whole, name).arrays.token_ids, getattr(parts, name).arrays.token_ids)
    assert whole.vocab == parts.vocab


def same_batches(a, b) -> int:
    count = 0
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)
        count += 1
    return count


@pytest.mark.parametrize("layout", ["hierarchical", "flat", "padded"])
@pytest.mark.parametrize("process", [(0, 1), (1, 2)])
def test_streamed_batches_equal_the_in_memory_ones(layout, process, corpus_file, prepared_dir):
    memory, streamed = pipeline.load_splits(data_config(path=corpus_file)), prepared.load(prepared_dir)
    index, count = process
    common = dict(batch_size=16, seed=5, process_index=index, process_count=count)
    if layout == "padded":
        make = lambda data: Batcher(data, layout="hierarchical", **common)  # noqa: E731
    else:
        make = lambda data: PackedBatcher(data, layout=layout, **common)  # noqa: E731
    here, there = make(memory.train), streaming.StreamedBatches(make(streamed.train), workers=0)
    assert there.buckets == here.buckets and there.steps_per_epoch == here.steps_per_epoch
    assert same_batches(here.epoch(0), there.epoch(0)) == here.steps_per_epoch
    assert same_batches(here.epoch(1), there.epoch(1))  # the stream goes on into the next epoch
    assert same_batches(here.epoch(3, 7), there.epoch(3, 7))  # a resume starts where it is asked
    kind = Batcher if layout == "padded" else PackedBatcher
    options_ = dict(buckets=here.buckets) if layout == "padded" else dict(shape=here.shape, layout=layout)
    evaluate = {k: v for k, v in common.items() if k != "seed"}
    if layout == "padded":
        evaluate["layout"] = "hierarchical"
    here_eval = kind(memory.test, **options_, **evaluate)
    there_eval = streaming.StreamedBatches(kind(streamed.test, **options_, **evaluate), workers=0)
    assert same_batches(here_eval.evaluation(), there_eval.evaluation())


def test_grain_workers_build_the_same_batches(corpus_file, prepared_dir):
    memory, streamed = pipeline.load_splits(data_config(path=corpus_file)), prepared.load(prepared_dir)
    here = PackedBatcher(memory.train, layout="hierarchical", batch_size=8, seed=1)
    there = streaming.StreamedBatches(PackedBatcher(streamed.train, layout="hierarchical", batch_size=8, seed=1),
                                      workers=2, group=4)
    try:
        assert same_batches(here.epoch(0), there.epoch(0)) == here.steps_per_epoch
        assert same_batches(here.epoch(1, 5), there.epoch(1, 5))
    finally:
        there.close()


def test_processes_read_disjoint_records_that_together_are_the_split(prepared_dir, monkeypatch):
    streamed = prepared.load(prepared_dir)
    read: list[list[int]] = []
    original = prepared._Records.read

    def counted(self, indices):
        read[-1].extend(np.asarray(indices).tolist())
        return original(self, indices)

    monkeypatch.setattr(prepared._Records, "read", counted)
    for layout in ("flat", "hierarchical"):
        per_process = []
        for index in range(2):
            read.append([])
            batcher = PackedBatcher(streamed.train, layout=layout, batch_size=16, seed=2, process_index=index,
                                    process_count=2)
            for _ in streaming.StreamedBatches(batcher, workers=0, buffer=0).epoch(1):  # no read-ahead
                pass
            per_process.append(read[-1])
        first, second = map(set, per_process)
        assert not first & second
        assert sorted(per_process[0] + per_process[1]) == list(range(len(streamed.train)))


_TWO_PROCESS_READER = """
import json, sys
import jax
jax.distributed.initialize(sys.argv[1], num_processes=2, process_id=int(sys.argv[2]))
import numpy as np
from jaxreviews.data import prepared, streaming
from jaxreviews.data.packing import PackedBatcher
read = []
original = prepared._Records.read
prepared._Records.read = lambda self, indices: read.extend(np.asarray(indices).tolist()) or original(self, indices)
splits = prepared.load(sys.argv[3])
batcher = PackedBatcher(splits.train, layout="hierarchical", batch_size=16, seed=4,
                        process_index=jax.process_index(), process_count=jax.process_count())
steps = sum(1 for _ in streaming.StreamedBatches(batcher, workers=0, buffer=0).epoch(0))
print(json.dumps({"process": jax.process_index(), "read": read, "steps": steps}))
jax.distributed.shutdown()
"""


def test_two_jax_processes_each_read_their_half(prepared_dir, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "reader.py"
    script.write_text(_TWO_PROCESS_READER)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    processes = [subprocess.Popen([sys.executable, str(script), f"127.0.0.1:{port}", str(i), prepared_dir], cwd=REPO,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    for p, (out, err) in zip(processes, outputs):
        assert p.returncode == 0, err
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert [r["process"] for r in reports] == [0, 1] and reports[0]["steps"] == reports[1]["steps"]
    first, second = reports[0]["read"], reports[1]["read"]
    assert not set(first) & set(second)
    assert sorted(first + second) == list(range(len(prepared.load(prepared_dir).train)))


@pytest.mark.parametrize("layout", ["hierarchical", "flat"])
def test_planning_windows_cover_every_review_once_and_start_at_once(layout, corpus_file):
    memory = pipeline.load_splits(data_config(path=corpus_file))
    whole = PackedBatcher(memory.train, layout=layout, batch_size=8, seed=3)
    windowed = PackedBatcher(memory.train, layout=layout, batch_size=8, seed=3, plan_window=64)
    assert windowed.num_windows == -(-windowed.steps_per_epoch // 8) > 1 and whole.num_windows == 1
    big = PackedBatcher(memory.train, layout=layout, batch_size=8, seed=3, plan_window=10 ** 6)
    assert same_batches(whole.epoch(2), big.epoch(2))  # one window: the whole-epoch plan
    for epoch in (0, 1):
        parts = windowed.epoch_parts(epoch)
        assert len(parts) == windowed.steps_per_epoch
        members = np.concatenate(parts)
        assert sorted(members.tolist()) == list(range(len(memory.train)))
        assert [len(p) for p in parts].count(8) == len(parts) - 1  # every batch full but one
        for step in (0, 9, len(parts) - 1):
            np.testing.assert_array_equal(windowed.step_parts(epoch, step)[0], parts[step])
    again = PackedBatcher(memory.train, layout=layout, batch_size=8, seed=3, plan_window=64)
    assert same_batches(windowed.epoch(1), again.epoch(1))  # a pure function of (seed, epoch)
    first_window = set(np.concatenate(windowed.epoch_parts(0)[:8]).tolist())
    assert first_window != set(np.concatenate(whole.epoch_parts(0)[:8]).tolist())


def test_a_run_from_a_prepared_directory_ends_as_the_in_memory_run(corpus_file, prepared_dir, tmp_path):
    memory = run_here(tmp_path / "memory", tiny("han_upa", **{"data.path": corpus_file, "train.epochs": 1}))
    streamed = run_here(tmp_path / "streamed", tiny("han_upa", **{
        "data.name": "prepared", "data.prepared_dir": prepared_dir, "train.epochs": 1, "data.workers": 0}))
    assert streamed.param_checksum == memory.param_checksum
    assert streamed.test == memory.test
    assert streamed.data["source"] == "prepared" and streamed.data["prepared_from"] == "files"
    fitted = [{k: v for k, v in run.baselines["text_logreg"].items() if k != "seconds"} for run in (streamed, memory)]
    assert fitted[0] == fitted[1] and "accuracy" in fitted[0]  # a small streamed corpus: fitted in memory


@pytest.mark.slow  # two runs in subprocesses with Grain workers (~1.5 min on 2 cores)
def test_a_streamed_run_killed_and_restarted_ends_as_the_uninterrupted_run(corpus_file, prepared_dir, tmp_path):
    flags = ["--config.train.epochs=1", "--config.data.name=prepared", f"--config.data.prepared_dir={prepared_dir}",
             "--config.data.workers=1"]
    uninterrupted = run_here(tmp_path / "memory", tiny("han_upa", **{"data.path": corpus_file, "train.epochs": 1}))
    process = train(tmp_path / "run", *flags, wait=False)
    wait_for_checkpoint(tmp_path / "run", process, minimum_step=10)
    process.kill()
    process.communicate(timeout=900)
    assert process.returncode == -signal.SIGKILL and not os.path.exists(tmp_path / "run" / "results.json")
    restarted = train(tmp_path / "run", *flags)
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "resumed from step" in restarted.stdout + restarted.stderr
    assert results(tmp_path / "run")["param_checksum"] == uninterrupted.param_checksum


def test_streaming_a_file_prepares_it_once_into_the_cache(corpus_file, tmp_path):
    copy = tmp_path / "reviews.txt"
    copy.write_text(open(corpus_file).read())
    config = data_config(path=str(copy), streaming=True, cache_dir=str(tmp_path / "cache"))
    first = pipeline.load_splits(config)
    assert first.report["source"] == "prepared"
    assert_same_splits(pipeline.load_splits(data_config(path=str(copy))), first)
    (directory,) = os.listdir(tmp_path / "cache")
    stamp = os.stat(tmp_path / "cache" / directory / "prepared.json").st_mtime_ns
    assert pipeline.load_splits(config).report["prepared_dir"] == first.report["prepared_dir"]
    assert os.stat(tmp_path / "cache" / directory / "prepared.json").st_mtime_ns == stamp  # read, not prepared again
    with open(copy, "a") as f:  # a changed file is another directory, never a stale one
        f.write("new-user\t\tnew-product\t\t4\t\ta new review\n")
    assert pipeline.load_splits(config).report["prepared_dir"] != first.report["prepared_dir"]
    assert len(os.listdir(tmp_path / "cache")) == 2
    # Above data.stream_above lines a file streams without being asked; at or below, it is read in memory.
    above = data_config(path=str(copy), stream_above=100, cache_dir=str(tmp_path / "cache"))
    assert pipeline.load_splits(above).report["source"] == "prepared"
    assert pipeline.load_splits(data_config(path=str(copy), stream_above=10 ** 6)).report["source"] == "files"


def test_bad_directories_and_options_are_one_line_errors(prepared_dir, corpus_file, tmp_path):
    with pytest.raises(ValueError, match="needs data.prepared_dir"):
        pipeline.load_splits(data_config(name="prepared"))
    with pytest.raises(ValueError, match="no such directory"):
        pipeline.load_splits(data_config(name="prepared", prepared_dir=str(tmp_path / "missing")))
    with pytest.raises(ValueError, match="not a prepared directory"):
        prepared.load(str(tmp_path))
    with pytest.raises(ValueError, match="is read with data.name=prepared"):
        pipeline.load_splits(data_config(path=corpus_file, prepared_dir=prepared_dir))
    with pytest.raises(ValueError, match="exists: prepare into a new directory"):
        prepared.prepare(data_config(path=corpus_file), prepared_dir)
    with pytest.raises(ValueError, match="streams files"):
        pipeline.load_splits(data_config(name="synthetic", streaming=True))
    damaged = tmp_path / "damaged"
    prepared.prepare(data_config(path=corpus_file), str(damaged), shards=2)
    os.remove(damaged / "test" / "tokens-00001-of-00002.array_record")
    with pytest.raises(ValueError, match="missing: the directory is damaged"):
        prepared.load(str(damaged))
    streamed = prepared.load(prepared_dir)
    with pytest.raises(TypeError, match="not in memory"):
        streamed.train.arrays.take([0, 1])  # code that would see an empty corpus fails loudly instead
    bad = tmp_path / "bad.txt"
    bad.write_text(open(corpus_file).readline() + "u\t\tp\t\tnot a number\t\ttext\n")
    with pytest.raises(readers.ReadError, match=r"bad.txt:2"):
        prepared.prepare(data_config(path=str(bad)), str(tmp_path / "never"))
    assert not os.path.exists(tmp_path / "never") and not [p for p in os.listdir(tmp_path) if ".partial" in p]


def test_the_prepare_command(corpus_file, tmp_path, capsys):
    sys.path.insert(0, os.path.join(REPO, "tools"))
    import prepare_data

    assert prepare_data.main(["--input", corpus_file, "--output", str(tmp_path / "out"), "--shards", "2",
                              "--drop_duplicates", "--split_seed", "4"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["duplicates_dropped"] == 25 and summary["peak_rss_mb"] > 0
    described = json.load(open(tmp_path / "out" / "prepared.json"))
    assert described["options"]["split_seed"] == 4 and described["options"]["drop_duplicates"] is True
    assert_same_splits(pipeline.load_splits(data_config(path=corpus_file, drop_duplicates=True, split_seed=4)),
                       prepared.load(str(tmp_path / "out")))
    for argv, message in ((["--input", str(tmp_path / "nosuch.txt"), "--output", str(tmp_path / "x")],
                           "nosuch.txt: no such file or directory"),
                          (["--input", corpus_file, "--output", str(tmp_path / "out")], "exists"),
                          (["--input", corpus_file, "--train", corpus_file, "--output", str(tmp_path / "y")],
                           "give one or the other"),
                          (["--input", corpus_file, "--output", str(tmp_path / "z"), "--split_fractions", "0.5,0.2"],
                           "split_fractions")):
        assert prepare_data.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
