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


def drive_devices(queue, finish_order):
    """Like drive, with each started stage's devices and what else held devices then."""
    log = []
    while not queue.done():
        for stage, _ in queue.start():
            others = {s: queue.held[s] for s in queue.running - {stage}}
            log.append((stage, queue.held[stage], others))
        stage = next(s for s in finish_order if s in queue.running)
        queue.finish(stage)
    return log


def test_devices_are_placed_per_stage_and_never_shared():
    needs = {"base": 2, "tune@a": 1, "tune@b": 1, "tune@c": 1, "evaluate@a": 1, "evaluate@b": 1, "evaluate@c": 1}
    queue = StageQueue(plan(), parallel=8, cpus=2, devices=["g0", "g1", "g2"], needs=needs)
    log = drive_devices(queue, list(ORDER))
    for stage, held, others in log:
        assert len(held) == needs.get(stage, 0), stage
        for other, theirs in others.items():
            assert not set(held) & set(theirs), (stage, other)
    by_stage = {stage: held for stage, held, _ in log}
    assert by_stage["base"] == ("g0", "g1") and by_stage["generate"] == ()
    # three one-device runs at once on three devices: the tune@ runs fill them all
    assert {by_stage["tune@a"], by_stage["tune@b"], by_stage["tune@c"]} == {("g0",), ("g1",), ("g2",)}
    assert queue.free == ["g0", "g1", "g2"] and queue.held == {}


def test_a_stage_waits_for_devices_and_a_failed_stage_frees_them():
    needs = {"tune@a": 2, "tune@b": 2, "tune@c": 2}
    queue = StageQueue(plan(["tune@a", "tune@b", "tune@c"]), parallel=3, cpus=2, devices=["0", "1", "2", "3"],
                       needs=needs)
    assert [s for s, _ in queue.start()] == ["tune@a", "tune@b"]  # four devices: two runs of two
    assert queue.start() == []  # tune@c waits for devices although a slot is free
    queue.finish("tune@b")  # the flow calls finish for a failed stage too
    assert [s for s, _ in queue.start()] == ["tune@c"] and queue.held["tune@c"] == ("2", "3")


def test_a_stage_that_needs_more_devices_than_declared_is_refused_up_front():
    with pytest.raises(ValueError, match="tune@a needs 4"):
        StageQueue(plan(), parallel=2, cpus=2, devices=["0", "1"], needs={"tune@a": 4})
    # without declared devices (a CPU run) nothing is placed
    queue = StageQueue(plan(), parallel=2, cpus=2, needs={"tune@a": 4})
    assert all(n == 0 for n in queue.needs.values())
