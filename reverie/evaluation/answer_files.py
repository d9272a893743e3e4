"""Predictions on the real benchmarks, also written in LLaVA-1.5's answer-file layouts, so that
the published scorers run on them unchanged:

- POPE: `pope_answers.jsonl` as llava/eval/model_vqa_loader.py writes it (question_id, prompt,
  text, answer_id, model_id, metadata) and `pope_questions.jsonl`, a question file with
  `category` as llava/eval/eval_pope.py reads it (LLaVA's own llava_pope_test.jsonl serves too
  when that was the input: the ids are its ids);
- MME: `mme_answers.jsonl`, model_vqa_loader's layout with question_id `<subtask>/<image>`, which
  MME's convert_answer_to_mme.py turns into eval_tool/calculation.py's input;
- MMBench: `mmbench_answers.jsonl` as llava/eval/model_vqa_mmbench.py writes it, and
  `mmbench_submission.tsv`, the table scripts/convert_mmbench_for_submission.py builds (the
  tsv without hint, category, source, image, comment, l2-category, with `prediction` as its
  seventh column), as tab-separated text instead of xlsx;
- ScienceQA: `scienceqa_answers.jsonl` as llava/eval/model_vqa_science.py writes it, whose
  prompts start with `<image>`, which llava/eval/eval_science_qa.py counts as IMG.

`README.md` in the folder gives the commands.
"""
from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

from ..io import read_text_file, write_jsonl, write_text
from .loaders import mmbench_index

MMBENCH_DROPPED = ("hint", "category", "source", "image", "comment", "l2-category")


def _answer_id(model_id: str, qid: str) -> str:
    """LLaVA draws a shortuuid; a hash keeps reruns byte-identical (no scorer reads it)."""
    return hashlib.sha256(f"{model_id}:{qid}".encode()).hexdigest()[:22]


def _vqa_row(row: dict, model_id: str, question_id) -> dict:
    return {"question_id": question_id, "prompt": row["llava_prompt"], "text": row["answer"],
            "answer_id": _answer_id(model_id, row["qid"]), "model_id": model_id, "metadata": {}}


def write_answer_files(rows: list[dict], out_dir: str | Path, model_id: str, mmbench_tsv: str | Path | None = None) -> list[str]:
    """Writes the answer files of every real benchmark in `rows` (rows with `source_id`) and a
    README; returns the names written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    real = [r for r in rows if "source_id" in r]
    by_benchmark: dict[str, list[dict]] = {}
    for r in real:
        by_benchmark.setdefault(r["benchmark"], []).append(r)
    written = []
    pope = by_benchmark.get("pope")
    if pope:
        ids = [r["source_id"] for r in pope]
        unique = len(set(map(str, ids))) == len(ids)  # POPE's own files number each split from 1
        qids = ids if unique else list(range(len(pope)))
        write_jsonl(out_dir / "pope_questions.jsonl",
                    ({"question_id": q, "image": Path(r["image"]).name, "text": r["llava_prompt"], "category": r["split"]}
                     for q, r in zip(qids, pope)))
        write_jsonl(out_dir / "pope_answers.jsonl", (_vqa_row(r, model_id, q) for q, r in zip(qids, pope)))
        written += ["pope_questions.jsonl", "pope_answers.jsonl"]
    if by_benchmark.get("mme"):
        write_jsonl(out_dir / "mme_answers.jsonl", (_vqa_row(r, model_id, r["source_id"]) for r in by_benchmark["mme"]))
        written.append("mme_answers.jsonl")
    mmbench = by_benchmark.get("mmbench")
    if mmbench:
        def mmbench_row(r):
            return {"question_id": r["source_id"], "round_id": 0, "prompt": r["llava_prompt"], "text": r["answer"],
                    "options": r["options"], "option_char": list("ABCD"[: len(r["options"])]),
                    "answer_id": _answer_id(model_id, r["qid"]), "model_id": model_id, "metadata": {}}

        write_jsonl(out_dir / "mmbench_answers.jsonl", (mmbench_row(r) for r in mmbench))
        written.append("mmbench_answers.jsonl")
        if mmbench_tsv:
            write_text(out_dir / "mmbench_submission.tsv", mmbench_submission(mmbench_tsv, mmbench))
            written.append("mmbench_submission.tsv")
    if by_benchmark.get("scienceqa"):
        write_jsonl(out_dir / "scienceqa_answers.jsonl",
                    (_vqa_row(r, model_id, r["source_id"]) for r in by_benchmark["scienceqa"]))
        written.append("scienceqa_answers.jsonl")
    write_text(out_dir / "README.md", readme(written, model_id))
    return written


def mmbench_submission(tsv: str | Path, rows: list[dict]) -> str:
    """convert_mmbench_for_submission.py's table: every row of the tsv, without the dropped
    columns, with the answer as `prediction` inserted as the seventh column."""
    csv.field_size_limit(1 << 30)
    reader = csv.DictReader(io.StringIO(read_text_file(tsv), newline=""), delimiter="\t")
    columns = [c for c in reader.fieldnames or [] if c not in MMBENCH_DROPPED]
    columns.insert(min(6, len(columns)), "prediction")
    predicted = {str(r["source_id"]): r["answer"] for r in rows}
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(columns)
    for row in reader:
        index = mmbench_index(row["index"])  # a row the loader rejected (no index) gets no prediction
        writer.writerow([predicted.get(str(index), "") if c == "prediction" else row.get(c, "") for c in columns])
    return out.getvalue()


def readme(written: list[str], model_id: str) -> str:
    lines = [f"# LLaVA-format answer files of `{model_id}`", ""]
    if not written:
        return "\n".join(lines + ["No real benchmark was named in `evaluate.suites`: nothing to write.", ""])
    lines += ["Scored by the published tools, unchanged (paths as in LLaVA's scripts/v1_5/eval/*.sh):", "", "```"]
    if "pope_answers.jsonl" in written:
        lines += ["python llava/eval/eval_pope.py --annotation-dir <folder of coco_pope_*.json> \\",
                  "  --question-file pope_questions.jsonl --result-file pope_answers.jsonl"]
    if "mme_answers.jsonl" in written:
        lines += [f"cp mme_answers.jsonl <MME>/answers/{model_id}.jsonl && cd <MME> && "
                  f"python convert_answer_to_mme.py --experiment {model_id}",
                  f"cd eval_tool && python calculation.py --results_dir answers/{model_id}"]
    if "mmbench_answers.jsonl" in written:
        lines += [f"cp mmbench_answers.jsonl <result-dir>/{model_id}.jsonl && python scripts/convert_mmbench_for_submission.py "
                  f"--annotation-file <the tsv> --result-dir <result-dir> --upload-dir <upload-dir> --experiment {model_id}",
                  "# or submit mmbench_submission.tsv (the same table, tab-separated) after converting it to xlsx"]
    if "scienceqa_answers.jsonl" in written:
        lines += ["python llava/eval/eval_science_qa.py --base-dir <scienceqa> --result-file scienceqa_answers.jsonl \\",
                  "  --output-file sqa_output.jsonl --output-result sqa_result.json   # read IMG-Accuracy"]
    return "\n".join(lines + ["```", ""])
