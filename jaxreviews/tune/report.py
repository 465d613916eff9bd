"""The sweep's report: `DIR/report.md` (figures in `DIR/report/*.png`) and `DIR/report.html` (one
self-contained page, figures inlined as PNG, nothing fetched: it opens from disk).

Sections: the study (counts, time, trials/hour), the best trials (validation score ± its std over
seeds or folds, test metrics, parameters, run directory), each parameter's best value, whether it
sits at the edge of its range and the proposed next range (`analysis`), the failed and pruned trials
with their reasons, and the figures: optimisation history, the validation metric against each
parameter (log axes where the space is log; the range's ends dashed, the proposed range shaded),
parallel coordinates, and fANOVA parameter importance. `next_space` writes the proposed space as
a JSON file that the next sweep takes (`--config.search.space=FILE`).
"""
from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import os

import matplotlib
import numpy as np
import optuna
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from optuna.trial import TrialState

from jaxreviews.tune import analysis, space as space_lib

DPI = 100
BEST_ROWS = 10


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _values(trial, parameter: space_lib.Parameter):
    return parameter.value(trial.params[parameter.optuna_name]) if parameter.optuna_name in trial.params else None


# -- figures -------------------------------------------------------------------------------------------

def plot_history(study: optuna.Study, metric: str) -> bytes:
    figure = _figure(7, 3.4)
    ax = figure.add_subplot()
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in analysis.complete_trials(study)]
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    if complete:
        numbers = [t.number for t in complete]
        values = [t.value for t in complete]
        ax.scatter(numbers, values, s=22, color="#1f77b4", label="complete", zorder=3)
        best, running = [], None
        for t in sorted(complete, key=lambda t: t.number):
            running = t.value if running is None else (max if maximize else min)(running, t.value)
            best.append((t.number, running))
        ax.step([b[0] for b in best], [b[1] for b in best], where="post", color="#d62728", label="best so far")
    for state, marker, color in ((TrialState.PRUNED, "v", "#ff7f0e"), (TrialState.FAIL, "x", "#7f7f7f")):
        chosen = [t for t in trials if t.state == state]
        if chosen:
            last = [t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
                    for t in chosen]
            y = [v if v is not None and math.isfinite(v) else None for v in last]
            bottom = ax.get_ylim()[0] if complete else 0
            ax.scatter([t.number for t in chosen], [v if v is not None else bottom for v in y], marker=marker,
                       color=color, label=state.name.lower(), zorder=3)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title("optimisation history")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(figure)


def plot_parameters(study: optuna.Study, space: space_lib.Space, found: list[analysis.ParameterFinding],
                    metric: str) -> bytes:
    count = len(space)
    columns = min(3, count)
    rows = math.ceil(count / columns)
    figure = _figure(3.4 * columns, 2.8 * rows)
    complete = analysis.complete_trials(study)
    best = analysis.ranked(study)[:1]
    by_name = {f.name: f for f in found}
    for i, parameter in enumerate(space):
        ax = figure.add_subplot(rows, columns, i + 1)
        having = [t for t in complete if parameter.optuna_name in t.params]
        xs = [_values(t, parameter) for t in having]
        ys = [t.value for t in having]
        spread = [float(t.user_attrs.get("score_std") or 0.0) for t in having]  # over seeds or folds
        if parameter.kind == "choice":
            labels = [str(c) for c in parameter.choices]
            positions = [labels.index(str(x)) for x in xs]
            jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(positions))
            xs = np.asarray(positions) + jitter
            ax.set_xticks(range(len(labels)), labels)
        if any(spread):
            ax.errorbar(xs, ys, yerr=spread, fmt="o", markersize=4, capsize=2, elinewidth=0.8)
        else:
            ax.scatter(xs, ys, s=18)
        if parameter.kind != "choice":
            if parameter.log_scale:
                ax.set_xscale("log", base=2 if parameter.kind == "pow2" else 10)
            for bound in (parameter.low, parameter.high):
                ax.axvline(bound, color="#7f7f7f", linestyle="--", linewidth=1)
            finding = by_name.get(parameter.name)
            if finding is not None and finding.proposed.kind != "choice":
                ax.axvspan(finding.proposed.low, finding.proposed.high, color="#2ca02c", alpha=0.12,
                           label="proposed")
        for t in best:
            if parameter.optuna_name in t.params:
                x = _values(t, parameter)
                x = [str(c) for c in parameter.choices].index(str(x)) if parameter.kind == "choice" else x
                ax.scatter([x], [t.value], s=60, facecolors="none", edgecolors="#d62728", linewidths=1.5)
        scale = " (log)" if parameter.log_scale else ""
        ax.set_xlabel(parameter.name + scale, fontsize=8)
        ax.set_ylabel(f"validation {metric}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    return _png(figure)


def _position(parameter: space_lib.Parameter, value, lows: dict, highs: dict) -> float:
    if value is None:
        return float("nan")
    if parameter.kind == "choice":
        labels = [str(c) for c in parameter.choices]
        return labels.index(str(value)) / max(1, len(labels) - 1)
    lo, hi = lows[parameter.name], highs[parameter.name]
    f = math.log if parameter.log_scale else float
    return (f(value) - f(lo)) / (f(hi) - f(lo)) if f(hi) > f(lo) else 0.5


def plot_parallel(study: optuna.Study, space: space_lib.Space, metric: str) -> bytes:
    figure = _figure(max(6.0, 1.6 * (len(space) + 1)), 3.6)
    ax = figure.add_subplot()
    trials = analysis.ranked(study)
    names = space.names()
    lows = {p.name: min([p.low] + [_values(t, p) for t in trials if _values(t, p) is not None])
            for p in space if p.kind != "choice"}
    highs = {p.name: max([p.high] + [_values(t, p) for t in trials if _values(t, p) is not None])
             for p in space if p.kind != "choice"}
    if trials:
        values = np.array([t.value for t in trials])
        span = values.max() - values.min() or 1.0
        cmap = matplotlib.colormaps["viridis"]
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        for rank, t in reversed(list(enumerate(trials))):
            ys = [_position(p, _values(t, p), lows, highs) for p in space]
            score = (t.value - values.min()) / span
            ys.append(score)
            shade = score if maximize else 1 - score
            ax.plot(range(len(ys)), ys, color=cmap(shade), linewidth=2.5 if rank == 0 else 1,
                    alpha=1.0 if rank == 0 else 0.7)
        for j, p in enumerate(space):
            if p.kind == "choice":
                labels = [str(c) for c in p.choices]
                for i, label in enumerate(labels):
                    ax.annotate(label, (j, i / max(1, len(labels) - 1)), fontsize=7, xytext=(3, 0),
                                textcoords="offset points")
            else:
                ax.annotate(_short(lows[p.name]), (j, 0), fontsize=7, xytext=(3, -8), textcoords="offset points")
                ax.annotate(_short(highs[p.name]), (j, 1), fontsize=7, xytext=(3, 2), textcoords="offset points")
        ax.annotate(f"{values.min():.3f}", (len(names), 0), fontsize=7, xytext=(3, -8), textcoords="offset points")
        ax.annotate(f"{values.max():.3f}", (len(names), 1), fontsize=7, xytext=(3, 2), textcoords="offset points")
    ax.set_xticks(range(len(names) + 1), [n.split(".")[-1] for n in names] + [metric], fontsize=8)
    ax.set_yticks([])
    for j in range(len(names) + 1):
        ax.axvline(j, color="#7f7f7f", linewidth=0.8)
    ax.set_title("parallel coordinates (each axis on its scale; the best trial bold)")
    return _png(figure)


def _short(x) -> str:
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def plot_importance(importances: dict[str, float]) -> bytes:
    figure = _figure(6, 0.5 + 0.4 * max(1, len(importances)))
    ax = figure.add_subplot()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="#1f77b4")
    ax.set_xlabel("fANOVA importance (share of the variance of the validation metric)")
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3, axis="x")
    return _png(figure)


# -- tables ------------------------------------------------------------------------------------------

def best_rows(study: optuna.Study, space: space_lib.Space, metric: str) -> tuple[list[str], list[list[str]]]:
    header = ["trial", f"validation {metric}", "± std", "test accuracy", "test rmse"] + space.names() + \
        ["seconds", "run"]
    rows = []
    for t in analysis.ranked(study)[:BEST_ROWS]:
        test = t.user_attrs.get("test", {})
        std = t.user_attrs.get("score_std")
        rows.append([str(t.number), f"{t.value:.4f}", "" if not std else f"{std:.4f}",
                     _cell(test.get("accuracy")), _cell(test.get("rmse"))]
                    + [_cell(_values(t, p)) for p in space]
                    + [_cell(t.user_attrs.get("seconds")), str(t.user_attrs.get("run_dir", ""))])
    return header, rows


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def finding_rows(found: list[analysis.ParameterFinding]) -> tuple[list[str], list[list[str]]]:
    header = ["parameter", "scale", "range", "best", "at the edge", "proposed next range", "why"]
    rows = []
    for f in found:
        edge = {"low": "yes (low end)", "high": "yes (high end)", "": "no", "n/a": "–"}[f.edge]
        scale = {"log": "log", "pow2": "powers of 2", "int": "linear int", "float": "linear",
                 "choice": "categorical"}[f.kind]
        rows.append([f.name, scale, f.range, _cell(f.best), edge, f.proposed_range, f.note])
    return header, rows


def failure_rows(study: optuna.Study) -> tuple[list[str], list[list[str]]]:
    header = ["trial", "state", "reason"]
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL, TrialState.PRUNED)):
        reason = t.user_attrs.get("fail_reason") or t.user_attrs.get("prune_reason") or ""
        rows.append([str(t.number), t.state.name.lower(), str(reason)])
    return header, rows


# -- rendering -----------------------------------------------------------------------------------------

def _md_table(header, rows) -> str:
    def clean(cell):
        return str(cell).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(clean, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(clean, row)) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header, rows) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f3f3f3}img{max-width:100%}figure{margin:1em 0}code{background:#f3f3f3;padding:0 3px}
@media print{figure,table{break-inside:avoid}h2{break-after:avoid}}"""


def write_report(study: optuna.Study, space: space_lib.Space, workdir: str, *, metric: str, next_space: str = "",
                 method: str = "", now: datetime.datetime | None = None) -> dict[str, str]:
    """Writes report.md (+ report/*.png), report.html and, when asked, the next space; their paths."""
    now = now or datetime.datetime.now()
    found = analysis.findings(study, space)
    importances, importance_note = analysis.importance(study, space)
    summary = analysis.summary(study)
    figures = {"history": plot_history(study, metric)}
    if analysis.complete_trials(study):
        figures["parameters"] = plot_parameters(study, space, found, metric)
        figures["parallel"] = plot_parallel(study, space, metric)
    if importances:
        figures["importance"] = plot_importance(importances)
    captions = {"history": "Optimisation history: each complete trial's validation score, the best so far, "
                           "pruned and failed trials at their last reported value",
                "parameters": "Validation metric against each parameter (log axes for log and power-of-two "
                              "ranges; dashed: the range searched; shaded: the proposed next range; circled: "
                              "the best trial; bars: ± the score's std over seeds or folds)",
                "parallel": "Parallel coordinates: every complete trial's parameters and score, coloured by score",
                "importance": "Parameter importance (Optuna's fANOVA over the complete trials)"}
    proposed = analysis.next_space(space, found)
    written = {}
    if next_space:
        path = os.path.abspath(os.path.expanduser(next_space))
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w") as f:
            f.write(proposed.dumps() + "\n")
        written["next_space"] = path

    title = f"Hyperparameter search: study {study.study_name}"
    counts = (f"{summary['trials']} trials: {summary['complete']} complete, {summary['pruned']} pruned, "
              f"{summary['fail']} failed, {summary['running']} running, {summary['waiting']} waiting")
    timing = ""
    if summary["wall_seconds"]:
        timing = (f"{summary['wall_seconds']:.0f} s from the first trial's start to the last one's end "
                  f"({summary['trials_per_hour']} trials/hour); {summary['trial_seconds']:.0f} s of training runs")
    direction = "higher" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "lower"
    intro = [f"Generated {now:%Y-%m-%d %H:%M}. Method {method or '?'}; validation {metric} ({direction} is better).",
             counts + ".", timing]
    sections = [("best", "Best trials", best_rows(study, space, metric)),
                ("parameters", "Where to look next", finding_rows(found)),
                ("failures", "Failed and pruned trials", failure_rows(study))]

    figure_dir = os.path.join(workdir, "report")
    os.makedirs(figure_dir, exist_ok=True)
    md = [f"# {title}", "", *[line for line in intro if line], ""]
    for key, heading, (header, rows) in sections:
        md += [f"## {heading}", "", _md_table(header, rows) if rows else "(none)", ""]
        if key == "parameters":
            md += ["The proposed space, for the next sweep (`--next_space=FILE`, then "
                   "`--config.search.space=FILE`):", "", "```json", proposed.dumps(), "```", ""]
    md += ["## Figures", ""]
    for name, png in figures.items():
        with open(os.path.join(figure_dir, f"{name}.png"), "wb") as f:
            f.write(png)
        md += [f"![{captions[name]}](report/{name}.png)", "", f"*{captions[name]}*", ""]
    if importance_note:
        md += [f"Parameter importance: {importance_note}.", ""]
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write("\n".join(md))
    written["md"] = os.path.join(workdir, "report.md")

    body = [f"<h1>{html.escape(title)}</h1>"] + [f"<p>{html.escape(line)}</p>" for line in intro if line]
    for key, heading, (header, rows) in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>")
        body.append(_html_table(header, rows) if rows else "<p>(none)</p>")
        if key == "parameters":
            body.append("<p>The proposed space, for the next sweep:</p><pre><code>"
                        + html.escape(proposed.dumps()) + "</code></pre>")
    body.append("<h2>Figures</h2>")
    for name, png in figures.items():
        data = base64.b64encode(png).decode("ascii")
        body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(captions[name])}">'
                    f"<figcaption>{html.escape(captions[name])}</figcaption></figure>")
    if importance_note:
        body.append(f"<p>Parameter importance: {html.escape(importance_note)}.</p>")
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    with open(os.path.join(workdir, "report.html"), "w") as f:
        f.write(page)
    written["html"] = os.path.join(workdir, "report.html")
    with open(os.path.join(workdir, "report.json"), "w") as f:
        json.dump({"summary": summary, "importance": importances,
                   "parameters": [{"name": x.name, "best": x.best, "edge": x.edge, "range": x.range,
                                   "proposed": x.proposed.to_json(), "note": x.note} for x in found]},
                  f, indent=2, default=str)
    return written
