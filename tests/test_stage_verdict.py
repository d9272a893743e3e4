"""A stage that refuses its own result is not retried by the flow; one that crashed is."""
from prefect.states import Failed

from reverie.stage import StageFailed, StageVerdict, verdict_in


def test_the_verdict_line_is_found_in_dvc_s_output_and_a_crash_has_none():
    verdict = [
        "base:  95%|#########5| 2323/2438 [04:32<00:13,  8.48step/s, loss=0.349]",
        "[base] FAILED: heldout_seeing_accuracy 0.612 (present kinds found 0.99, ...) is below base.min_seeing_accuracy = 0.9",
        "ERROR: failed to reproduce 'base': failed to run: .venv/bin/python -m stages.base ..., exited with 1",
    ]
    assert verdict_in(verdict) == verdict[1]
    assert verdict_in(["[evaluate@pos_neg-s2] FAILED: predictions/x.jsonl line 3 is not JSON"]).startswith("[evaluate@")
    crashed = ["base:  41%|####1     | 989/2438", "Killed", "ERROR: failed to reproduce 'base': exited with -9"]
    assert verdict_in(crashed) is None
    assert verdict_in(["[base] loaded 3000 scenes; the FAILED: count is 0 here"]) is None  # not a stage's verdict


def test_the_flow_retries_a_crash_but_not_a_verdict():
    from flows.pipeline import reproduce_stage, retry_unless_verdict

    assert reproduce_stage.with_options(retries=3).retry_condition_fn is retry_unless_verdict  # as the flow sets it
    assert retry_unless_verdict(None, None, Failed(data=StageFailed("stage 'base' failed (exit 255)"))) is True
    assert retry_unless_verdict(None, None, Failed(data=StageVerdict("stage 'base' failed (exit 255)"))) is False
    assert retry_unless_verdict(None, None, Failed(data=RuntimeError("dvc lock"))) is True
