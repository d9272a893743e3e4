"""DVC stage `base`: the shared base student every variant starts from (trained once), and
the check that it sees: the stage fails when it does not (base.min_seeing_accuracy)."""
from reverie.io import write_json
from reverie.stage import StageFailed, compute, params_from, parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", default="data")
    p.add_argument("--split", default="data/split")
    p.add_argument("--out", default="models/base")
    p.add_argument("--metrics", default="metrics/base.json")
    p.add_argument("--check-curve", default="plots/base_check.csv",
                   help="the base check every base.check_every steps of training (CSV)")
    args = p.parse_args()
    with stage("base"):
        from reverie.base_step import base_gate, train_base
        from reverie.evaluation.scoring import choice_text
        from reverie.training_run import is_main_process

        params = params_from(args)
        used = compute(params.base.threads, params.base.launch, "stages.base")
        metrics = train_base(params, args.data, args.split, args.out, check_csv=args.check_curve) | used
        if not is_main_process():
            return
        failure = base_gate(metrics, params.base.min_seeing_accuracy)
        write_json(args.metrics, metrics | {"passed": failure is None, "failure": failure})
        print(f"[base] saved {args.out}: loss {metrics.get('train_loss', float('nan')):.3f}, "
              f"{metrics.get('tokens_per_s', 0):.0f} tokens/s, {metrics.get('train_seconds', 0):.0f} s")
        if metrics.get("perception_measured"):
            theme_fp = metrics.get("heldout_theme_false_positive_rate")
            print(f"[base] held-out seeing accuracy {metrics['heldout_seeing_accuracy']:.3f}, existence accuracy "
                  f"{metrics['heldout_existence_accuracy']:.3f} (yes-ratio {metrics['heldout_yes_ratio']:.2f}"
                  + (f"; absent kinds of the scene's theme called present {theme_fp:.0%}" if theme_fp is not None else "")
                  + "), shuffled images "
                  f"{metrics['shuffled_image_accuracy']:.3f}, descriptions name "
                  f"{metrics.get('description_kind_recall', float('nan')):.0%} of the objects' kinds, "
                  f"{metrics.get('description_object_recall', float('nan')):.0%} at the right position"
                  + (f"; {choice_text(metrics)}" if choice_text(metrics) else ""))
        if failure:
            raise StageFailed(failure)


if __name__ == "__main__":
    main()
