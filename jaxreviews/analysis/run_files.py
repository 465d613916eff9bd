"""What a run directory already says, read into plain dicts: no model, no data.

    read_json(workdir, "results.json")   results.json ({} when the run has not finished)
    learning_curves(workdir)             metrics.jsonl: training loss per step, validation metrics per
                                         evaluation, the best step
    flatten_config(config)               {"optimizer.learning_rate": 0.001, ...}
    config_differences(configs)          the keys whose values differ between runs, with each run's value
    parameter_counts(params, depth=2)    parameters per module path ("word_encoder", "word_encoder/forward"...)
    test_metrics(results)                the rows of the test table: the model, ensemble members mean and
                                         std and the ensemble when the run has them, the baselines
    timing(results)                      training / evaluation / compilation seconds, docs/s, steps
"""
from __future__ import annotations

import json
import math
import os

import jax
import numpy as np

# The validation metrics a learning-curve figure shows, in this order, when recorded.
CURVE_METRICS = ("accuracy", "macro_f1", "rmse", "mae", "nll")
# Lower is better for these; the others are higher-is-better.
LOWER_IS_BETTER = ("rmse", "mae", "nll", "loss")


def read_json(workdir: str | os.PathLike, name: str) -> dict:
    """A run file as a dict ({} when absent); a whole results.json in the current schema
    (`RunResults`), whichever schema the run wrote."""
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        tree = json.load(f)
    if name == "results.json":
        from jaxreviews.train.results import RunResults

        try:
            tree = RunResults.from_json(tree).to_json()
        except (KeyError, TypeError):  # not a whole results file (written by hand): as it is
            pass
    return tree


def learning_curves(workdir: str | os.PathLike) -> dict:
    """From metrics.jsonl: {"train": {"step": [..], "loss": [..], "accuracy": [..], "lr": [..]},
    "validation": {"step": [..], "epoch": [..], <metric>: [..] for each recorded metric},
    "best_step": the step of the best validation record (results.json's when finished, else the
    record that last improved `best`)}. A step recorded twice (a run resumed before its log
    was flushed, in old runs) keeps its last record."""
    path = os.path.join(workdir, "metrics.jsonl")
    train: dict[int, dict] = {}
    validation: dict[int, dict] = {}
    if os.path.exists(path):
        with open(path) as f:
            for line_number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{line_number}: not a JSON record ({error.msg})") from None
                kind = record.get("kind")
                if kind == "train":
                    train[int(record["step"])] = record
                elif kind == "validation":
                    validation[int(record["step"])] = record

    def columns(records: dict[int, dict], keys) -> dict:
        steps = sorted(records)
        out = {"step": steps}
        for key in keys:
            if any(key in records[s] for s in steps):
                out[key] = [_number(records[s].get(key)) for s in steps]
        return out

    best_step = read_json(workdir, "results.json").get("best_step")
    if best_step is None and validation:  # still training: the last evaluation that set a new best
        metric = read_json(workdir, "config.json").get("train", {}).get("early_stopping_metric", "accuracy")
        improved = [s for s in sorted(validation) if validation[s].get("best") == validation[s].get(metric)]
        best_step = improved[-1] if improved else None
    return {"train": columns(train, ("loss", "accuracy", "lr", "grad_norm")),
            "validation": columns(validation, ("epoch", *CURVE_METRICS, "loss")),
            "best_step": None if best_step is None or best_step < 0 else int(best_step)}


def _number(value):
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def smooth(values, window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far)."""
    values = np.asarray(values, np.float64)
    if window <= 1 or values.size == 0:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    index = np.arange(1, values.size + 1)
    start = np.maximum(index - window, 0)
    return (sums[index] - sums[start]) / (index - start)


def flatten_config(config: dict) -> dict:
    """Nested dicts -> {"a.b": value}; lists become tuples (hashable, comparable)."""
    from jaxreviews.options import flatten

    return flatten(config)


def config_differences(configs: list[dict]) -> dict[str, list]:
    """{key: [value of run 0, value of run 1, ...]} for every flattened key whose values are not
    all equal ("<absent>" where a run lacks the key), sorted by key."""
    flat = [flatten_config(c) for c in configs]
    keys = sorted(set().union(*flat)) if flat else []
    out = {}
    for key in keys:
        values = [f.get(key, "<absent>") for f in flat]
        if any(v != values[0] for v in values[1:]):
            out[key] = values
    return out


def parameter_counts(params, depth: int = 2) -> dict[str, int]:
    """Parameters per module path down to `depth` levels ("word_encoder", "word_encoder/cell"),
    parents before children, and "total"."""
    params = params.get("params", params) if hasattr(params, "get") else params
    counts: dict[str, int] = {}

    def visit(tree, path: tuple[str, ...]):
        if path:
            counts["/".join(path)] = int(sum(np.prod(np.shape(leaf)) for leaf in jax.tree_util.tree_leaves(tree)))
        if len(path) < depth and hasattr(tree, "items"):
            for key, child in tree.items():
                if hasattr(child, "items"):
                    visit(child, (*path, str(key)))

    visit(params, ())
    counts["total"] = int(sum(np.prod(np.shape(leaf)) for leaf in jax.tree_util.tree_leaves(params)))
    return counts


METRIC_KEYS = ("accuracy", "macro_f1", "rmse", "mae", "nll")


def test_metrics(results: dict, name: str = "model") -> list[dict]:
    """Rows {"name", "kind", metric: value | None, and "std": {metric: std} for members}: the
    model's test metrics; for a run of several members (results.json "num_members" > 1) the
    ensemble ("test") and the members' mean ± std; then the baselines."""
    rows = []
    members = len(results.get("members") or [])
    if members > 1:
        rows.append({"name": f"{name}: ensemble", "kind": "ensemble", **_pick(results["test"])})
        rows.append({"name": f"{name}: {members} members, mean ± std", "kind": "members",
                     **_pick(results["members_mean"]), "std": _pick(results.get("members_std", {}))})
    elif "test" in results:
        rows.append({"name": name, "kind": "model", **_pick(results["test"])})
    for baseline, values in results.get("baselines", {}).items():
        if "skipped" in values:
            continue
        rows.append({"name": f"baseline: {baseline.replace('_', ' ')}", "kind": "baseline", **_pick(values)})
    return rows


def _pick(metrics: dict) -> dict:
    return {key: _number(metrics.get(key)) for key in METRIC_KEYS}


def timing(results: dict) -> dict:
    """Seconds of training, evaluation and compilation (and their sum), docs/s, steps, best
    step, parameters, padding efficiency: None where the run did not record it."""
    compile_seconds = (results.get("compile") or {}).get("seconds")
    parts = [results.get("train_seconds"), results.get("eval_seconds"), compile_seconds]
    return {"train_seconds": parts[0], "eval_seconds": parts[1], "compile_seconds": compile_seconds,
            "total_seconds": round(sum(parts), 2) if all(p is not None for p in parts) else None,
            "docs_per_s": results.get("docs_per_s"), "steps": results.get("steps"),
            "best_step": results.get("best_step"), "stopped_early": results.get("stopped_early"),
            "parameters": results.get("parameters"), "padding_efficiency": results.get("padding_efficiency"),
            "layout": results.get("layout"), "batch_shapes": results.get("buckets")}
