"""DVC stage `tune@<variant>-<seed>`: reflective tuning of one variant from the shared base."""
from reverie.io import write_json
from reverie.vocab import VARIANTS, run_name
from reverie.stage import compute, params_from, parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--variant", required=True, choices=VARIANTS)
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--base", default="models/base")
    p.add_argument("--data", default="data")
    p.add_argument("--split", default="data/split")
    p.add_argument("--out", default=None, help="default: models/<variant>-s<seed>")
    p.add_argument("--metrics", default=None, help="default: metrics/tune/<variant>-s<seed>.json")
    p.add_argument("--losses", default=None, help="default: plots/loss/<variant>-s<seed>.csv")
    args = p.parse_args()
    name = run_name(args.variant, args.seed)
    with stage(f"tune {name}"):
        from reverie.training_run import is_main_process
        from reverie.tuning import tune_variant
        from reverie.evaluation.heldout_check import heldout_check

        params = params_from(args)
        used = compute(params.tune.threads, params.tune.launch, "stages.tune")
        out = args.out or f"models/{name}"
        metrics = tune_variant(params, args.variant, args.seed, args.base, args.data, args.split, out,
                               loss_csv=args.losses or f"plots/loss/{name}.csv")
        if not is_main_process():
            return  # the main process evaluates and writes the outputs
        metrics |= heldout_check(params, out, args.data) | used
        write_json(args.metrics or f"metrics/tune/{name}.json", metrics)
        print(f"[tune {name}] loss {metrics['train_loss']:.3f} (response {metrics['response_loss']:.3f}), "
              f"{metrics['tokens_per_s']:.0f} tokens/s, padding {metrics['padding_fraction']:.1%}, "
              f"held-out yes/no accuracy {metrics.get('heldout_yes_no_accuracy', float('nan')):.3f}")


if __name__ == "__main__":
    main()
