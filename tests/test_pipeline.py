"""The whole DAG through `dvc repro` on a tiny config (one shared run for the session)."""
import json
import os

import pytest

from tests.conftest import dvc


def test_repro_runs_every_stage_and_writes_the_outputs(repro_project):
    project, first = repro_project
    for stage in ("generate", "validate", "base", "tune@response-0", "tune@pos_neg-0",
                  "evaluate@response-0", "evaluate@pos_neg-0", "chance", "report"):
        assert f"Running stage '{stage}'" in first.stdout, (stage, first.stdout[-3000:], first.stderr[-3000:])
    gen = json.loads((project / "metrics/generate.json").read_text())
    assert gen["train_images"] == 60 and gen["eval_images"] == 16
    assert gen["records"] + gen["quarantined"] == gen["raw_records"]
    assert gen["filter_precision"] >= 0.95 and gen["filter_recall"] >= 0.95
    val = json.loads((project / "metrics/validate.json").read_text())
    assert val["success"] and val["failed"] == 0 and val["expectations"] >= 10
    assert (project / "reports/data_docs/index.html").exists()
    assert (project / "data/split/train.jsonl").exists() and (project / "data/split/eval.jsonl").exists()
    tune = json.loads((project / "metrics/tune/pos_neg-s0.json").read_text())
    for key in ("train_loss", "response_loss", "rationale_loss", "tokens_per_s", "padding_fraction"):
        assert tune[key] == tune[key], key  # present and not NaN
    ev = json.loads((project / "metrics/eval/response-s0.json").read_text())
    for key in ("pope.random.f1", "pope.popular.f1", "pope.adversarial.f1", "pope.mean_f1", "mme.score",
                "mmbench.circular_accuracy", "short_answer.accuracy"):
        assert key in ev, key
    base = json.loads((project / "metrics/base.json").read_text())
    for key in ("heldout_existence_accuracy", "heldout_yes_ratio", "shuffled_image_accuracy", "description_object_recall"):
        assert 0 <= base[key] <= 1, key
    assert base["passed"] is True and base["vision_steps"] > 0  # the tiny config turns the gate off
    chance = json.loads((project / "metrics/chance.json").read_text())
    assert chance["always_yes"]["pope.random.yes_ratio"] == 1.0
    assert chance["always_yes"]["pope.random.accuracy"] == 0.5  # POPE is balanced
    report = (project / "reports/report.md").read_text()
    assert "| response |" in report and "| pos_neg |" in report and "| *blind prior* |" in report
    assert (project / "reports/ablation.png").stat().st_size > 1000
    ablation = json.loads((project / "reports/ablation.json").read_text())
    row = ablation["variants"]["pos_neg"]["pope.random.f1"]
    assert {"mean", "std", "ci95", "diff_mean", "diff_ci95", "p_value"} <= set(row)
    # a student trained for seconds on 60 images does not see: the comparison must say so
    baseline = ablation["variants"]["response"]
    accuracy = sum(baseline[f"pope.{s}.accuracy"]["mean"] for s in ("random", "popular", "adversarial")) / 3
    yes_ratio = sum(baseline[f"pope.{s}.yes_ratio"]["mean"] for s in ("random", "popular", "adversarial")) / 3
    pope_column_void = not ablation["column_checks"]["pope.mean_f1"]["valid"]
    assert ablation["void"] is (accuracy < 0.7 or not 0.2 <= yes_ratio <= 0.8 or pope_column_void)
    assert {"valid", "invalid_reason", "mde"} <= set(ablation["column_checks"]["reasoning.accuracy"])
    assert ablation["void"] is report.splitlines()[2].startswith("> **VOID")


def test_a_second_repro_is_up_to_date(repro_project):
    project, _ = repro_project
    second = dvc(project, "repro")
    assert "Running stage" not in second.stdout
    status = dvc(project, "status")
    assert "up to date" in status.stdout


def test_a_params_typo_fails_before_any_work(repro_project, tmp_path):
    import shutil

    # in a copy: DVC removes a stage's outputs before its command runs, and the shared project's
    # must stay for the other tests
    project = tmp_path / "clone"
    shutil.copytree(repro_project[0], project, symlinks=True)
    params = (project / "params.yaml").read_text()
    (project / "params.yaml").write_text(params.replace("noise_rate:", "noise_rat:"))
    result = dvc(project, "repro", "generate", check=False)
    assert result.returncode != 0
    assert "generate.noise_rat" in result.stdout + result.stderr


def test_mlflow_holds_one_run_per_variant_and_seed_with_its_contents(repro_project):
    import mlflow

    project, _ = repro_project
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reverie")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.variant != 'base'")
    assert sorted((r.data.tags["variant"], r.data.tags["seed"]) for r in runs) == [("pos_neg", "0"), ("response", "0")]
    run = next(r for r in runs if r.data.tags["variant"] == "pos_neg")
    assert run.data.tags["dvc.stage"] == "tune@pos_neg-0" and run.data.tags["git_commit"]
    assert run.data.params["tune.lora.r"] == "4" and run.data.params["variant"] == "pos_neg"
    losses = client.get_metric_history(run.info.run_id, "response_loss")
    assert len(losses) >= 1 and "rationale_loss" in run.data.metrics and "lr" in run.data.metrics
    assert "eval.pope.adversarial.f1" in run.data.metrics  # evaluate logged into the same run
    inputs = run.inputs.dataset_inputs
    assert inputs and any(t.key == "dvc_md5" and t.value for t in inputs[0].tags)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/adapter_config.json", "model/adapter_model.safetensors", "model/tokenizer.json"} <= artifacts
    info = json.loads((project / "models/pos_neg-s0/mlflow_run.json").read_text())
    assert info["run_id"] == run.info.run_id


def test_compare_tables_every_run_and_leaves_the_environment_alone(repro_project, monkeypatch):
    from reverie.compare import comparison

    project, _ = repro_project
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    table = comparison(f"sqlite:///{project / 'mlflow.db'}", "reverie")
    assert sorted(zip(table["variant"], table["seed"])) == [("pos_neg", "0"), ("response", "0")]
    assert table["pope.adversarial.f1"].between(0, 1).all() and table["final.train_loss"].gt(0).all()
    assert "MLFLOW_TRACKING_URI" not in os.environ  # DVC stages started later read their own params


def test_saved_predictions_rescore_without_the_model(repro_project, tmp_path):
    import subprocess
    import sys

    project, _ = repro_project
    out = tmp_path / "rescored.json"
    subprocess.run([sys.executable, "-m", "reverie.evaluation.rescore", str(project / "predictions/response-s0.jsonl"),
                    "--out", str(out)], check=True, capture_output=True)
    rescored = json.loads(out.read_text())
    original = json.loads((project / "metrics/eval/response-s0.json").read_text())
    for key in ("pope.random.f1", "pope.mean_f1", "mme.score", "mmbench.circular_accuracy", "short_answer.accuracy"):
        assert rescored[key] == original[key], key  # the stage's figures come back from the file alone
    # and they are POPE's, recounted here from the saved answers (not by the scorer under test)
    rows = [json.loads(line) for line in (project / "predictions/response-s0.jsonl").read_text().splitlines()]
    f1s = [pope_f1_recount([r for r in rows if r["benchmark"] == "pope" and r["split"] == split])
           for split in ("random", "popular", "adversarial")]
    assert [rescored[f"pope.{s}.f1"] for s in ("random", "popular", "adversarial")] == pytest.approx(f1s)
    assert rescored["pope.mean_f1"] == pytest.approx(sum(f1s) / 3)


def pope_f1_recount(rows: list[dict]) -> float:
    """POPE's reference rule: an answer is "no" when the words before its first period hold
    "no", "No" or "not"; F1 of the "yes" class."""
    said_yes = [not {"no", "No", "not"} & set(r["answer"].split(".")[0].replace(",", "").split(" ")) for r in rows]
    truly_yes = [r["label"] == "yes" for r in rows]
    tp = sum(p and t for p, t in zip(said_yes, truly_yes))
    predicted, actual = sum(said_yes), sum(truly_yes)
    return 2 * tp / (predicted + actual) if tp else 0.0
