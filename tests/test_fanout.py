"""Generation fanned out through Prefect's Dask task runner gives the same data as one process."""
import hashlib
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_params_dict

OUTPUTS = ("records/raw.jsonl", "records/filtered.jsonl", "records/quarantine.jsonl", "scenes/scenes.jsonl")
TIMINGS = ("seconds", "records_per_s")


def test_shards_are_contiguous_balanced_and_merge_back_in_order():
    from reverie.fanout import merge_shards, split_shards

    items = list(range(10))
    parts = split_shards(items, 4)
    assert [len(p) for p in parts] == [3, 3, 2, 2] and sum(parts, []) == items
    assert split_shards(items[:2], 4) == [[0], [1]]  # never an empty shard
    assert split_shards([], 3) == [[]]
    shuffled = [(2, ["c"]), (0, ["a", "b"]), (1, [])]  # shards finish in any order
    assert merge_shards(shuffled) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="missing or repeated"):
        merge_shards([(0, ["a"]), (2, ["c"])])


def test_shards_are_settings_and_only_for_the_synthetic_world():
    from reverie.settings import Params, ParamsError, load_params

    assert Params().generate.shards == 1 and Params().generate.workers == 2
    data = tiny_params_dict()
    data["generate"].update(teacher="openai", shards=4)
    with pytest.raises(Exception, match="shards > 1"):
        Params.model_validate(data)
    with pytest.raises(ParamsError, match="generate.shard"):
        load_params(Path(__file__).resolve().parents[1] / "params.yaml", {"generate.shard": 2})


def _digest(root: Path, relpath: str) -> str:
    return hashlib.sha256((root / relpath).read_bytes()).hexdigest()


def test_a_two_worker_dask_cluster_writes_the_same_data_as_one_process(tmp_path, prefect_harness):
    from flows.generate_fanout import generate_on_local_dask
    from reverie.generate import generate_dataset
    from reverie.settings import load_params

    data = tiny_params_dict(tmp_path)
    data["world"].update(train_images=120, eval_images=30)
    data["generate"].update(shards=4, workers=2)
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(data, sort_keys=False))
    params = load_params(params_path)

    started = time.perf_counter()
    one = generate_dataset(params, tmp_path / "one", progress=False)
    one_s = time.perf_counter() - started
    started = time.perf_counter()
    sharded = generate_on_local_dask(str(params_path), str(tmp_path / "sharded"), workers=2)
    sharded_s = time.perf_counter() - started
    print(f"\n[fanout] one process {one_s:.2f}s; 4 shards on 2 Dask workers {sharded_s:.2f}s "
          f"(flow, cluster start included; shards alone {sharded.metrics['seconds']:.2f}s)")

    for relpath in OUTPUTS:
        assert _digest(tmp_path / "sharded", relpath) == _digest(tmp_path / "one", relpath), relpath
    images = sorted(p.relative_to(tmp_path / "one").as_posix() for p in (tmp_path / "one" / "images").rglob("*.png"))
    assert len(images) == 150
    assert images == sorted(p.relative_to(tmp_path / "sharded").as_posix()
                            for p in (tmp_path / "sharded" / "images").rglob("*.png"))
    assert all(_digest(tmp_path / "sharded", p) == _digest(tmp_path / "one", p) for p in images)
    assert sharded.raw == one.raw
    assert {k: v for k, v in sharded.metrics.items() if k not in TIMINGS} == \
        {k: v for k, v in one.metrics.items() if k not in TIMINGS}
    # every image's records, no duplicate, none lost
    ids = [r["id"] for r in sharded.raw]
    assert len(ids) == len(set(ids)) == 150 * params.generate.questions_per_image

    # the flow ran one task per shard, each of them to completion
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="shard-")))
    assert sorted(r.name for r in runs) == [f"shard-{i}" for i in range(4)]
    assert {r.state.type.value for r in runs} == {"COMPLETED"}
