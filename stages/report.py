"""DVC stage `report`: the ablation table (markdown, JSON, PNG) over every evaluated run, with
chance beside it, each column's validity (the baseline against the reference answerers'
saved answers), the power of each metric and a two-level bootstrap on every comparison;
marked void when the baseline does not see or the POPE column is void."""
from reverie.stage import params_from, parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--eval", default="metrics/eval")
    p.add_argument("--tune", default="metrics/tune")
    p.add_argument("--losses", default="plots/loss")
    p.add_argument("--predictions", default="predictions")
    p.add_argument("--chance", default="metrics/chance.json")
    p.add_argument("--references", default=None,
                   help="the reference answerers' saved answers (default: the chance folder under --predictions)")
    p.add_argument("--base", default="metrics/base.json")
    p.add_argument("--base-curve", default="plots/base_check.csv", help="the base check during the base's training")
    p.add_argument("--out", default="reports")
    args = p.parse_args()
    with stage("report"):
        from reverie.report import write_report

        result = write_report(args.eval, args.tune, args.losses, args.out, params_from(args).report,
                              args.predictions, args.chance, args.base, args.references, args.base_curve)
        print(result["markdown"])


if __name__ == "__main__":
    main()
