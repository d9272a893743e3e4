"""The quality gates on the filtered records: a Great Expectations suite.

Row-level checks are computed as boolean columns (one per rule) and validated with GX, so
the Data Docs name every rule and the failing rows are known: a failing row is quarantined
with the names of the rules it broke, and the rest form the clean split. A row rule tolerates
a small share of bad rows (`max_bad_row_fraction`, GX's `mostly`); past it, or when a
table-level rule fails (duplicate ids, an image in both splits, a missing question type),
the expectation fails and so does the stage. GX is imported here, where it is used, because its import costs ~6 s.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from PIL import Image

from .records import PUBLISHED_FIELDS, QUESTION_TYPES, length_rules

YES_NO = {"yes", "no"}


@dataclass(frozen=True)
class Rule:
    name: str
    description: str


ROW_RULES = [
    Rule("fields_present", "the published fields and id are present and non-empty"),
    Rule("question_length_ok", "question length within bounds"),
    Rule("answer_length_ok", "answer lengths within bounds"),
    Rule("rationale_length_ok", "rationale lengths within bounds"),
    Rule("answers_differ", "the correct answer differs from the confusing one"),
    Rule("choice_answer_in_options", "multiple-choice answers name one of the options"),
    Rule("yes_no_answers_are_yes_no", "yes/no questions have yes/no answers"),
    Rule("rationale_not_answer_copy", "a rationale is not a copy of its answer"),
    Rule("question_type_known", "the question type is one of the four formats"),
    Rule("image_decodes", "the image exists under the data root and decodes"),
]


@dataclass
class QualityResult:
    success: bool
    expectations: int
    failed: list[str]
    clean: pd.DataFrame
    quarantined: list[dict]
    gx_result: dict = field(repr=False, default_factory=dict)


def _norm(s) -> str:
    return " ".join(str(s).lower().strip().rstrip(".").split())


def _image_ok(root: Path, rel: str, cache: dict) -> bool:
    if rel in cache:
        return cache[rel]
    ok = False
    try:
        path = (root / rel).resolve()
        if path.is_relative_to(root.resolve()) and path.is_file():
            with Image.open(path) as im:
                im.load()
            ok = True
    except Exception:
        ok = False
    cache[rel] = ok
    return ok


def rule_columns(df: pd.DataFrame, settings, data_root: Path) -> pd.DataFrame:
    """One boolean column per row rule; independent of how the records were made."""
    s = settings
    out = pd.DataFrame(index=df.index)
    text = lambda col: df[col].fillna("").astype(str)  # noqa: E731
    out["fields_present"] = pd.concat([text(c).str.strip().ne("") for c in ("id", *PUBLISHED_FIELDS)], axis=1).all(axis=1)
    for rule, fields, low, high, _ in length_rules(s):  # the same bounds the release importer applies
        out[rule] = pd.concat([text(f).str.len().between(low, high) for f in fields], axis=1).all(axis=1)
    out["answers_differ"] = [_norm(a) != _norm(b) for a, b in zip(df["correct_answer"], df["confusing_answer"])]

    def choice_ok(row) -> bool:
        if row["question_type"] != "multiple_choice":
            return True
        options = row["options"] if isinstance(row["options"], list) else []
        letters = "ABCDEFGH"[: len(options)]
        answer = str(row["correct_answer"]).strip()
        return len(options) >= 2 and (answer in letters or answer in options)

    out["choice_answer_in_options"] = df.apply(choice_ok, axis=1)
    is_yn = df["question_type"].eq("yes_no")
    out["yes_no_answers_are_yes_no"] = ~is_yn | (text("correct_answer").map(_norm).isin(YES_NO) &
                                                 text("confusing_answer").map(_norm).isin(YES_NO))
    out["rationale_not_answer_copy"] = [
        _norm(pr) not in (_norm(ca), _norm(fa)) and _norm(nr) not in (_norm(ca), _norm(fa))
        for pr, nr, ca, fa in zip(df["correct_rationale"], df["incorrect_rationale"], df["correct_answer"], df["confusing_answer"])
    ]
    out["question_type_known"] = df["question_type"].isin(QUESTION_TYPES)
    cache: dict = {}
    out["image_decodes"] = [_image_ok(data_root, str(rel), cache) for rel in df["image"].fillna("")]
    return out


def run_suite(records: list[dict], settings, data_root: str | Path, docs_dir: str | Path | None = None) -> QualityResult:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe

    data_root = Path(data_root)
    df = pd.DataFrame.from_records(records)
    for col in ("id", *PUBLISHED_FIELDS, "question_type", "options", "split"):
        if col not in df.columns:
            df[col] = None
    rules = rule_columns(df, settings, data_root)
    frame = pd.concat([df[["id", "image", "split", "question_type"]], rules.add_prefix("rule_")], axis=1)
    train_images = set(df.loc[df["split"] == "train", "image"])
    frame["image_in_one_split"] = ~(df["split"].eq("eval") & df["image"].isin(train_images))

    context = gx.get_context(mode="ephemeral")
    if docs_dir is not None:
        context.add_data_docs_site("reverie_docs", {
            "class_name": "SiteBuilder",
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(Path(docs_dir).resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        })
    source = context.data_sources.add_pandas("records")
    asset = source.add_dataframe_asset("filtered_records")
    batch_def = asset.add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(gx.ExpectationSuite(name="reverie_records"))

    def add(expectation, name: str, description: str):
        expectation.meta = {"rule": name, "notes": description}
        suite.add_expectation(expectation)

    mostly = 1.0 - settings.max_bad_row_fraction
    for rule in ROW_RULES:
        add(gxe.ExpectColumnValuesToBeInSet(column=f"rule_{rule.name}", value_set=[True], mostly=mostly),
            rule.name, rule.description)
    add(gxe.ExpectColumnValuesToBeUnique(column="id"), "ids_unique", "record ids are unique")
    add(gxe.ExpectColumnValuesToBeInSet(column="image_in_one_split", value_set=[True]), "no_image_in_both_splits",
        "no image appears in both the train and the eval split")
    add(gxe.ExpectTableRowCountToBeBetween(min_value=settings.min_records), "enough_records",
        f"at least {settings.min_records} records")
    shares = frame.loc[frame["split"] == "train", "question_type"].value_counts(normalize=True)
    share_frame = pd.DataFrame({"question_type": list(QUESTION_TYPES),
                                "share": [float(shares.get(t, 0.0)) for t in QUESTION_TYPES]})
    # a row of an unknown type has no share (NaN, left out of the minimum): it breaks
    # question_type_known and is quarantined by it, not the share rule of the whole table
    frame = frame.merge(share_frame.rename(columns={"share": "type_share"}), on="question_type", how="left")
    add(gxe.ExpectColumnDistinctValuesToContainSet(column="question_type", value_set=list(QUESTION_TYPES)),
        "all_question_types_present", "each of the four question types is present")
    add(gxe.ExpectColumnMinToBeBetween(column="type_share", min_value=settings.min_type_share),
        "question_type_share", f"each question type is at least {settings.min_type_share:.0%} of the train records")

    validation = context.validation_definitions.add(gx.ValidationDefinition(name="reverie_records", data=batch_def, suite=suite))
    result = validation.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
    if docs_dir is not None:
        context.build_data_docs(site_names=["reverie_docs"])

    failed = [r.expectation_config.meta.get("rule", r.expectation_config.type) for r in result.results if not r.success]
    row_ok = rules.all(axis=1)
    quarantined = []
    for idx in df.index[~row_ok]:
        broken = [c for c in rules.columns if not rules.at[idx, c]]
        quarantined.append({"reason": "quality: " + ", ".join(broken), "record": records[idx]})
    clean = df.loc[row_ok]
    return QualityResult(
        success=not failed,
        expectations=len(suite.expectations),
        failed=failed,
        clean=clean,
        quarantined=quarantined,
        gx_result=result.to_json_dict(),
    )
