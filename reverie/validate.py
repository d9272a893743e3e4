"""The validate step: quality gates over the filtered records, then the clean split."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .io import read_jsonl, write_json, write_jsonl
from .quality import run_suite


@dataclass
class ValidateOutcome:
    metrics: dict
    failed: list[str]


def validate_records(settings, data_dir: str | Path, split_dir: str | Path, report_dir: str | Path) -> ValidateOutcome:
    data_dir, split_dir, report_dir = Path(data_dir), Path(split_dir), Path(report_dir)
    unreadable: list[dict] = []
    records = read_jsonl(data_dir / "records" / "filtered.jsonl",
                         on_bad_line=lambda bad: unreadable.append({"reason": bad.reason, "line": bad.line_no, "text": bad.text}))
    result = run_suite(records, settings, data_dir, report_dir / "data_docs")
    write_json(report_dir / "validation.json", result.gx_result)
    clean = result.clean.to_dict(orient="records")
    quarantined = unreadable + result.quarantined
    metrics = {
        "success": result.success,
        "expectations": result.expectations,
        "failed": len(result.failed),
        "failed_expectations": result.failed,
        "records_in": len(records) + len(unreadable),
        "quarantined": len(quarantined),
        "train_records": sum(r["split"] == "train" for r in clean),
        "eval_records": sum(r["split"] == "eval" for r in clean),
    }
    write_jsonl(split_dir / "quarantine.jsonl", quarantined)
    if result.success:
        write_jsonl(split_dir / "train.jsonl", (r for r in clean if r["split"] == "train"))
        write_jsonl(split_dir / "eval.jsonl", (r for r in clean if r["split"] == "eval"))
    return ValidateOutcome(metrics, result.failed)
