"""The base check during the base's training (base.check_every): points at the steps it names,
written where the stage and the report read them, resumed with the training, and without any
effect on the weights the base trains."""
import json

import pytest

from tests.conftest import merge, tiny_params_dict


def _data(params, tmp_path):
    from reverie.generate import generate_dataset
    from reverie.io import write_jsonl

    data = tmp_path / "data"
    result = generate_dataset(params, data, progress=False)
    kept = [r for r in result.raw if r["judge"]["consistent"]]
    write_jsonl(tmp_path / "split" / "train.jsonl", [r for r in kept if r["split"] == "train"])
    write_jsonl(tmp_path / "split" / "eval.jsonl", [r for r in kept if r["split"] == "eval"])
    return data


@pytest.mark.timeout(600)
def test_the_check_during_training_leaves_the_weights_as_they_were_and_its_last_point_is_the_final_check(tmp_path):
    from safetensors.torch import load_file

    from reverie.base_step import train_base
    from reverie.report import read_base_curve
    from reverie.settings import Params

    def params(every):
        return Params.model_validate(merge(tiny_params_dict(tmp_path), {"base": {"check_every": every}}))

    data = _data(params(0), tmp_path)
    runs = {}
    for every in (0, 10):
        out = tmp_path / f"base-{every}"
        metrics = train_base(params(every), data, tmp_path / "split", out, state_dir=tmp_path / f"state-{every}",
                             progress=False, check_csv=tmp_path / f"curve-{every}.csv")
        runs[every] = (metrics, load_file(str(out / "model.safetensors")), read_base_curve(tmp_path / f"curve-{every}.csv"))
    (_, without, none), (metrics, weights, curve) = runs[0], runs[10]
    assert none == []
    assert without.keys() == weights.keys()
    assert all((without[k] == weights[k]).all() for k in weights), "the check during training changed the weights"
    steps = [p["step"] for p in curve]
    total = metrics["steps"]
    assert steps == sorted({*range(10, total + 1, 10), total}), steps
    assert {p["phase"] for p in curve if p["step"] <= metrics["skills_phase_step"]} == {"seeing"}
    assert {p["phase"] for p in curve if p["step"] > metrics["skills_phase_step"]} == {"skills"}
    # the last point is the final check's figures: the same scenes, the same weights
    for key, name in (("seeing", "heldout_seeing_accuracy"), ("existence", "heldout_existence_accuracy"),
                      ("shuffled", "shuffled_image_accuracy"), ("choice", "heldout_choice_accuracy")):
        assert curve[-1][key] == pytest.approx(metrics[name]), key

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=params(10).project.mlflow_tracking_uri)
    history = client.get_metric_history(metrics["mlflow_run_id"], "check.seeing")
    assert sorted(m.step for m in history) == steps


def test_a_resumed_training_keeps_the_points_before_its_checkpoint_and_checks_on_the_same_steps(tmp_path, monkeypatch):
    import reverie.evaluation.perception as perception
    from reverie.base_step import BaseCheckCurve
    from reverie.settings import Params

    asked = []

    def fake_check(model, processor, scenes, *args, **kwargs):
        asked.append(len(scenes))
        return {"heldout_seeing_accuracy": 0.5 + len(asked) / 100, "heldout_existence_accuracy": 0.6,
                "heldout_yes_ratio": 0.5, "shuffled_image_accuracy": 0.5}

    monkeypatch.setattr(perception, "perception_check", fake_check)
    params = Params.model_validate(merge(tiny_params_dict(tmp_path), {"base": {"check_every": 100}}))

    class Model:
        def modules(self):
            return []

        def eval(self):
            return self

    def curve():
        return BaseCheckCurve(params, Model(), None, ["scene"] * 3, tmp_path, tmp_path / "ckpt", 150, 430, False)

    first = curve()
    assert [first.at(s) is not None for s in range(10, 260, 10)].count(True) == 2  # at 100 and 200
    resumed = curve()  # killed after step 250, resumed from its checkpoint at step 200
    assert sorted(resumed.points) == [100, 200]
    checked = [s for s in range(210, 431, 10) if resumed.at(s)]
    assert checked == [300, 400, 430]  # the last step always
    assert [resumed.points[s]["phase"] for s in (100, 200)] == ["seeing", "skills"]
    assert resumed.points[300]["choice"] is None  # not measured: empty in the CSV, not 0
    resumed.write_csv(tmp_path / "curve.csv")
    lines = (tmp_path / "curve.csv").read_text().splitlines()
    assert lines[0].startswith("step,phase,seeing,") and len(lines) == 6
    assert json.loads((tmp_path / "ckpt" / "check_curve.jsonl").read_text().splitlines()[0])["step"] == 100


def test_the_report_reads_the_curve_into_a_line_and_a_chart(tmp_path):
    from reverie.report import base_curve_chart, base_curve_text, read_base_curve

    rows = ["step,phase,seeing,existence,yes_ratio,shuffled,theme_fp,choice,choice_A,choice_B,choice_C,choice_D,choice_worst"]
    for step in range(100, 1001, 100):
        seeing = 0.5 if step < 700 else 0.98
        rows.append(f"{step},{'seeing' if step <= 300 else 'skills'},{seeing},{seeing},0.5,0.5,,0.25,1.0,0.0,0.0,0.0,0.0")
    (tmp_path / "c.csv").write_text("\n".join(rows) + "\n")
    points = read_base_curve(tmp_path / "c.csv")
    assert points[0]["theme_fp"] is None and points[-1]["seeing"] == 0.98
    text = base_curve_text(points)
    assert "seeing accuracy 0.50 / 0.50 / 0.98 / 0.98" in text, text
    assert "worst letter, 0.00 / 0.00 / 0.00 / 0.00 at steps 100 / 400 / 700 / 1000" in text, text
    assert "skills phase from about step 400" in text
    base_curve_chart(points, tmp_path / "c.png")
    base_curve_chart([], tmp_path / "empty.png")
    assert (tmp_path / "c.png").stat().st_size > 10_000 and (tmp_path / "empty.png").exists()
    assert read_base_curve(tmp_path / "missing.csv") == [] and base_curve_text([]) is None
