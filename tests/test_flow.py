"""The Prefect flow drives the same DVC stages (one prefect_test_harness per session)."""
import json
import time

import pytest

from tests.conftest import FIRST_WARM_LOG, dvc, run_flow


def read_until(read, done, seconds: float):
    """`read()` again each second until `done(value)` or `seconds` have passed; the last value."""
    deadline = time.monotonic() + seconds
    while not done(value := read()) and time.monotonic() < deadline:
        time.sleep(1)
    return value


def test_flow_runs_every_stage_then_skips_them_all(flow_project, flow_first_run):
    first = flow_first_run.result()
    assert list(first) == ["generate", "validate", "base", "tune@response-0", "tune@pos_neg-0", "evaluate@response-0",
                           "evaluate@pos_neg-0", "chance", "report"]
    assert set(first.values()) == {"ran"}
    # the training and evaluation stages forked from the run's warm interpreter (reverie.warm);
    # generate and validate may start before it has imported torch & co., and then run on their own
    served = (flow_project / FIRST_WARM_LOG).read_text()
    assert "refused" not in served, served
    for stage in ("tune --variant response --seed 0", "evaluate --variant response --seed 0", "report"):
        assert f"served: stages.{stage}" in served, served
    state = run_flow(flow_project, return_state=True)
    second = state.result()
    assert set(second.values()) == {"skipped"}, second
    # DVC was asked once; no stage ran `dvc repro`, and the UI still lists each one as Skipped
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    expected = sorted((stage, "Skipped") for stage in first)
    # Prefect 3 sends task-run states to the server as events, written after the flow returns:
    # read until they have all arrived (on a loaded machine, seconds later)
    with get_client(sync_client=True) as client:
        def read():
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
            return sorted((t.name, t.state.name if t.state else None) for t in tasks)  # a state may lag its run

        seen = read_until(read, lambda seen: seen == expected, seconds=180)
    assert seen == expected
    # plain DVC agrees that the flow left everything up to date
    assert "Running stage" not in dvc(flow_project, "repro").stdout


def test_the_flow_publishes_the_ablation_table_and_run_links(flow_project, flow_first_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    # the artifacts reach the server after the flow returns, like its task-run states: on a
    # loaded machine (the whole suite) read until both are there
    with get_client(sync_client=True) as client:
        def read():
            return [client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
                    for key in ("ablation-table", "ablation-runs")]

        table, links = read_until(read, all, seconds=120)
    assert table and links, "the first flow run's artifacts did not arrive"
    assert table and table[0].type == "table" and "response" in str(table[0].data)
    assert links and "MLflow run" in links[0].data
    # each link opens the run in the experiment it is in (the project's, not MLflow's default 0)
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{flow_project / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["reverie"], output_format="list", filter_string="tags.variant = 'response'")[0]
    assert run.info.experiment_id != "0"
    assert f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}" in links[0].data


def test_mlflow_runs_carry_the_flow_run_id(flow_project, flow_first_run):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{flow_project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["reverie"], output_format="list")
    tuned = [r for r in runs if r.data.tags.get("variant") == "response"]
    assert tuned and all(r.data.tags.get("prefect.flow_run_id") for r in tuned)
    run = tuned[0]
    assert "eval.pope.random.f1" in run.data.metrics and "final.train_loss" in run.data.metrics
    assert run.data.tags["dvc.stage"] == "tune@response-0"


def test_a_failing_stage_fails_the_flow_with_its_name(flow_project, flow_first_run, tmp_path):
    import shutil

    # in a copy: DVC removes validate's outputs before the stage fails, and the shared project's
    # must stay for the other tests
    project = tmp_path / "clone"
    shutil.copytree(flow_project, project, symlinks=True)
    from reverie.stage import StageVerdict

    # a record gate that cannot pass: validate must fail, and the flow must say so; a verdict,
    # which a retry would only repeat (tests/test_stage_verdict.py)
    with pytest.raises(StageVerdict, match="validate"):
        run_flow(project, overrides={"validate.min_records": 10**9})


def test_overrides_are_written_to_params_and_validated(flow_project, flow_first_run):
    from reverie.settings import ParamsError

    with pytest.raises(ParamsError, match="validate.no_such_key"):
        run_flow(flow_project, overrides={"validate.no_such_key": 1})


def test_the_flow_places_each_stage_on_its_own_devices_and_frees_them(flow_project, flow_first_run):
    log = [json.loads(line) for line in (flow_project / ".reverie/placement.jsonl").read_text().splitlines()]
    first = str(flow_first_run.state_details.flow_run_id)
    spans = {}
    for entry in (e for e in log if e["flow_run"] == first):
        spans.setdefault(entry["stage"], {})[entry["event"]] = entry
    assert set(spans) == set(flow_first_run.result()) and all({"start", "end"} <= set(s) for s in spans.values())
    placed = {stage: tuple(s["start"]["devices"]) for stage, s in spans.items()}
    assert {placed[s] for s in ("base", "tune@response-0", "evaluate@response-0")} <= {("0",), ("1",)}
    # the two tune@ runs ran side by side (parallel_stages 2), each on a device of its own
    a, b = spans["tune@response-0"], spans["tune@pos_neg-0"]
    assert a["start"]["t"] < b["end"]["t"] and b["start"]["t"] < a["end"]["t"]
    assert {placed["tune@response-0"], placed["tune@pos_neg-0"]} == {("0",), ("1",)}
    assert placed["generate"] == placed["validate"] == placed["chance"] == placed["report"] == ()
    # no two stages that ran at the same time held a device in common
    for a, sa in spans.items():
        for b, sb in spans.items():
            overlap = a < b and sa["start"]["t"] < sb["end"]["t"] and sb["start"]["t"] < sa["end"]["t"]
            assert not (overlap and set(placed[a]) & set(placed[b])), (a, b, placed[a], placed[b])
    # each stage saw only its devices, and says so in its metrics
    for stage, metrics in (("base", "base"), ("tune@response-0", "tune/response-s0"), ("evaluate@response-0", "eval/response-s0")):
        recorded = json.loads((flow_project / f"metrics/{metrics}.json").read_text())["devices"]
        assert recorded == ",".join(placed[stage]), stage
    print("\nplacement log: " + "; ".join(f"{s} on {','.join(placed[s]) or '-'}" for s in spans))
