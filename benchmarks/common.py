"""Shared set-up for the benchmarks: the project's data and student when they exist,
otherwise a small world and an untrained tiny student built here (throughput does not
depend on what the weights learned)."""
from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from reverie.generate import generate_dataset
from reverie.world import load_scenes
from reverie.io import read_jsonl, write_jsonl
from reverie.settings import load_params


def data_and_records(images: int = 600):
    if Path("data/split/train.jsonl").exists() and Path("data/scenes/scenes.jsonl").exists():
        return load_params(), Path("data"), read_jsonl("data/split/train.jsonl"), "project data"
    tmp = Path(tempfile.mkdtemp(prefix="reverie-bench-"))
    params = load_params(overrides={"world.train_images": images, "world.eval_images": max(50, images // 5)})
    result = generate_dataset(params, tmp, progress=False)
    records = [r for r in result.raw if r["judge"]["consistent"] and r["split"] == "train"]
    write_jsonl(tmp / "split" / "train.jsonl", records)
    return params, tmp, records, f"generated ({images} images)"


def student(params, data_dir: Path, records):
    from reverie.student.curriculum import describe_conversations, tokenizer_corpus
    from reverie.student.model import build_tiny, load_student, train_tokenizer
    from reverie.world import image_relpath

    if Path("models/base/config.json").exists():
        model, processor = load_student("models/base")
        return model, processor, "models/base"
    scenes = [s for s in load_scenes(data_dir).values() if s.split == "train"]
    convs = describe_conversations(scenes, image_relpath, params.world.kinds)
    tok = train_tokenizer(tokenizer_corpus(records, convs), params.base.model.vocab_size)
    model, processor = build_tiny(params.base.model, tok, params.world.image_size)
    return model, processor, "untrained tiny student"


def timed_command(cmd: list[str], cwd: Path, env: dict, refuse: tuple[str, str] | None = None) -> float:
    """Seconds `cmd` took, as a user starts it. Exits with its output's tail when it fails, or
    when its output holds `refuse[0]` (`refuse[1]` says what that means)."""
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    if refuse and refuse[0] in result.stdout + result.stderr:
        raise SystemExit(f"{' '.join(cmd)} {refuse[1]}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return elapsed
