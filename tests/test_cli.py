"""The commands as a user meets them: a user's error is one line on stderr (`error: ...`) with exit
code 2, never a traceback (unless --verbose), never a wrong or stale answer, never a half-written
file. Each case was a defect of the commands (issue 20)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.training import CACHE, REPO, results, run_here, tiny, train

CNN = f"--config={REPO}/experiments/configs/cnn.py:tiny"
MF = f"--config={REPO}/experiments/configs/mf.py:tiny"
NOBODY = 65534


def command(module: str, *args, user: int | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m experiments.<module> args` (as `user` when given: root ignores file permissions)."""
    environment = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": CACHE, **(env or {})}
    prefix = [] if user is None else ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    return subprocess.run([*prefix, sys.executable, "-m", f"experiments.{module}", *map(str, args)], cwd=REPO,
                          env=environment, capture_output=True, text=True, timeout=900)


def one_line_error(done: subprocess.CompletedProcess, *expected: str) -> str:
    """Exit code 2, stderr ending in one `error:` line holding every expected piece, no traceback."""
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout, done.stderr[-3000:]
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), done.stderr[-2000:]
    assert sum(line.startswith("error: ") for line in lines) == 1, done.stderr
    for piece in expected:
        assert piece in lines[-1], lines[-1]
    return lines[-1]


def can_run_as_nobody() -> bool:
    return os.getuid() == 0 and shutil.which("setpriv") is not None


@pytest.mark.parametrize("flag, expected", [
    ("--config.optimizer.learning_rate=-0.1", "optimizer.learning_rate=-0.1: must be > 0"),
    ("--config.optimizer.learning_rate=0", "optimizer.learning_rate=0.0: must be > 0"),
    ("--config.train.epochs=0", "train.epochs=0: must be >= 1"),
    ("--config.train.batch_size=0", "train.batch_size=0: must be >= 1"),
    ("--config.num_seeds=0", "num_seeds=0: must be >= 1"),
    ("--config.model.name=transformer", "model.name='transformer': choose one of"),
    ("--config.optimizer.learning_rat=1", "--config.optimizer.learning_rat: no such option (did you mean "
                                          "--config.optimizer.learning_rate?)"),
    ("--config.model.factors=8", "--config.model.factors: not an option of model han_upa (it is one of mf)"),
    ("--config.train.epochs=many", "--config.train.epochs=many"),
    (f"--config={REPO}/experiments/configs/none.py", "no such config file"),
    (f"--config={REPO}/experiments/configs/cnn.py:tinyy", "unknown preset 'tinyy'; choose from tiny"),
])
def test_a_bad_option_is_one_line_before_any_work(tmp_path, flag, expected):
    done = command("train", flag, f"--workdir={tmp_path / 'run'}")
    one_line_error(done, expected)
    assert not os.path.exists(tmp_path / "run" / "metrics.jsonl")


def test_a_bad_data_line_a_missing_file_and_a_file_workdir_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"reviewerID": "u1", "asin": "p1", "overall": 5, "reviewText": "good"}\n'
                   '{"reviewerID": "u2", "asin": "p1", "overall": "x", "reviewText": "bad"}\n')
    done = command("train", CNN, f"--workdir={tmp_path / 'a'}", f"--config.data.path={bad}")
    one_line_error(done, f"{bad}:2: field 'overall' 'x' is not a number")
    assert "cannot schedule new futures" not in done.stderr  # orbax's shutdown noise after the error
    one_line_error(command("train", CNN, f"--workdir={tmp_path / 'b'}", f"--config.data.path={tmp_path}/none.json"),
                   f"{tmp_path}/none.json: no such file")
    afile = tmp_path / "afile"
    afile.write_text("")
    one_line_error(command("train", CNN, f"--workdir={afile}"), f"--workdir={afile} is a file, not a directory")
    # the traceback, for a bug report, on request
    verbose = command("train", CNN, f"--workdir={afile}", "--verbose")
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr


def test_a_rating_outside_the_format_is_an_error_in_training_and_in_inspect_data(tmp_path):
    """Amazon stars are 1..5 by definition: a 7 is line 2's error, not a sixth and seventh class."""
    from jaxreviews import options
    from jaxreviews.data import pipeline, readers, synthetic

    reviews = synthetic.generate(synthetic.default_spec("tiny")).reviews
    path = tmp_path / "reviews.json"
    readers.write_amazon(path, reviews)
    with open(path) as f:
        lines = f.readlines()
    lines[1] = lines[1].replace('"overall": ' + json.loads(lines[1])["overall"].__repr__(), '"overall": 7.0')
    path.write_text("".join(lines))
    config = options.default_config("cnn", "tiny").data
    config.name, config.path = "files", str(path)
    with pytest.raises(readers.ReadError, match=r"reviews.json:2: field 'overall' 7 outside the rating range 1..5"):
        pipeline.load_splits(config)
    inspected = subprocess.run([sys.executable, os.path.join(REPO, "tools", "inspect_data.py"), str(path)],
                               capture_output=True, text=True, timeout=900)
    assert inspected.returncode != 0 and "reviews.json:2" in inspected.stdout + inspected.stderr
    # An Amazon file without one-star reviews still has the five classes of the stars
    five = tmp_path / "five.json"
    readers.write_amazon(five, [r for r in reviews if r.rating > 1])
    config.path = str(five)
    splits = pipeline.load_splits(config)
    assert splits.rating_range == (1.0, 5.0) and splits.num_classes == 5
    assert "amazon format" in pipeline.describe_source(splits)
    # The literature format: ratings within 1..10, the scale read from the file (and said)
    tang = tmp_path / "reviews.txt"
    readers.write_tang(tang, reviews)
    config.path, config.format = str(tang), "tang"
    assert pipeline.load_splits(config).rating_range == (1.0, 5.0)
    tang.write_text(tang.read_text().replace("\t\t5\t\t", "\t\t12\t\t", 1))
    with pytest.raises(readers.ReadError, match=r"rating 12 outside the rating range 1..10 of the tang format"):
        pipeline.load_splits(config)


def test_a_finished_run_refuses_another_config_and_a_second_run_is_refused_at_once(tmp_path):
    run_here(tmp_path, tiny("cnn", **{"train.epochs": 1, "train.tensorboard": True}))
    one_line_error(command("train", CNN, f"--workdir={tmp_path}", "--config.train.epochs=1",
                           "--config.model.embed_dim=32"),
                   f"{tmp_path} holds a finished run of another config (model.embed_dim: 16 -> 32)")
    from jaxreviews.train import RunDirectory
    with RunDirectory(tmp_path).locked():
        one_line_error(command("train", CNN, f"--workdir={tmp_path}", "--config.train.epochs=1"),
                       f"{tmp_path} is in use by process {os.getpid()} on ")


def test_deleting_results_and_running_again_keeps_the_timings_and_one_test_record(tmp_path):
    first = run_here(tmp_path, tiny("mf", **{"train.epochs": 1}))
    os.remove(tmp_path / "results.json")
    again = run_here(tmp_path, tiny("mf", **{"train.epochs": 1}))
    assert again.param_checksum == first.param_checksum
    assert again.train_seconds == pytest.approx(first.train_seconds, abs=0.02) and again.train_seconds > 0
    assert again.docs_per_s > 0 and again.accounting["docs_per_s_per_device"] > 0
    records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert sum(r["kind"] == "test" for r in records) == 1


def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, caplog):
    import logging

    reference = run_here(tmp_path / "reference", tiny("mf", **{"train.epochs": 2}))
    run_here(tmp_path / "damaged", tiny("mf", **{"train.epochs": 2}))
    os.remove(tmp_path / "damaged" / "results.json")
    latest = tmp_path / "damaged" / "checkpoints" / "latest"
    newest = max(int(n) for n in os.listdir(latest) if n.isdigit())
    for root, _, files in os.walk(latest / str(newest) / "state"):  # a copy cut short
        for name in files:
            if "ocdbt" in root and os.sep + "d" in root:
                with open(os.path.join(root, name), "r+b") as f:
                    f.truncate(10)
    with caplog.at_level(logging.WARNING, logger="jaxreviews"):
        resumed = run_here(tmp_path / "damaged", tiny("mf", **{"train.epochs": 2}))
    assert f"the checkpoint of step {newest} cannot be read" in caplog.text
    assert resumed.param_checksum == reference.param_checksum
    kept = os.listdir(tmp_path / "damaged" / "checkpoints" / "unreadable")  # never deleted
    assert len(kept) == 1 and kept[0].startswith(f"latest-{newest}-")


def test_lenient_skips_are_in_the_training_log(tmp_path, caplog):
    import logging

    from jaxreviews.data import readers, synthetic
    path = tmp_path / "reviews.json"
    readers.write_amazon(path, synthetic.generate(synthetic.default_spec("tiny")).reviews)
    with open(path, "a") as f:
        f.write("not json\n")
    with caplog.at_level(logging.INFO, logger="jaxreviews"):
        run_here(tmp_path / "run", tiny("mf", **{"train.epochs": 1, "data.name": "files", "data.path": str(path),
                                                 "data.lenient": True}))
    assert "data.path: 601 lines: 600 reviews, 1 skipped (bad json: 1)" in caplog.text
    assert f"{path}:601: invalid JSON" in caplog.text


@pytest.fixture(scope="module")
def finished_mf(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mf")
    run_here(workdir, tiny("mf", **{"train.epochs": 1}))
    from jaxreviews.data import readers, synthetic
    reviews = workdir / "reviews.json"
    readers.write_amazon(reviews, synthetic.generate(synthetic.default_spec("tiny")).reviews[:50])
    return workdir, reviews


def test_evaluate_and_predict_errors_name_the_file_and_leave_no_half_output(finished_mf, tmp_path):
    workdir, reviews = finished_mf
    empty = tmp_path / "empty.json"
    empty.write_text("")
    one_line_error(command("evaluate", f"--workdir={workdir}", f"--input={empty}", f"--output={tmp_path / 'e.json'}"),
                   f"{empty}: cannot detect the format of an empty file")
    one_line_error(command("evaluate", f"--workdir={workdir}", f"--input={empty}", "--format=amazon",
                           f"--output={tmp_path / 'e.json'}"), f"{empty}: no reviews to evaluate")
    assert not os.path.exists(tmp_path / "e.json")
    bad = tmp_path / "bad.json"
    bad.write_text(reviews.read_text() + "not json\n")
    output = tmp_path / "predictions.jsonl"
    one_line_error(command("predict", f"--workdir={workdir}", f"--input={bad}", f"--output={output}"),
                   f"{bad}:51: invalid JSON")
    assert not os.path.exists(output) and not os.path.exists(f"{output}.partial")
    one_line_error(command("predict", f"--workdir={tmp_path / 'none'}", f"--input={reviews}"),
                   "is not a run directory")
    one_line_error(command("report", f"--workdir={tmp_path / 'none'}"), "no such directory")


def test_predict_from_an_unfinished_run_says_so(finished_mf, tmp_path):
    workdir, reviews = finished_mf
    unfinished = tmp_path / "unfinished"
    shutil.copytree(workdir, unfinished)
    os.remove(unfinished / "results.json")
    done = command("predict", f"--workdir={unfinished}", f"--input={reviews}", f"--output={tmp_path / 'p.jsonl'}")
    assert done.returncode == 0, done.stderr
    assert "has not finished (no results.json): using its best parameters so far" in done.stdout + done.stderr


@pytest.mark.skipif(not can_run_as_nobody(), reason="needs root to run a command as an unprivileged user")
def test_a_read_only_run_directory_is_one_line_before_any_work(finished_mf):
    import pathlib
    import tempfile

    workdir, reviews = finished_mf
    folder = pathlib.Path(tempfile.mkdtemp(prefix="jaxreviews-readonly-"))  # a folder `nobody` can reach
    try:
        readonly = folder / "readonly"
        shutil.copytree(workdir, readonly)
        shutil.copy(reviews, folder / "reviews.json")
        os.chmod(folder, 0o755)
        for root, dirs, files in os.walk(readonly):
            for name in dirs + files:
                os.chmod(os.path.join(root, name), 0o555 if name in dirs else 0o444)
        os.chmod(readonly, 0o555)
        done = command("evaluate", f"--workdir={readonly}", f"--input={folder / 'reviews.json'}", user=NOBODY,
                       env={"JAX_COMPILATION_CACHE_DIR": ""})
        one_line_error(done, f"permission denied: {readonly}/evaluation-reviews.json.partial")
        assert "accuracy" not in done.stdout  # refused before the evaluation, not after printing it
        done = command("train", MF, f"--workdir={readonly}/new", "--config.compilation.cache_dir=", user=NOBODY)
        one_line_error(done, "permission denied")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_full_disk_names_what_it_was_writing_and_the_last_checkpoint(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root): the full-disk check did not run")
    try:
        done = command("train", MF, f"--workdir={small}/run", "--config.train.epochs=2")
        line = one_line_error(done, "no space left on device writing", "the last complete checkpoint is step")
        assert f"{small}/run" in line
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
