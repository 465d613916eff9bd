"""Understanding a trained run: where it errs, how calibrated it is, whether user and product
modelling helps rare users and products, which words its attention picks; several runs compared.

The numbers come from functions that return plain lists, dicts and numpy arrays, so a notebook
can use them without the HTML report:

    analyze_run(workdir)      every number of the report, one dict (jaxreviews.analysis.analyze)
    scores                    confusion matrix, per-class P/R/F1, calibration and ECE, cold-start
                              buckets, accuracy by length, samples to read (pure numpy)
    run_files                 learning curves from metrics.jsonl, config differences, parameters
                              per module, the test table with baselines and ensembles
    predictions               a run's pass over its own test split (`predict_split`), the attention
                              of chosen reviews, data statistics per split

`plots` (matplotlib, Agg) and `html` turn an analysis into the self-contained report.html that
`python -m experiments.report --workdir=RUN [--workdir=RUN2 ...]` writes. This layer sits on top
of data, models, train and `jaxreviews.run`; none of them imports it.
"""
from jaxreviews.analysis.analyze import analyze_run, analyze_runs
from jaxreviews.analysis.predictions import SplitPredictions, attention_samples, data_statistics, load_data, \
    predict_split
from jaxreviews.analysis.run_files import config_differences, learning_curves, parameter_counts, test_metrics
from jaxreviews.analysis.scores import by_length, confusion_matrix, count_buckets, per_class_scores, \
    rating_calibration, reliability, select_samples

__all__ = ["SplitPredictions", "analyze_run", "analyze_runs", "attention_samples", "by_length", "config_differences",
           "confusion_matrix", "count_buckets", "data_statistics", "learning_curves", "load_data",
           "parameter_counts", "per_class_scores", "predict_split", "rating_calibration", "reliability",
           "select_samples", "test_metrics"]
