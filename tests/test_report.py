"""The report of real (tiny) runs: its numbers against results.json, the command, and the page as a
person sees it in a real headless browser (Debian's chromium; .ci/run installs it)."""
import dataclasses
import html
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from jaxreviews.data import readers, synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Test runs share compiled programs through JAX's persistent cache: same results, less time.
CACHE = os.path.join(os.environ.get("PYTEST_CACHE_ROOT", "/tmp"), f"jaxreviews-test-jit-cache-{os.getuid()}")


def results(workdir) -> dict:
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


def train(workdir, files, config: str) -> str:
    """A tiny run of `config` on the files, as a user starts one (2 epochs)."""
    command = [sys.executable, "-m", "experiments.train", f"--config={REPO}/experiments/configs/{config}.py:tiny",
               f"--workdir={workdir}", "--config.data.name=files", f"--config.data.train={files / 'train.txt'}",
               f"--config.data.test={files / 'test.txt'}", "--config.data.format=tang", "--config.train.epochs=2"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": CACHE,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return str(workdir)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Training and test files of the tiny synthetic corpus; a fifth of the test reviews are by
    users the training file never has (the cold-start bucket "0")."""
    folder = tmp_path_factory.mktemp("files")
    reviews = synthetic.generate(synthetic.default_spec("tiny")).reviews
    train_reviews, test_reviews = reviews[:480], reviews[480:]
    test_reviews = [dataclasses.replace(r, user=f"new-{i}") if i % 5 == 0 else r for i, r in enumerate(test_reviews)]
    readers.write_tang(folder / "train.txt", train_reviews)
    readers.write_tang(folder / "test.txt", test_reviews)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, files):
    """A tiny han_upa run (attention) and a tiny mf run (none) on the same files."""
    folder = tmp_path_factory.mktemp("runs")
    return {"han_upa": train(folder / "han_upa", files, "han_upa"), "mf": train(folder / "mf", files, "mf")}


@pytest.fixture(scope="module")
def report(runs):
    """The comparison report of both runs, built in this process: (path, analyses)."""
    from experiments.report import build_report
    path, analyses, _ = build_report([str(runs["han_upa"]), str(runs["mf"])], compilation_cache_dir=CACHE)
    return path, analyses


def test_confusion_matrix_and_errors_match_results_json(report, runs):
    _, analyses = report
    for analysis, workdir in zip(analyses, (runs["han_upa"], runs["mf"])):
        expected = results(workdir)["test"]
        confusion = np.asarray(analysis["confusion"])
        assert confusion.sum() == expected["reviews"] == analysis["test_reviews"]
        assert np.trace(confusion) / confusion.sum() == pytest.approx(expected["accuracy"], abs=1e-9)
        assert analysis["per_class"]["macro_f1"] == pytest.approx(expected["macro_f1"], abs=1e-9)
        assert np.sum(confusion, axis=1).tolist() == analysis["per_class"]["support"]
        # the cold-start buckets hold every test review once, and their errors add up to the run's RMSE
        for entity in ("user", "product"):
            buckets = [b for b in analysis["cold_start"][entity] if b["reviews"]]
            assert sum(b["reviews"] for b in buckets) == expected["reviews"]
            squared = sum(b["reviews"] * b["rmse"] ** 2 for b in buckets)
            assert np.sqrt(squared / expected["reviews"]) == pytest.approx(expected["rmse"], rel=1e-4)
        # unseen users are the "0" bucket
        assert analysis["cold_start"]["user"][0]["reviews"] == results(workdir)["data"]["test"]["unseen_user"] > 0


def test_report_sections_for_a_model_with_and_without_attention(report, runs):
    path, analyses = report
    assert path == os.path.join(runs["han_upa"], "report.html")
    page = open(path, encoding="utf-8").read()
    for section in ("run", "curves", "metrics", "confusion", "calibration", "cold-start", "length", "attention"):
        assert f'<section id="{section}">' in page
    assert "model.name" in page  # compared runs: the config keys that differ
    assert "mf has no attention weights" in page
    han_upa, mf = analyses
    assert han_upa["has_attention"] and not mf["has_attention"]
    # mf's regression head has no class probabilities: no reliability curve, no confident samples
    assert mf["calibration"]["reliability"] is None and set(mf["samples"]) == {"largest_errors"}
    assert "A regression head gives no class probabilities" in page
    assert 0 <= han_upa["calibration"]["reliability"]["ece"] <= 1
    for sample in han_upa["attention"]:
        assert len(sample["tokens"]) == len(sample["word_attention"]) == len(sample["sentence_attention"])
        assert sum(sample["sentence_attention"]) == pytest.approx(1.0, abs=1e-3)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    json.dumps(analyses, allow_nan=False)  # plain numbers all the way down


def test_the_report_command_writes_where_asked_and_prints_the_path(runs, tmp_path):
    output = tmp_path / "mf-report.html"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-m", "experiments.report", f"--workdir={runs['mf']}", f"--output={output}",
                           f"--compilation_cache_dir={CACHE}"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(output)
    page = output.read_text(encoding="utf-8")
    assert "mf has no attention weights" in page and "report built in" in done.stderr
    missing = subprocess.run([sys.executable, "-m", "experiments.report", f"--workdir={tmp_path / 'nothing'}"],
                             cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert missing.returncode != 0 and "no such directory" in missing.stderr


# -- in a real browser ------------------------------------------------------------------------------

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    if os.environ.get("JAXREVIEWS_CHROMIUM"):
        return os.environ["JAXREVIEWS_CHROMIUM"]
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


# Injected first into a copy of the page: records every error the page raises or logs and every
# resource that fails, then after `load` writes what it found into the DOM, which --dump-dom prints.
PROBE = """<script>
(() => {
  const errors = [];
  window.addEventListener("error", (e) => errors.push(e.message || ("failed to load " + (e.target.src || e.target.href))), true);
  window.addEventListener("unhandledrejection", (e) => errors.push("unhandled rejection: " + e.reason));
  for (const level of ["error", "warn"]) {
    const original = console[level];
    console[level] = (...args) => { errors.push(level + ": " + args.join(" ")); original.apply(console, args); };
  }
  window.addEventListener("load", () => {
    const images = [...document.images].map((img) => ({alt: img.alt, complete: img.complete, width: img.naturalWidth}));
    const highlighted = [...document.querySelectorAll("#attention span.w")].filter((span) => {
      const match = getComputedStyle(span).backgroundColor.match(/rgba?\\(([^)]+)\\)/);
      const parts = match ? match[1].split(",").map(Number) : [];
      return parts.length === 4 ? parts[3] > 0 : parts.length === 3;
    }).length;
    const external = [...document.querySelectorAll("[src], [href]")].map((el) => el.getAttribute("src") || el.getAttribute("href"))
      .filter((url) => !url.startsWith("data:") && !url.startsWith("#"));
    const probe = document.createElement("pre");
    probe.id = "report-probe";
    probe.textContent = JSON.stringify({errors, images, highlighted, external,
                                        sections: [...document.querySelectorAll("section")].map((s) => s.id),
                                        configFolded: [...document.querySelectorAll("details")].map((d) => !d.open
                                          && d.querySelector("table.config") !== null)});
    document.body.appendChild(probe);
  });
})();
</script>"""


def chromium(executable: str, *args: str, profile: str) -> subprocess.CompletedProcess:
    command = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_report_in_a_headless_browser(report, tmp_path):
    executable = find_chromium()
    if executable is None:
        pytest.skip("no chromium on PATH (apt-get install chromium; .ci/run installs it): the browser check "
                    "of the report did not run")
    path, _ = report
    page = open(path, encoding="utf-8").read()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    profile = tempfile.mkdtemp(dir=tmp_path)
    dumped = chromium(executable, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri(), profile=profile)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    match = re.search(r'<pre id="report-probe">(.*?)</pre>', dumped.stdout, re.S)
    assert match, f"the page did not finish loading: {dumped.stdout[-500:]} {dumped.stderr[-1000:]}"
    probe = json.loads(html.unescape(match.group(1)))
    assert probe["errors"] == []
    assert not [line for line in dumped.stderr.splitlines() if "CONSOLE" in line and "report-probe" not in line], \
        "the page logged to the console"
    assert probe["external"] == []  # self-contained: nothing to fetch
    assert len(probe["images"]) >= 6
    assert all(image["complete"] and image["width"] > 0 for image in probe["images"]), probe["images"]
    assert probe["highlighted"] > 0
    # the headline first (test metrics beside the baselines, then the curves); the config last, folded
    assert probe["sections"][:2] == ["metrics", "curves"] and probe["sections"][-1] == "run"
    assert probe["configFolded"] == []  # a comparison shows the keys that differ, open



    screenshot = tmp_path / "report.png"
    shot = chromium(executable, "--window-size=1280,2400", f"--screenshot={screenshot}", pathlib.Path(path).as_uri(),
                    profile=profile)
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 2400)
    from PIL import Image  # matplotlib's dependency: the screenshot shows a page, not a blank
    pixels = np.asarray(Image.open(screenshot).convert("L"))
    assert pixels.std() > 10


def test_one_runs_report_opens_with_its_metrics_and_folds_its_config(report):
    from jaxreviews.analysis import html as html_lib

    _, analyses = report
    page = html_lib.render(analyses[:1])
    sections = re.findall(r'<section id="([^"]+)">', page)
    assert sections[:2] == ["metrics", "curves"] and sections[-1] == "run"
    run_section = page.split('<section id="run">', 1)[1]
    assert "<details><summary>config.json" in run_section and 'class="config' in run_section.split("<details>")[1]
    assert page.index("baseline: majority") < page.index("<details>")
