"""DVC stage `evaluate@<variant>-<seed>`: benchmarks on held-out scenes, into the same MLflow run."""
from reverie.io import write_json
from reverie.vocab import VARIANTS, run_name
from reverie.stage import compute, params_from, parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--variant", required=True, choices=VARIANTS)
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--data", default="data")
    p.add_argument("--split", default="data/split")
    p.add_argument("--model", default=None, help="default: models/<variant>-s<seed>")
    p.add_argument("--predictions", default=None, help="default: predictions/<variant>-s<seed>.jsonl")
    p.add_argument("--metrics", default=None, help="default: metrics/eval/<variant>-s<seed>.json")
    p.add_argument("--answers", default=None,
                   help="the real benchmarks' LLaVA-format answer files; default: predictions/llava/<variant>-s<seed>")
    args = p.parse_args()
    name = run_name(args.variant, args.seed)
    with stage(f"evaluate {name}"):
        from reverie.evaluation.run import evaluate_student

        params = params_from(args)
        used = compute(params.evaluate.threads)
        m = evaluate_student(params, args.model or f"models/{name}", args.data, args.split,
                             args.predictions or f"predictions/{name}.jsonl", args.answers or f"predictions/llava/{name}")
        m |= used
        write_json(args.metrics or f"metrics/eval/{name}.json", m)
        print(f"[evaluate {name}] POPE F1 random/popular/adversarial "
              f"{m.get('pope.random.f1', 0):.3f}/{m.get('pope.popular.f1', 0):.3f}/{m.get('pope.adversarial.f1', 0):.3f}, "
              f"MME {m.get('mme.score', 0):.1f}, MMBench circular {m.get('mmbench.circular_accuracy', 0):.3f}, "
              f"short {m.get('short_answer.accuracy', 0):.3f}; {m['questions_per_s']:.0f} questions/s")
        real = {k: v for k, v in m.items() if k.startswith(("mme.perception", "mme.cognition", "scienceqa.accuracy"))}
        if real:
            print(f"[evaluate {name}] " + ", ".join(f"{k} {v:.3f}" for k, v in real.items()))


if __name__ == "__main__":
    main()
