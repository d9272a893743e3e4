"""The whole DAG through `dvc repro` on a tiny config (one shared run for the session)."""
import json

from tests.conftest import dvc


def test_repro_runs_every_stage_and_writes_the_outputs(repro_project):
    project, first = repro_project
    for stage in ("generate", "validate", "base", "tune@response-0", "tune@pos_neg-0",
                  "evaluate@response-0", "evaluate@pos_neg-0", "report"):
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
    report = (project / "reports/report.md").read_text()
    assert "| response |" in report and "| pos_neg |" in report
    assert (project / "reports/ablation.png").stat().st_size > 1000


def test_a_second_repro_is_up_to_date(repro_project):
    project, _ = repro_project
    second = dvc(project, "repro")
    assert "Running stage" not in second.stdout
    status = dvc(project, "status")
    assert "up to date" in status.stdout


def test_a_params_typo_fails_before_any_work(repro_project, tmp_path):
    project, _ = repro_project
    params = (project / "params.yaml").read_text()
    try:
        (project / "params.yaml").write_text(params.replace("noise_rate:", "noise_rat:"))
        result = dvc(project, "repro", "generate", check=False)
        assert result.returncode != 0
        assert "generate.noise_rat" in result.stdout + result.stderr
    finally:
        (project / "params.yaml").write_text(params)
