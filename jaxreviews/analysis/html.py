"""report.html from analyses (`analyze_run` dicts): one self-contained page.

Figures are PNGs inlined as base64 data URIs, the style sheet is inline (with print rules: no
navigation, no figure or table split across pages, backgrounds printed), and the page has no
script and loads nothing: it opens offline, from a mail attachment, and prints as it shows.
Every string from a run (config values, review words, names) is HTML-escaped.
"""
from __future__ import annotations

import base64
import datetime
import html

from jaxreviews.analysis import plots, run_files

# The headline first (test metrics beside the baselines, then how training went); the run's data,
# timing and its full config (folded) last.
SECTIONS = (("metrics", "Test metrics"), ("curves", "Learning curves"), ("confusion", "Confusion matrix"),
            ("calibration", "Calibration"), ("cold-start", "Cold start"), ("length", "Review length"),
            ("attention", "Attention"), ("run", "The run: data, training, config"))
KINDS = {"confident_right": "most confident, right", "confident_wrong": "most confident, wrong",
         "largest_errors": "largest rating error"}
# Word shading: orange, alpha up to WORD_ALPHA for the review's most attended word; sentence
# shading: blue, alpha up to SENTENCE_ALPHA for the review's most attended sentence.
WORD_RGB, WORD_ALPHA, MIN_WORD_ALPHA = (230, 85, 13), 0.85, 0.08
SENTENCE_RGB, SENTENCE_ALPHA = (49, 130, 189), 0.35

CSS = """
:root { color-scheme: light; }
* { -webkit-print-color-adjust: exact; print-color-adjust: exact; box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Helvetica, Arial, sans-serif;
       color: #1d1d1f; margin: 0 auto; max-width: 1120px; padding: 16px 24px 48px; background: #fff; }
h1 { font-size: 22px; margin: 8px 0 2px; }
h2 { font-size: 18px; margin: 28px 0 8px; padding-top: 6px; border-top: 2px solid #e3e3e8; }
h3 { font-size: 15px; margin: 16px 0 6px; }
.muted, .note { color: #5f6368; }
.note { background: #f6f7f9; border-left: 3px solid #c7cbd1; padding: 6px 10px; margin: 8px 0; }
nav { margin: 10px 0 4px; font-size: 13px; }
nav a { margin-right: 12px; color: #1a5fb4; text-decoration: none; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 12.5px; }
th, td { padding: 3px 9px; border-bottom: 1px solid #e6e6ea; text-align: right; vertical-align: top; }
th { background: #f3f4f6; font-weight: 600; }
td.l, th.l { text-align: left; }
tr.baseline td { color: #5f6368; }
code, .config td { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace; font-size: 12px; }
figure { margin: 8px 0 14px; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: #5f6368; font-size: 12.5px; margin-top: 4px; }
.columns { column-count: 2; column-gap: 24px; }
.columns table { break-inside: avoid; }
.row { display: flex; flex-wrap: wrap; gap: 0 32px; }
.sample { border: 1px solid #e3e3e8; border-radius: 6px; padding: 8px 12px; margin: 10px 0; break-inside: avoid; }
.sample-head { font-size: 13px; margin-bottom: 6px; }
.sample-head .kind { font-weight: 700; margin-right: 8px; }
.sentence { margin: 2px 0; padding: 2px 6px 2px 4px; border-left: 4px solid #3182bd; line-height: 1.9; }
.sentence .sw { display: inline-block; width: 3.2em; color: #3a5a78; font-size: 11px; font-family: monospace; }
.w { padding: 1px 2px; border-radius: 3px; }
.legend span { padding: 1px 6px; border-radius: 3px; margin-right: 6px; }
@page { margin: 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 12px; }
  nav { display: none; }
  h2, h3 { break-after: avoid; }
  figure, table, .sample { break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "–"
        return f"{value:,.{digits}f}"
    return esc(value)


def share(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def image(png: bytes, alt: str, caption: str = "") -> str:
    data = base64.b64encode(png).decode("ascii")
    caption_html = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">{caption_html}</figure>'


def table(header: list[str], rows: list[list[str]], *, left_columns: int = 1, classes: str = "",
          row_classes: list[str] | None = None) -> str:
    """A table of already formatted (escaped) cells; the first `left_columns` are left-aligned."""
    def cells(values, tag):
        return "".join(f'<{tag}{" class=l" if i < left_columns else ""}>{v}</{tag}>' for i, v in enumerate(values))
    body = "".join(f'<tr{f" class={row_classes[i]}" if row_classes and row_classes[i] else ""}>{cells(r, "td")}</tr>'
                   for i, r in enumerate(rows))
    return f'<table class="{classes}"><thead><tr>{cells(header, "th")}</tr></thead><tbody>{body}</tbody></table>'


# -- sections ----------------------------------------------------------------------------------------

def section_run(analyses: list[dict]) -> str:
    parts = []
    parts.append("<h3>Data</h3>")
    for group in plots.data_groups(analyses):
        data = group[0]["data"]
        names = ", ".join(esc(a["name"]) for a in group)
        rows = []
        for split, s in data["splits"].items():
            rows.append([split, fmt(s["reviews"]), fmt(s["users"]), fmt(s["products"]),
                         f'{fmt(s["unseen_user"])} ({share(s["unseen_user_share"])})',
                         f'{fmt(s["unseen_product"])} ({share(s["unseen_product_share"])})',
                         f'{fmt(s["mean_tokens"], 1)} / {fmt(s["median_tokens"], 0)}', fmt(s["mean_sentences"], 1),
                         share(s["oov_rate"]),
                         " / ".join(fmt(c) for c in s["rating_histogram"])])
        padding = data.get("padding_efficiency")
        parts.append(
            f"<p><b>{names}</b>: source <code>{esc(data.get('source'))}</code>, vocabulary {fmt(data['vocab_size'])}, "
            f"{fmt(data['users'])} users and {fmt(data['products'])} products in training"
            + (f", training batches {esc(data.get('layout', ''))}: {share(padding)} of the word slots real"
               if padding is not None else "") + ".</p>"
            + table(["split", "reviews", "users", "products", "reviews, unseen user", "reviews, unseen product",
                     "tokens mean / median", "sentences", "OOV tokens",
                     "ratings " + " / ".join(f"{r:g}" for r in data["ratings"])], rows))
    parts.append(image(plots.rating_histograms(analyses), "rating histograms per split",
                       "Share of each rating in each split."))

    parts.append("<h3>Training</h3>")
    rows = []
    for a in analyses:
        t = a["timing"]
        rows.append([esc(a["name"]), esc(a["model"]), fmt(t["parameters"] or a["parameters"]["total"]),
                     f'{fmt(t["steps"])} / {fmt(t["best_step"])}', fmt(t["stopped_early"]),
                     fmt(t["train_seconds"], 1), fmt(t["docs_per_s"], 0), fmt(t["eval_seconds"], 1),
                     fmt(t["compile_seconds"], 1), fmt(t["total_seconds"], 1)])
    parts.append(table(["run", "model", "parameters", "steps / best step", "stopped early", "training s",
                        "docs/s", "evaluation s", "compilation s", "total s"], rows, left_columns=2))
    parts.append("<h3>Parameters by module</h3>")
    for a in analyses:
        if a.get("members"):
            parts.append(f"<p class=note>{esc(a['name'])} is an ensemble of {a['members']} members: its counts "
                         "cover all of them.</p>")
    paths = list(dict.fromkeys(path for a in analyses for path in a["parameters"] if path != "total"))
    rows = [[("&nbsp;&nbsp;&nbsp;&nbsp;" * path.count("/")) + f"<code>{esc(path.split('/')[-1])}</code>",
             *(fmt(a["parameters"].get(path)) for a in analyses)] for path in paths]
    rows.append(["<b>total</b>", *(f"<b>{fmt(a['parameters']['total'])}</b>" for a in analyses)])
    parts.append(table(["module", *(esc(a["name"]) for a in analyses)], rows))
    parts.append(section_config(analyses))
    return "".join(parts)


def section_config(analyses: list[dict]) -> str:
    """One run's whole config, folded; several runs' differing keys (open: they are the comparison)."""
    if len(analyses) == 1:
        flat = run_files.flatten_config(analyses[0]["config"])
        rows = [[f"<code>{esc(k)}</code>", f"<code>{esc(v)}</code>"] for k, v in sorted(flat.items())]
        return (f"<h3>Config</h3><details><summary>config.json: the resolved config of the run ({len(rows)} "
                f"options; docs/options.md says what each means)</summary>"
                f'<div class="columns">{table(["key", "value"], rows, left_columns=2, classes="config")}</div>'
                "</details>")
    differences = run_files.config_differences([a["config"] for a in analyses])
    if not differences:
        return "<h3>Config</h3><p class=note>The runs have the same config.</p>"
    rows = [[f"<code>{esc(k)}</code>", *(f"<code>{esc(v)}</code>" for v in values)]
            for k, values in differences.items()]
    return (f"<h3>Config: the {len(differences)} keys that differ</h3>"
            + table(["key", *(esc(a["name"]) for a in analyses)], rows, left_columns=len(analyses) + 1,
                    classes="config"))


def section_curves(analyses: list[dict]) -> str:
    return image(plots.learning_curves(analyses), "learning curves",
                 "Training loss per step (light) and its moving average; validation metrics at each evaluation. "
                 "A star (and a dotted line in the loss panel) marks the best step, whose parameters are evaluated.")


def section_metrics(analyses: list[dict]) -> str:
    metrics = run_files.METRIC_KEYS
    rows, classes, values = [], [], []
    seen_baselines = set()
    for a in analyses:
        for row in a["test_metrics"]:
            if row["kind"] == "baseline":
                key = (row["name"], tuple(row[m] for m in metrics))
                if key in seen_baselines:
                    continue
                seen_baselines.add(key)
                label = row["name"] + (f" ({a['name']} data)" if len(plots.data_groups(analyses)) > 1 else "")
            else:
                label = row["name"]
            values.append((row, label))
    values.sort(key=lambda item: item[0]["kind"] == "baseline")  # the runs first, then the baselines
    best = {}
    for m in metrics:
        candidates = [r[m] for r, _ in values if r["kind"] != "baseline" and r[m] is not None]
        if candidates:
            best[m] = (min if m in run_files.LOWER_IS_BETTER else max)(candidates)
    for row, label in values:
        cells = [esc(label)]
        for m in metrics:
            text = fmt(row[m])
            if row.get("std") and row["std"].get(m) is not None:
                text += f" ± {fmt(row['std'][m])}"
            is_best = row["kind"] != "baseline" and row[m] is not None and row[m] == best.get(m)
            cells.append(f"<b>{text}</b>" if is_best else text)
        rows.append(cells)
        classes.append("baseline" if row["kind"] == "baseline" else "")
    note = ("<p class=muted>Test split, best parameters. Majority class and mean rating are fitted on the training "
            "split. RMSE and MAE score the expected rating, accuracy the most probable class. With an ensemble "
            "the members' mean ± std stands beside the ensemble.</p>")
    return note + table(["", "accuracy", "macro-F1", "RMSE", "MAE", "NLL"], rows, row_classes=classes)


def section_confusion(analyses: list[dict]) -> str:
    parts = [image(plots.confusion_matrices(analyses), "confusion matrices",
                   "Rows: true rating; columns: predicted rating (most probable class). Colour: share of the row; "
                   "numbers: reviews.")]
    ratings = analyses[0]["ratings"]
    same_scale = all(a["ratings"] == ratings for a in analyses)
    if same_scale:
        header = ["rating", "support"] + [f"{esc(a['name'])} {m}" for a in analyses for m in ("P", "R", "F1")]
        rows = []
        for k, r in enumerate(ratings):
            row = [f"{r:g}", fmt(analyses[0]["per_class"]["support"][k])]
            for a in analyses:
                pc = a["per_class"]
                row += [fmt(pc["precision"][k]), fmt(pc["recall"][k]), fmt(pc["f1"][k])]
            rows.append(row)
        rows.append(["macro", ""] + [x for a in analyses for x in ("", "", f"<b>{fmt(a['per_class']['macro_f1'])}</b>")])
        parts.append(table(header, rows))
    else:
        for a in analyses:
            pc = a["per_class"]
            rows = [[f"{r:g}", fmt(pc["support"][k]), fmt(pc["precision"][k]), fmt(pc["recall"][k]), fmt(pc["f1"][k])]
                    for k, r in enumerate(a["ratings"])]
            parts.append(f"<p><b>{esc(a['name'])}</b></p>" + table(["rating", "support", "P", "R", "F1"], rows))
    return "".join(parts)


def section_calibration(analyses: list[dict]) -> str:
    rows = []
    for a in analyses:
        rating, rel = a["calibration"]["rating"], a["calibration"]["reliability"]
        rows.append([esc(a["name"]), fmt(rating["mean_predicted"]), fmt(rating["mean_observed"]),
                     fmt(rel and rel["mean_confidence"]), fmt(rel and rel["accuracy"]), fmt(rel and rel["ece"]),
                     fmt(rel and rel["mce"])])
    note = "" if all(a["calibration"]["reliability"] for a in analyses) else \
        "<p class=note>A regression head gives no class probabilities: no reliability curve for it.</p>"
    return (image(plots.calibration(analyses), "calibration",
                  "Left: test reviews binned by their predicted (expected) rating, nearest class; the diagonal is "
                  "perfect calibration. Right: reviews binned by the probability of the predicted class, ten bins; "
                  "ECE is the review-weighted mean gap between accuracy and confidence, MCE the largest.")
            + note + table(["run", "mean predicted rating", "mean observed rating", "mean confidence", "accuracy",
                            "ECE", "MCE"], rows))


def section_cold_start(analyses: list[dict]) -> str:
    parts = [
        "<p class=muted>Test reviews grouped by how many training reviews their user (and their product) has: "
        "0 means unseen in training (the model's learned unknown id). If user and product modelling helps, it "
        "helps most where there are many reviews to learn an embedding from.</p>",
        image(plots.cold_start(analyses), "cold start", "Under each bucket: its test reviews.")]
    for entity in ("user", "product"):
        header = ["training reviews of the " + entity]
        same_counts = len({tuple(b["reviews"] for b in a["cold_start"][entity]) for a in analyses}) == 1
        if same_counts:
            header.append("test reviews")
        for a in analyses:
            header += ([] if same_counts else [f"{esc(a['name'])} reviews"]) + \
                      [f"{esc(a['name'])} accuracy", f"{esc(a['name'])} RMSE"]
        if len(analyses) == 2 and same_counts:
            header += ["Δ accuracy", "Δ RMSE"]
        rows = []
        for k, bucket in enumerate(analyses[0]["cold_start"][entity]):
            row = [esc(bucket["label"])] + ([fmt(bucket["reviews"])] if same_counts else [])
            for a in analyses:
                b = a["cold_start"][entity][k]
                row += ([] if same_counts else [fmt(b["reviews"])]) + [fmt(b["accuracy"]), fmt(b["rmse"])]
            if len(analyses) == 2 and same_counts:
                first, second = (a["cold_start"][entity][k] for a in analyses)
                row += [_delta(first["accuracy"], second["accuracy"]), _delta(first["rmse"], second["rmse"])]
            rows.append(row)
        parts.append(f"<h3>By the {entity}'s training reviews</h3>" + table(header, rows))
    if len(analyses) == 2:
        parts.append(f"<p class=muted>Δ: {esc(analyses[1]['name'])} minus {esc(analyses[0]['name'])}.</p>")
    return "".join(parts)


def _delta(first, second) -> str:
    return "–" if first is None or second is None else f"{second - first:+.3f}"


def section_length(analyses: list[dict]) -> str:
    parts = [image(plots.by_length(analyses), "accuracy by review length",
                   "Test reviews in five bins of about equal size by their length in tokens.")]
    tables = []
    for a in analyses:
        rows = [[f"{b['low']:,}–{b['high']:,}", fmt(b["reviews"]), fmt(b["accuracy"]), fmt(b["rmse"])]
                for b in a["by_length"]]
        tables.append(f"<div><p><b>{esc(a['name'])}</b></p>"
                      + table(["tokens", "reviews", "accuracy", "RMSE"], rows) + "</div>")
    return "".join(parts) + f'<div class="row">{"".join(tables)}</div>'



def section_attention(analyses: list[dict]) -> str:
    parts = ['<p class="legend muted">Each word is shaded by its word attention (a weight within its sentence; '
             "the review's largest is the darkest) "
             f'(<span style="background-color: rgba{(*WORD_RGB, WORD_ALPHA)}">most attended word</span>), each '
             f'sentence by its sentence attention (<span style="background-color: rgba{(*SENTENCE_RGB, SENTENCE_ALPHA)}">'
             'most attended sentence</span>; the number on its left is the weight). Hover a word for its weight. '
             'Words as the model reads them: its vocabulary, &lt;unk&gt; for others, long reviews cut at the '
             "run's maximum sentences and words.</p>"]
    for a in analyses:
        parts.append(f"<h3>{esc(a['name'])}</h3>")
        if not a["has_attention"]:
            parts.append(f"<p class=note>{esc(a['model'])} has no attention weights (only the hierarchical "
                         "models han and han_upa have them): section skipped for this run.</p>")
            continue
        for sample in a["attention"]:
            parts.append(render_sample(sample))
    return "".join(parts)


def render_sample(sample: dict) -> str:
    confidence = "" if sample["confidence"] is None else f", p = {sample['confidence']:.3f}"
    right = sample["predicted_rating"] == sample["rating"]
    head = (f'<div class="sample-head"><span class="kind">{esc(KINDS.get(sample["kind"], sample["kind"]))}</span>'
            f'predicted <b>{sample["predicted_rating"]:g}</b> (expected rating {sample["expected_rating"]:.2f}'
            f'{confidence}) · truth <b>{sample["rating"]:g}</b> {"✓" if right else "✗"} · '
            f'user <code>{esc(sample["user"])}</code> ({sample["user_train_reviews"]:,} training reviews) · '
            f'product <code>{esc(sample["product"])}</code> ({sample["product_train_reviews"]:,}) · '
            f'test review #{sample["index"]:,}</div>')
    sentences = []
    sentence_weights = sample.get("sentence_attention") or []
    top_sentence = max(sentence_weights, default=0.0) or 1.0
    word_weights = sample.get("word_attention") or [[]] * len(sample["tokens"])
    top_word = max((w for weights in word_weights for w in weights), default=0.0) or 1.0
    for s, tokens in enumerate(sample["tokens"]):
        weights = word_weights[s] if s < len(word_weights) else []
        words = []
        for t, token in enumerate(tokens):
            weight = weights[t] if t < len(weights) else None
            if weight is None:
                words.append(f'<span class="w">{esc(token)}</span>')
                continue
            alpha = round(WORD_ALPHA * weight / top_word, 3)
            if alpha < MIN_WORD_ALPHA:  # unshaded: the eye finds the few words that carry weight
                words.append(f'<span class="w" title="{weight:.4f}">{esc(token)}</span>')
                continue
            words.append(f'<span class="w" style="background-color: rgba{(*WORD_RGB, alpha)}" '
                         f'title="{weight:.4f}">{esc(token)}</span>')
        sentence_weight = sentence_weights[s] if s < len(sentence_weights) else None
        if sentence_weight is None:
            style, label = "", ""
        else:
            alpha = round(SENTENCE_ALPHA * sentence_weight / top_sentence, 3)
            style = f' style="background-color: rgba{(*SENTENCE_RGB, alpha)}"'
            label = f'<span class="sw">{sentence_weight:.2f}</span>'
        sentences.append(f'<p class="sentence"{style}>{label}{" ".join(words)}</p>')
    return f'<div class="sample">{head}{"".join(sentences)}</div>'


RENDERERS = {"run": section_run, "curves": section_curves, "metrics": section_metrics,
             "confusion": section_confusion, "calibration": section_calibration, "cold-start": section_cold_start,
             "length": section_length, "attention": section_attention}


def render(analyses: list[dict], *, command: str = "", generated: datetime.datetime | None = None) -> str:
    """The whole page for one run or several (compared)."""
    if not analyses:
        raise ValueError("render: no analyses")
    generated = generated or datetime.datetime.now()
    names = [a["name"] for a in analyses]
    title = f"jaxreviews report: {' vs '.join(names)}"
    runs = "".join(f"<li><b>{esc(a['name'])}</b> ({esc(a['model'])}): <code>{esc(a['workdir'])}</code>, "
                   f"step {fmt(a['step'])}, {fmt(a['test_reviews'])} test reviews</li>" for a in analyses)
    nav = "".join(f'<a href="#{key}">{esc(label)}</a>' for key, label in SECTIONS)
    body = "".join(f'<section id="{key}"><h2>{i}. {esc(label)}</h2>{RENDERERS[key](analyses)}</section>'
                   for i, (key, label) in enumerate(SECTIONS, 1))
    analysis_seconds = sum(sum(a["seconds"].values()) for a in analyses)
    footer = (f"<p class=muted>Written by <code>{esc(command or 'python -m experiments.report')}</code> on "
              f"{generated:%Y-%m-%d %H:%M} ({analysis_seconds:.1f} s of analysis). Every figure's numbers come from "
              "<code>jaxreviews.analysis</code> (<code>analyze_run(workdir)</code>).</p>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{esc(title)}</h1><p class=muted>{generated:%Y-%m-%d %H:%M}</p>"
            f"<ul>{runs}</ul><nav>{nav}</nav>{body}<footer>{footer}</footer></body></html>\n")
