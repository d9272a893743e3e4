"""MLflow as users open it: the experiment is a machine-learning one, and a rerun of a stage
supersedes the run it replaces (kept, tagged) so that `reverie.compare` shows the current run."""
import sys

import pytest

from tests.conftest import tiny_params_dict

KIND = "mlflow.experimentKind"
SUPERSEDED = "reverie.superseded"


@pytest.fixture
def store(tmp_path, monkeypatch):
    """The tracking URI of an empty SQLite store; no run is left active after the test."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield f"sqlite:///{tmp_path / 'mlflow.db'}"
    while mlflow.active_run():
        mlflow.end_run()


def start(store, name, variant, seed, run_id=None):
    from reverie.tracking import RunLogger

    return RunLogger(store, "reverie", name, {"variant": variant, "seed": str(seed)}, run_id)


def one_run(store, name, variant, seed, loss, status="FINISHED"):
    logger = start(store, name, variant, seed)
    logger.log_metrics({"final.train_loss": loss})
    logger.end(status)
    return logger.run_id


def client(store):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store)


def tags_of(store, run_id):
    return client(store).get_run(run_id).data.tags


def test_the_experiment_opens_as_a_machine_learning_one(store, tmp_path):
    from types import SimpleNamespace

    from reverie.tracking import run_links

    # a store made before the tag was set: its experiment gets it when the next run starts
    older = client(store).create_experiment("reverie")
    assert KIND not in client(store).get_experiment(older).tags
    run_id = one_run(store, "response-s0", "response", 0, 1.0)
    experiment = client(store).get_experiment_by_name("reverie")
    # the value MLflow 3 writes for a "Machine learning" experiment (mlflow/server/js: the UI's
    # setExperimentTag of mlflow.experimentKind, its CUSTOM_MODEL_DEVELOPMENT kind)
    assert experiment.experiment_id == older and experiment.tags[KIND] == "custom_model_development"
    # MLflow 3.17's UI opens by its workflow switch: the run links choose the machine-learning one
    params = SimpleNamespace(project=SimpleNamespace(mlflow_tracking_uri=store),
                             orchestration=SimpleNamespace(host="127.0.0.1", mlflow_port=5000))
    link = run_links(params, [run_id])[run_id]
    assert link == f"http://127.0.0.1:5000/#/experiments/{older}/runs/{run_id}?workflowType=machine_learning"
    # and the address make serve and make mlflow-ui print opens the experiment's runs table
    # (tests/test_serve.py asks a real server for it)


def test_a_rerun_supersedes_the_older_run_and_compare_lists_only_the_current_one(store):
    from reverie.compare import comparison

    first = one_run(store, "response-s0", "response", 0, 2.0)
    other_seed = one_run(store, "response-s1", "response", 1, 3.0)
    base = one_run(store, "base", "base", 0, 5.0)
    second = one_run(store, "response-s0", "response", 0, 1.0)  # `dvc repro -f tune@response-0`
    rebased = one_run(store, "base", "base", 0, 4.0)
    assert second != first and rebased != base
    # the older run is kept, with its metrics, and names the run that replaced it
    old = client(store).get_run(first)
    assert old.info.lifecycle_stage == "active" and old.data.metrics["final.train_loss"] == 2.0
    assert old.data.tags[SUPERSEDED] == second and tags_of(store, base)[SUPERSEDED] == rebased
    assert all(SUPERSEDED not in tags_of(store, run) for run in (second, other_seed, rebased))

    table = comparison(store, "reverie")
    assert list(zip(table["variant"], table["seed"], table["run_id"])) == [
        ("response", "0", second), ("response", "1", other_seed)]
    assert table.set_index("run_id").loc[second, "final.train_loss"] == 1.0  # the rerun's, not the stale run's
    assert "superseded_by" not in table.columns


def test_compare_all_shows_the_history_with_the_run_that_superseded_each(store, tmp_path, monkeypatch, capsys):
    import yaml

    from reverie import compare

    first = one_run(store, "response-s0", "response", 0, 2.0)
    second = one_run(store, "response-s0", "response", 0, 1.0)
    table = compare.comparison(store, "reverie", history=True)
    assert list(table["run_id"]) == [first, second]  # oldest first
    assert list(table["superseded_by"]) == [second, ""]
    assert list(table["final.train_loss"]) == [2.0, 1.0]

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params_dict(tmp_path)))  # the store of `store`
    for flag, shown in (([], [second]), (["--all"], [first, second])):
        monkeypatch.setattr(sys, "argv", ["reverie.compare", "--params", str(params), *flag])
        compare.main()
        out = capsys.readouterr().out
        assert [run for run in (first, second) if run in out] == shown, out
        assert ("superseded_by" in out) == bool(flag)


def test_a_resumed_run_and_evaluate_logging_by_id_supersede_nothing(store):
    from reverie.compare import comparison

    crashed = one_run(store, "response-s0", "response", 0, 2.0, status="KILLED")
    resumed = start(store, "response-s0", "response", 0)  # the stage resumed: the same run goes on
    assert resumed.run_id == crashed
    resumed.log_metrics({"final.train_loss": 1.5})
    resumed.end()
    assert SUPERSEDED not in tags_of(store, crashed)

    # evaluate logs into the tune run by its id (models/<run>/mlflow_run.json), also after a rerun
    from reverie.tracking import RunLogger

    rerun = one_run(store, "response-s0", "response", 0, 1.0)
    evaluate = RunLogger(store, "reverie", "response-s0", {}, run_id=rerun)
    evaluate.log_metrics({"pope.random.f1": 0.75})
    evaluate.end()
    assert tags_of(store, crashed)[SUPERSEDED] == rerun and SUPERSEDED not in tags_of(store, rerun)
    # and into an older run (its model restored by `dvc checkout` of an older commit): no
    # run is marked for that, the current one stays current
    again = RunLogger(store, "reverie", "response-s0", {}, run_id=crashed)
    again.log_metrics({"pope.random.f1": 0.5})
    again.end()
    assert tags_of(store, crashed)[SUPERSEDED] == rerun and SUPERSEDED not in tags_of(store, rerun)
    table = comparison(store, "reverie")
    assert list(table["run_id"]) == [rerun] and table["pope.random.f1"].tolist() == [0.75]
