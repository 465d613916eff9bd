"""The model table: every model on one data set, K seeds each, mean ± std over the seeds.

    python tools/model_table.py --data synthetic --workdir /tmp/table-synthetic
    python tools/model_table.py --data musical_instruments --workdir /tmp/table-mi [--seeds 5] [--only han,han_upa]

Each row is one `python -m experiments.train ... --config.num_seeds=K` run (the K seeds trained in
one compiled program), into WORKDIR/ROW; a row whose run has finished is read, not re-run, so an
interrupted table picks up where it stopped. The majority, mean-rating and (on real files) TF-IDF +
logistic regression rows are the baselines every run scores on the same test split (fitted on
train; the regression's C chosen on validation). Wall time is the run's, start to end,
all K seeds, compilation included. Prints the date, commit, machine and command, the markdown
table, then one JSON line with every figure.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tools/, also when loaded by path
import provenance  # noqa: E402
from jaxreviews.train.results import RunResults  # noqa: E402

METRICS = ("accuracy", "macro_f1", "rmse")

# name -> (config file, extra overrides). Every row takes the data set's variant.
ROWS = {
    "mf": ("mf.py", []),
    "fasttext": ("fasttext.py", []),
    "cnn": ("cnn.py", []),
    "bilstm": ("bilstm.py", []),
    "han": ("han.py", []),
    "han_upa": ("han_upa.py", []),
    "han_upa + in-domain vectors": ("han_upa.py", ["--config.data.pretrain_vectors=True"]),
    # the best configuration on Musical Instruments' validation split (2026-12-04, docs/real-text.md)
    "han_upa + in-domain vectors + cosine decay": ("han_upa.py", [
        "--config.data.pretrain_vectors=True", "--config.optimizer.schedule.name=warmup_cosine",
        "--config.optimizer.schedule.warmup_epochs=0.5", "--config.train.epochs=8", "--config.train.patience=8"]),
    "transformer": ("transformer.py", []),
}
VARIANTS = {"synthetic": None, "musical_instruments": "musical_instruments", "amazon_beauty": "amazon_beauty"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=sorted(VARIANTS), default="synthetic")
    p.add_argument("--workdir", required=True, type=os.path.abspath, help="one run directory per row under it")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--only", default="", help="comma-separated row names (default: all)")
    p.add_argument("--ensemble", default="", help="comma-separated rows whose runs are averaged into one more row "
                   "(experiments.ensemble_runs), e.g. fasttext,cnn,han_upa")
    p.add_argument("--ensemble_text_logreg", action="store_true", help="the TF-IDF baseline joins that ensemble")
    p.add_argument("--ensemble_selection", choices=("equal", "validation"), default="equal",
                   help="the ensemble's weights: equal, or chosen on the validation split")
    p.add_argument("--timeout_minutes", type=float, default=60.0, help="a row's run is stopped past this")
    p.add_argument("overrides", nargs="*", help="more --config.key=value flags for every row")
    return p.parse_args(argv)


def row_dir(workdir: str, name: str) -> str:
    return os.path.join(workdir, name.replace(" + ", "+").replace(" ", "_"))


def run_row(args, name: str) -> dict:
    """Trains the row's K seeds (unless its results exist) and returns its results.json plus the wall time."""
    config_file, extra = ROWS[name]
    directory = row_dir(args.workdir, name)
    results_path = os.path.join(directory, "results.json")
    wall_path = os.path.join(directory, "wall_seconds.json")
    if not os.path.exists(results_path):
        os.makedirs(directory, exist_ok=True)
        variant = VARIANTS[args.data]
        config = os.path.join(REPO, "experiments", "configs", config_file) + (f":{variant}" if variant else "")
        command = [sys.executable, "-m", "experiments.train", f"--config={config}", f"--workdir={directory}",
                   f"--config.num_seeds={args.seeds}", *extra, *args.overrides]
        print(f"[{name}] {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        with open(os.path.join(directory, "train.log"), "a") as log:
            subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True,
                           timeout=args.timeout_minutes * 60)
        with open(wall_path, "w") as f:
            json.dump({"wall_seconds": round(time.perf_counter() - started, 1)}, f)
    results = RunResults.load(results_path).to_json()  # also the files older runs wrote
    if os.path.exists(wall_path):
        with open(wall_path) as f:
            results.update(json.load(f))
    return results


def ensemble_row(args, names: list[str], members: dict[str, dict]) -> dict:
    """The cross-model ensemble of the runs of `names` (run before): experiments.ensemble_runs'
    test figures, and its wall time plus its members'."""
    parts = names + (["TF-IDF"] if args.ensemble_text_logreg else [])
    label = ", ".join(parts[:-1]) + " and " + parts[-1]
    stem = "ensemble_runs-" + hashlib.sha1(f"{label} {args.ensemble_selection}".encode()).hexdigest()[:8]
    output = os.path.join(args.workdir, stem + ".json")  # one file per ensemble asked for
    wall = os.path.join(args.workdir, stem + "-wall.json")
    command = [sys.executable, "-m", "experiments.ensemble_runs",
               *(f"--workdir={row_dir(args.workdir, n)}" for n in names), f"--output={output}",
               f"--selection={args.ensemble_selection}"] + (["--text_logreg"] if args.ensemble_text_logreg else [])
    if not os.path.exists(output):
        print(f"[ensemble] {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, timeout=args.timeout_minutes * 60)
        with open(wall, "w") as f:
            json.dump({"wall_seconds": round(time.perf_counter() - started, 1)}, f)
    with open(output) as f:
        combined = json.load(f)
    seconds = json.load(open(wall))["wall_seconds"] if os.path.exists(wall) else 0.0
    seconds += sum(members[n]["wall_seconds"] or 0.0 for n in names)  # the members' runs, then the average
    figures = combined["test"]["ensemble"]
    weights = "" if args.ensemble_selection == "equal" else ", weights chosen on validation"
    return {"model": f"ensemble of the {label} runs{weights}", "seeds": None, "wall_seconds": round(seconds, 1),
            "docs_per_s": None, **{m: round(figures[m], 4) for m in METRICS}, **{f"{m}_std": None for m in METRICS},
            "ensemble": None, "weights": dict(zip(combined["members"], combined["weights"]))}


def summarise(name: str, results: dict) -> dict:
    mean, std = results["members_mean"], results["members_std"]
    row = {"model": name, "seeds": results["num_members"], "wall_seconds": results.get("wall_seconds"),
           "docs_per_s": results["model_docs_per_s"] or results["docs_per_s"]}
    for m in METRICS:
        row[m], row[f"{m}_std"] = round(mean[m], 4), round(std[m], 4)
    ensemble = results["num_members"] > 1  # test: the ensemble of the members
    row["ensemble"] = {m: round(results["test"][m], 4) for m in METRICS} if ensemble else None
    return row


def markdown(rows: list[dict], baselines: dict) -> str:
    lines = ["| model | test accuracy | macro-F1 | RMSE | ensemble acc / F1 / RMSE | wall (K seeds) |",
             "|---|---|---|---|---|---|"]
    for name, key in (("majority", "majority"), ("mean rating", "mean_rating"), ("TF-IDF + logistic regression",
                                                                             "text_logreg"),
                      ("TF-IDF + user/product + logistic regression", "text_logreg_user_product")):
        b = baselines.get(key, {})
        if "accuracy" in b:  # the text baselines: real files only (the synthetic corpus has its references)
            lines.append(f"| {name} | {b['accuracy']:.3f} | {b['macro_f1']:.3f} | {b['rmse']:.3f} | | |")
    for r in rows:
        cells = [f"{r[m]:.3f}" + (f" ± {r[f'{m}_std']:.3f}" if r[f"{m}_std"] is not None else "") for m in METRICS]
        ens = r["ensemble"]
        ensemble = f"{ens['accuracy']:.3f} / {ens['macro_f1']:.3f} / {ens['rmse']:.3f}" if ens else ""
        wall = f"{r['wall_seconds'] / 60:.1f} min" if r["wall_seconds"] else ""
        lines.append(f"| {r['model']} | {' | '.join(cells)} | {ensemble} | {wall} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(ROWS)
    together = [n.strip() for n in args.ensemble.split(",") if n.strip()]
    if together and len(together) + args.ensemble_text_logreg < 2:
        raise SystemExit(f"--ensemble={args.ensemble}: two or more rows (or one and --ensemble_text_logreg)")
    unknown = [n for n in names + together if n not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}: choose from {list(ROWS)}")
    rows, baselines = [], None
    for name in names:
        results = run_row(args, name)
        baselines = baselines or results["baselines"]
        rows.append(summarise(name, results))
        print(json.dumps(rows[-1]), flush=True)
    if together:
        members = {name: summarise(name, run_row(args, name)) for name in together}  # finished rows are read
        rows.append(ensemble_row(args, together, members))
        print(json.dumps(rows[-1]), flush=True)
    made = provenance.describe()
    print(provenance.line(made) + "\n")
    print(markdown(rows, baselines))
    print(json.dumps({"data": args.data, "seeds": args.seeds, "baselines": baselines, "rows": rows,
                      "provenance": made}))


if __name__ == "__main__":
    main()
