"""Generation fanned out over processes: one Prefect task per shard of images, run by
Prefect's Dask task runner on a local Dask cluster, writing exactly what
`reverie.generate.generate_dataset` writes (the same records, byte for byte).

`python -m flows.generate_fanout [--params params.yaml] [--out data] [--workers 2] [--shards N] [--metrics F]`;
the DVC stage `generate` runs it, as a process of its own, when params set `generate.shards` above 1.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_dask import DaskTaskRunner

from reverie.fanout import generate_shard, merge_shards, shard_payloads
from reverie.generate import GenerateResult, finish_dataset


def dask_runner(workers: int) -> DaskTaskRunner:
    """A local cluster of `workers` single-threaded processes (rendering and teaching hold
    the GIL, so threads would not run shards side by side)."""
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "processes": True, "threads_per_worker": 1})


# no cache and no persisted result: a shard is cheap to redo, and its records go straight back
# to the flow. A retry is safe: a shard's records and PNGs depend on its images alone.
@task(name="generate-shard", task_run_name="shard-{index}", retries=1, cache_policy=NO_CACHE, persist_result=False)
def generate_shard_task(index: int, params_dump: dict, scene_jsons: list[dict], out_dir: str) -> tuple[int, list[dict]]:
    return index, generate_shard(params_dump, scene_jsons, out_dir)


@flow(name="reverie-generate-shards-on-runner", task_runner=dask_runner(2), persist_result=False)
def generate_shards_on_runner(params_path: str, out: str, shards: int | None = None) -> GenerateResult:
    """Samples the world, maps the shard task over its shards on the flow's Dask cluster,
    merges the records in image order and writes what the one-process stage writes."""
    from reverie.settings import load_params

    logger = get_run_logger()
    params = load_params(params_path)
    out_dir = Path(out).resolve()
    scenes, params_dump, shard_scenes = shard_payloads(params, shards or params.generate.shards)
    logger.info(f"{len(scenes)} images in {len(shard_scenes)} shard(s)")
    started = time.perf_counter()
    futures = generate_shard_task.map(list(range(len(shard_scenes))), unmapped(params_dump), shard_scenes,
                                      unmapped(str(out_dir)))
    raw = merge_shards(futures.result())
    elapsed = time.perf_counter() - started
    return finish_dataset(scenes, raw, out_dir, elapsed)


@flow(name="reverie-generate-on-local-dask", persist_result=False)
def generate_on_local_dask(params_path: str = "params.yaml", out: str = "data", workers: int = 2,
                     shards: int | None = None) -> GenerateResult:
    """Generation on a local Dask cluster of `workers` processes, one task per shard
    (`generate.shards` from params, or `shards`). A task runner is fixed when a flow starts,
    so this flow runs `generate_shards_on_runner` as a subflow with a runner of `workers` processes."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    get_run_logger().info(f"local Dask cluster: {workers} worker process(es), one thread each")
    run = generate_shards_on_runner.with_options(task_runner=dask_runner(workers))
    if PREFECT_API_URL.value():
        return run(params_path, out, shards)
    # no Prefect server configured: this process runs a temporary one, and the Dask workers
    # must report their task runs to it rather than each start (and lose) one of their own
    with get_client(sync_client=True) as client:
        api_url = str(client.api_url)
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        return run(params_path, out, shards)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out", default="data")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--shards", type=int, default=None, help="default: generate.shards from params")
    p.add_argument("--metrics", default=None, help="also write the metrics to this JSON file (the generate stage reads it)")
    args = p.parse_args()
    m = generate_on_local_dask(args.params, args.out, args.workers, args.shards).metrics
    if args.metrics:
        from reverie.io import write_json

        write_json(args.metrics, m)
    print(f"[generate] {m['records']} records kept of {m['raw_records']} ({m['quarantined']} quarantined) "
          f"in {m['seconds']:.1f}s on {args.workers} worker(s)")


if __name__ == "__main__":
    main()
