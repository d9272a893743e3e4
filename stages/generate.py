"""DVC stage `generate`: synthetic world + teacher + judge -> images, scene graphs, records."""
import json
import subprocess
import sys
from pathlib import Path

from reverie.io import write_json
from reverie.stage import StageFailed, params_from, parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--out", default="data", help="data folder: images/, scenes/, records/")
    p.add_argument("--metrics", default="metrics/generate.json")
    p.add_argument("--dry-run", action="store_true",
                   help="print the calls a model teacher would pay for, their tokens and price; ask nothing, write nothing")
    args = p.parse_args()
    with stage("generate"):
        from reverie.generate import generate_dataset, preview_generation

        params = params_from(args)
        if args.dry_run:
            print(json.dumps(preview_generation(params), indent=2))
            return
        if params.generate.shards > 1:
            # one Prefect task per shard on a local Dask cluster; the same outputs. The fan-out
            # is a flow (flows/generate_fanout.py), and stages drive no flow in-process: it runs
            # as its own process and writes the metrics file itself
            done = subprocess.run([sys.executable, "-m", "flows.generate_fanout", "--params", args.params,
                                   "--out", args.out, "--workers", str(params.generate.workers),
                                   "--metrics", args.metrics])
            if done.returncode:
                raise StageFailed(f"the sharded generation flow exited with status {done.returncode}")
            metrics = json.loads(Path(args.metrics).read_text())
        else:
            from reverie.teachers.chat_transport import TeacherConfigError

            try:
                result = generate_dataset(params, args.out)
            except TeacherConfigError as exc:  # a dead endpoint, a rejected key: no image could succeed
                raise StageFailed(str(exc)) from None
            metrics = result.metrics
            write_json(args.metrics, metrics)
        m = metrics
        print(f"[generate] {m['records']} records kept of {m['raw_records']} ({m['quarantined']} quarantined); "
              f"judge precision {m['filter_precision']:.3f} recall {m['filter_recall']:.3f}; {m['records_per_s']:.0f} records/s")


if __name__ == "__main__":
    main()
