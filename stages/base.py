"""DVC stage `base`: the shared base student every variant starts from (trained once)."""
from reverie.io import write_json
from reverie.stage import params_from, parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", default="data")
    p.add_argument("--split", default="data/split")
    p.add_argument("--out", default="models/base")
    p.add_argument("--metrics", default="metrics/base.json")
    args = p.parse_args()
    with stage("base"):
        from reverie.tune import is_main_process, train_base

        metrics = train_base(params_from(args), args.data, args.split, args.out)
        if not is_main_process():
            return
        write_json(args.metrics, metrics)
        print(f"[base] saved {args.out}: loss {metrics.get('train_loss', float('nan')):.3f}, "
              f"{metrics.get('tokens_per_s', 0):.0f} tokens/s, {metrics.get('train_seconds', 0):.0f} s")


if __name__ == "__main__":
    main()
