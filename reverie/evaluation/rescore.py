"""Re-score saved predictions without the model: `python -m reverie.evaluation.rescore FILE`."""
from __future__ import annotations

import argparse
import json

from ..io import read_jsonl, write_json
from .run import headline
from .scoring import score_predictions


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("predictions", help="a predictions JSONL written by the evaluate stage")
    p.add_argument("--out", help="write the scores as JSON here")
    args = p.parse_args(argv)
    scores = score_predictions(read_jsonl(args.predictions))
    result = {**headline(scores), "scores": scores}
    if args.out:
        write_json(args.out, result)
    print(json.dumps(headline(scores), indent=2))


if __name__ == "__main__":
    main()
