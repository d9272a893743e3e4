"""DVC stage `validate`: Great Expectations quality gates, then the clean train/eval split."""
from reverie.io import write_json
from reverie.stage import StageFailed, params_from, parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", default="data")
    p.add_argument("--split", default="data/split")
    p.add_argument("--reports", default="reports")
    p.add_argument("--metrics", default="metrics/validate.json")
    args = p.parse_args()
    with stage("validate"):
        from reverie.validate import validate_records

        outcome = validate_records(params_from(args).validate_, args.data, args.split, args.reports)
        write_json(args.metrics, outcome.metrics)
        m = outcome.metrics
        print(f"[validate] {m['expectations']} expectations, {m['failed']} failed; "
              f"{m['train_records']} train / {m['eval_records']} eval records, {m['quarantined']} quarantined")
        if outcome.failed:
            raise StageFailed("expectations failed: " + ", ".join(outcome.failed) + f" (see {args.reports}/data_docs)")


if __name__ == "__main__":
    main()
