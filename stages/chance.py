"""DVC stage `chance`: what chance is on each benchmark, for the report to set the students
against: an always-yes answerer and a blind prior (train-set answers, no image)."""
from reverie.io import write_json
from reverie.stage import params_from, parser, stage


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--data", default="data")
    p.add_argument("--split", default="data/split")
    p.add_argument("--predictions", default="predictions/chance")
    p.add_argument("--metrics", default="metrics/chance.json")
    args = p.parse_args()
    with stage("chance"):
        from reverie.evaluation.run import score_references

        scores = score_references(params_from(args), args.data, args.split, args.predictions)
        write_json(args.metrics, {name: {k: v for k, v in s.items() if k != "scores"} for name, s in scores.items()})
        for name, s in scores.items():
            print(f"[chance] {name}: POPE F1 random/popular/adversarial {s.get('pope.random.f1', 0):.3f}/"
                  f"{s.get('pope.popular.f1', 0):.3f}/{s.get('pope.adversarial.f1', 0):.3f}, MME-4 "
                  f"{s.get('mme.score', 0):.1f}, MMBench circular {s.get('mmbench.circular_accuracy', 0):.3f}, "
                  f"short {s.get('short_answer.accuracy', 0):.3f}")


if __name__ == "__main__":
    main()
