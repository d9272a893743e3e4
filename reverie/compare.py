"""Prints the MLflow comparison of every (variant, seed) run: `python -m reverie.compare`.

One run per variant and seed, the current one: a run that a rerun of its stage replaced (tagged
`reverie.superseded`) is left out; `--all` lists those too, with the run that superseded each."""
from __future__ import annotations

import argparse

COLUMNS = ["tags.variant", "tags.seed", "metrics.final.train_loss", "metrics.final.response_loss",
           "metrics.final.rationale_loss", "metrics.final.tokens_per_s", "metrics.pope.random.f1",
           "metrics.pope.popular.f1", "metrics.pope.adversarial.f1", "metrics.mme.score",
           "metrics.mme.perception.score", "metrics.mme.cognition.score",  # the real MME's, apart
           "metrics.mmbench.circular_accuracy", "metrics.scienceqa.accuracy", "metrics.short_answer.accuracy"]


def comparison(uri: str, experiment: str, history: bool = False):
    """The runs of every variant but `base`, by variant and seed: the current ones, or with
    `history` every run, oldest first, with `superseded_by` (empty for the current one)."""
    import mlflow

    from .tracking import SUPERSEDED_TAG, use_tracking_uri

    use_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string="tags.variant != 'base'",
                              order_by=["tags.variant", "tags.seed", "attributes.start_time"])
    superseded = f"tags.{SUPERSEDED_TAG}"
    if superseded not in runs.columns:
        runs[superseded] = None
    if not history:
        runs = runs[runs[superseded].isna()]
    if runs.empty:
        return runs
    present = [c for c in COLUMNS if c in runs.columns]
    table = runs[["run_id", *present]].copy()
    table.columns = [c.split(".", 1)[1] if "." in c else c for c in table.columns]
    if history:
        table.insert(3, "superseded_by", runs[superseded].fillna("").to_numpy())
    return table.reset_index(drop=True)


def main() -> None:
    from .settings import load_params
    from .tracking import tracking_uri

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--all", action="store_true", dest="history",
                   help="every run, also those a rerun superseded (with the run that superseded each)")
    args = p.parse_args()
    params = load_params(args.params)
    table = comparison(tracking_uri(params.project.mlflow_tracking_uri), params.project.mlflow_experiment,
                       history=args.history)
    if table.empty:
        print("no runs yet: run the pipeline first (make run)")
        return
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.3f}".format):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
