"""The order and the threads in which the flow starts stale stages (reverie.orchestration.StageQueue):
a DAG like the pipeline's, with a fake clock of finishing stages, no DVC."""
import pytest

from reverie.orchestration import Plan, StageQueue

# generate -> validate -> base -> tune@x -> evaluate@x; chance after validate; report after all
ORDER = ("generate", "validate", "base", "tune@a", "tune@b", "tune@c", "evaluate@a", "evaluate@b", "evaluate@c",
         "chance", "report")
UPSTREAM = {"generate": set(), "validate": {"generate"}, "base": {"validate"},
            "tune@a": {"base"}, "tune@b": {"base"}, "tune@c": {"base"},
            "evaluate@a": {"tune@a"}, "evaluate@b": {"tune@b"}, "evaluate@c": {"tune@c"},
            "chance": {"validate"}, "report": {"evaluate@a", "evaluate@b", "evaluate@c", "chance"}}


def plan(stale=ORDER):
    return Plan(ORDER, frozenset(stale), {k: frozenset(v) for k, v in UPSTREAM.items()})


def drive(queue, finish_order):
    """Starts what the queue allows, finishes stages in the given order of preference (the first
    running one in the list), and records (stage, threads, what else was running)."""
    log = []
    while not queue.done():
        for stage, threads in queue.start():
            log.append((stage, threads, frozenset(queue.running - {stage})))
        stage = next(s for s in finish_order if s in queue.running)
        queue.finish(stage)
    return log


def test_one_at_a_time_is_dvc_repro_order_with_every_core():
    log = drive(StageQueue(plan(), parallel=1, cpus=2), list(ORDER))
    assert [s for s, _, _ in log] == list(ORDER)
    assert {t for _, t, _ in log} == {2} and all(not others for _, _, others in log)


def test_two_at_a_time_pairs_the_runs_and_keeps_the_base_step_alone_with_every_core():
    log = drive(StageQueue(plan(), parallel=2, cpus=2), list(ORDER))
    started = [s for s, _, _ in log]
    assert started == list(ORDER)  # still DVC's order: in-order issue
    by_stage = {s: (t, others) for s, t, others in log}
    assert by_stage["base"] == (2, frozenset())  # its dependants wait for it: alone, both cores
    assert by_stage["generate"] == (2, frozenset()) and by_stage["validate"][0] == 2
    assert by_stage["tune@a"][0] == 1 and by_stage["tune@b"] == (1, frozenset({"tune@a"}))
    # no stage ever runs before its upstream stages finished, and never more than two at once
    done = set()
    for stage, _, others in log:
        assert len(others) <= 1
    queue = StageQueue(plan(), parallel=2, cpus=2)
    while not queue.done():
        for stage, _ in queue.start():
            assert UPSTREAM[stage] <= done, stage
        finished = sorted(queue.running)[0]
        queue.finish(finished)
        done.add(finished)


def test_a_stage_waits_for_the_one_before_it_to_start_even_when_it_is_ready():
    # chance is ready right after validate, but starts only after every evaluate@ has started
    queue = StageQueue(plan(), parallel=2, cpus=4)
    log = drive(queue, ["generate", "validate", "base", "tune@a", "tune@b", "tune@c", "evaluate@a", "evaluate@b",
                        "evaluate@c", "chance", "report"])
    started = [s for s, _, _ in log]
    assert started.index("chance") > started.index("evaluate@c")
    assert {t for s, t, others in log if others} == {2}  # 4 cores shared by 2


def test_only_stale_stages_run_and_up_to_date_upstream_does_not_block():
    queue = StageQueue(plan(stale={"tune@b", "evaluate@b", "report"}), parallel=2, cpus=2)
    log = drive(queue, ["tune@b", "evaluate@b", "report"])
    assert [s for s, _, _ in log] == ["tune@b", "evaluate@b", "report"]
    assert all(t == 2 for _, t, _ in log)


def test_parallel_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        StageQueue(plan(), parallel=0, cpus=2)
