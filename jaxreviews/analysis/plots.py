"""The report's figures: each function takes analyses (`analyze_run` dicts, one per run) and
returns a PNG as bytes. Matplotlib's object API with the Agg canvas: no pyplot, no global state,
no display needed. Runs keep one colour across every figure (`color(i)`).
"""
from __future__ import annotations

import io
import json

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxreviews.analysis import run_files

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
DPI = 100
TITLES = {"accuracy": "accuracy", "macro_f1": "macro-F1", "rmse": "RMSE", "mae": "MAE", "nll": "NLL (loss)",
          "loss": "loss"}


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def to_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _mark_best(ax, steps, values, best_step, c) -> None:
    if best_step is not None and best_step in steps:
        value = values[steps.index(best_step)]
        if value is not None:
            ax.plot([best_step], [value], marker="*", markersize=13, color=c, markeredgecolor="black", zorder=5)


def learning_curves(analyses: list[dict]) -> bytes:
    """Training loss (light: per step; dark: moving average) and every validation metric per
    evaluation; a star marks each run's best step."""
    metrics = [m for m in run_files.CURVE_METRICS if any(m in a["curves"]["validation"] for a in analyses)]
    panels = 1 + len(metrics)
    columns = min(3, panels)
    rows = -(-panels // columns)
    figure = _figure(4.0 * columns, 2.8 * rows)
    axes = np.atleast_1d(figure.subplots(rows, columns)).reshape(-1)
    ax = axes[0]
    for i, analysis in enumerate(analyses):
        train = analysis["curves"]["train"]
        if "loss" in train and train["step"]:
            steps, losses = np.asarray(train["step"]), np.asarray(train["loss"], np.float64)
            ax.plot(steps, losses, color=color(i), alpha=0.18, linewidth=0.6)
            window = max(1, len(steps) // 50)
            ax.plot(steps, run_files.smooth(losses, window), color=color(i), linewidth=1.6, label=analysis["name"])
        best = analysis["curves"]["best_step"]
        if best is not None:
            ax.axvline(best, color=color(i), linestyle=":", linewidth=1)
    ax.set_title("training loss (per step, smoothed)")
    ax.set_xlabel("step")
    if len(analyses) > 1:
        ax.legend(fontsize=8)
    for ax, metric in zip(axes[1:], metrics):
        for i, analysis in enumerate(analyses):
            validation = analysis["curves"]["validation"]
            if metric not in validation:
                continue
            steps, values = validation["step"], validation[metric]
            ax.plot(steps, [np.nan if v is None else v for v in values], marker="o", markersize=3,
                    color=color(i), label=analysis["name"])
            _mark_best(ax, steps, values, analysis["curves"]["best_step"], color(i))
        ax.set_title(f"validation {TITLES.get(metric, metric)}" +
                     (" (lower is better)" if metric in run_files.LOWER_IS_BETTER else ""))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in axes[panels:]:
        ax.set_visible(False)
    return to_png(figure)


def confusion_matrices(analyses: list[dict]) -> bytes:
    """One heat map per run: colour = share of the true class (row), text = count."""
    count = len(analyses)
    columns = min(count, 3)
    rows = -(-count // columns)
    figure = _figure(3.6 * columns, 3.3 * rows)
    axes = np.atleast_1d(figure.subplots(rows, columns)).reshape(-1)
    for ax, analysis in zip(axes, analyses):
        confusion = np.asarray(analysis["confusion"], np.float64)
        shares = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        labels = [f"{r:g}" for r in analysis["ratings"]]
        ax.set_xticks(range(len(labels)), labels)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(analysis["name"], fontsize=10)
        small = len(labels) <= 10
        for t in range(confusion.shape[0]):
            for p in range(confusion.shape[1]):
                if small:
                    ax.text(p, t, f"{int(confusion[t, p])}", ha="center", va="center", fontsize=8,
                            color="white" if shares[t, p] > 0.55 else "black")
        figure.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    for ax in axes[count:]:
        ax.set_visible(False)
    return to_png(figure)


def calibration(analyses: list[dict]) -> bytes:
    """Left: mean observed rating per bin of predicted (expected) rating, the diagonal is
    calibrated; right: reliability of the top class (accuracy per confidence bin) with ECE."""
    figure = _figure(9.5, 3.6)
    left, right = figure.subplots(1, 2)
    low = min(a["ratings"][0] for a in analyses)
    high = max(a["ratings"][-1] for a in analyses)
    left.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
    right.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    for i, analysis in enumerate(analyses):
        bins = [b for b in analysis["calibration"]["rating"]["bins"] if b["reviews"]]
        sizes = np.asarray([b["reviews"] for b in bins], np.float64)
        left.plot([b["predicted"] for b in bins], [b["observed"] for b in bins], color=color(i), linewidth=1.2,
                  label=analysis["name"])
        left.scatter([b["predicted"] for b in bins], [b["observed"] for b in bins], color=color(i),
                     s=12 + 120 * sizes / max(sizes.max(), 1), zorder=3)
        reliability = analysis["calibration"]["reliability"]
        if reliability is None:
            continue
        filled = [b for b in reliability["bins"] if b["reviews"]]
        right.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], marker="o", markersize=4,
                   color=color(i), label=f"{analysis['name']}: ECE {reliability['ece']:.3f}")
    left.set_xlabel("predicted rating (expected, binned)")
    left.set_ylabel("observed mean rating")
    left.set_title("predicted vs observed rating (dot size: reviews)")
    left.legend(fontsize=8)
    right.set_xlabel("confidence (top class probability)")
    right.set_ylabel("accuracy")
    right.set_xlim(0, 1)
    right.set_ylim(0, 1)
    right.set_title("reliability of the class probabilities")
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=8, loc="upper left")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return to_png(figure)


def cold_start(analyses: list[dict]) -> bytes:
    """Accuracy (± one binomial standard error) and RMSE by the training reviews of the review's
    user and of its product, runs side by side in each bucket; the bucket's test reviews under its
    label."""
    figure = _figure(10, 5.6)
    axes = figure.subplots(2, 2)
    width = 0.8 / len(analyses)
    for row, entity in enumerate(("user", "product")):
        for column, metric in enumerate(("accuracy", "rmse")):
            ax = axes[row, column]
            labels = None
            for i, analysis in enumerate(analyses):
                buckets = analysis["cold_start"][entity]
                labels = labels or [f"{b['label']}\n({b['reviews']:,})" for b in buckets]
                x = np.arange(len(buckets)) + (i - (len(analyses) - 1) / 2) * width
                values = [np.nan if b[metric] is None else b[metric] for b in buckets]
                errors = [np.nan if b.get("accuracy_se") is None else b["accuracy_se"] for b in buckets] \
                    if metric == "accuracy" else None
                ax.bar(x, values, width=width, color=color(i), yerr=errors, ecolor="#444", capsize=2,
                       error_kw={"linewidth": 0.8}, label=analysis["name"] if row == column == 0 else None)
            for k, bucket in enumerate(analyses[0]["cold_start"][entity]):
                if all(a["cold_start"][entity][k]["reviews"] == 0 for a in analyses):
                    ax.text(k, 0.03, "none", ha="center", va="bottom", fontsize=8, color="grey",
                            transform=ax.get_xaxis_transform())
            counts = {tuple(b["reviews"] for b in a["cold_start"][entity]) for a in analyses}
            if len(counts) > 1:  # different test data: the table gives each run's counts
                labels = [b["label"] for b in analyses[0]["cold_start"][entity]]
            ax.set_xticks(range(len(labels)), labels, fontsize=8)
            ax.set_title(f"{TITLES[metric]} by training reviews of the {entity}", fontsize=10)
            ax.set_xlabel(f"training reviews of the review's {entity} (test reviews)", fontsize=8)
            ax.grid(axis="y", alpha=0.3)
    if len(analyses) > 1:
        figure.legend(loc="outside upper center", ncols=len(analyses), fontsize=9, frameon=False)
    return to_png(figure)


def by_length(analyses: list[dict]) -> bytes:
    """Accuracy and RMSE per length bin, one line per run; the bins (quantiles of the test
    lengths) are evenly spaced and labelled with their token ranges."""
    figure = _figure(9.5, 3.2)
    left, right = figure.subplots(1, 2)
    bins_of = [tuple((b["low"], b["high"]) for b in a["by_length"]) for a in analyses]
    same_bins = len(set(bins_of)) == 1
    for i, analysis in enumerate(analyses):
        bins = analysis["by_length"]
        for ax, metric in ((left, "accuracy"), (right, "rmse")):
            ax.plot(range(len(bins)), [np.nan if b[metric] is None else b[metric] for b in bins], marker="o",
                    color=color(i), label=analysis["name"])
    longest = max(len(b) for b in bins_of)
    labels = [f"{low:,}-{high:,}" for low, high in bins_of[0]] if same_bins else \
        [f"bin {k + 1}" for k in range(longest)]
    for ax, metric in ((left, "accuracy"), (right, "rmse")):
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlabel("review length in tokens (bins of about equal size)" if same_bins else
                      "review length bin, shortest first (each run's own quantiles)")
        ax.set_title(f"{TITLES[metric]} by review length")
        ax.grid(alpha=0.3)
    if len(analyses) > 1:
        left.legend(fontsize=8)
    return to_png(figure)


def data_groups(analyses: list[dict]) -> list[list[dict]]:
    """The runs grouped by their data config (runs on the same data share a table and a panel)."""
    groups: dict[str, list[dict]] = {}
    for analysis in analyses:
        key = json.dumps(analysis["config"].get("data"), sort_keys=True)
        groups.setdefault(key, []).append(analysis)
    return list(groups.values())


def rating_histograms(analyses: list[dict]) -> bytes:
    """Share of each rating per split (train / validation / test), one panel per distinct data."""
    groups = data_groups(analyses)
    figure = _figure(max(3.6 * len(groups), 4.5), 2.6)
    axes = np.atleast_1d(figure.subplots(1, len(groups))).reshape(-1)
    for ax, group in zip(axes, groups):
        data = group[0]["data"]
        ratings = data["ratings"]
        width = 0.8 / 3
        for j, split in enumerate(("train", "validation", "test")):
            histogram = np.asarray(data["splits"][split]["rating_histogram"], np.float64)
            ax.bar(np.arange(len(ratings)) + (j - 1) * width, histogram / max(histogram.sum(), 1), width=width,
                   label=split, color=("#4c72b0", "#dd8452", "#55a868")[j])
        ax.set_xticks(range(len(ratings)), [f"{r:g}" for r in ratings])
        ax.set_xlabel("rating")
        ax.set_title(", ".join(a["name"] for a in group), fontsize=9)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("share of reviews")
    return to_png(figure)
