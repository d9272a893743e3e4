"""The real benchmark files through `evaluate`: fixture files written here in the published
layouts, with their quirks (LLaVA's POPE question file without labels, MME's two folder
layouts, MMBench's circular copies whose image cell names another row, its test split without
`answer`, LLaVA's ScienceQA test file), read by the loaders, scored as the reference tools
score them, and written back in LLaVA's answer-file layouts."""
import base64
import csv
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from reverie.evaluation.answer_files import write_answer_files
from reverie.evaluation.loaders import load_mmbench, load_mme, load_pope, load_pope_llava, load_scienceqa
from reverie.evaluation.run import benchmark_items, headline, real_items
from reverie.evaluation.scoring import score_predictions, scienceqa_choice
from reverie.io import DataFileError
from reverie.settings import Params
from reverie.vocab import LETTER, SHORT


def png(path: Path | None = None, color=(200, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())
    return buf.getvalue()


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- POPE ---------------------------------------------------------------------------------
POPE_OBJECTS = {"random": ["dog", "kite"], "popular": ["dog", "person"], "adversarial": ["dog", "frisbee"]}


def write_pope(root: Path) -> dict[str, Path]:
    """POPE's coco_pope_<split>.json (question_id from 1 in each file), COCO images, and LLaVA's
    llava_pope_test.jsonl: every split in one file, unique ids, `category`, the instruction
    already appended, no label."""
    for name in ("COCO_val2014_000000000001.jpg", "COCO_val2014_000000000002.jpg"):
        png(root / "val2014" / name)
    labels, llava, qid = {}, [], 3000
    for split, (present, absent) in POPE_OBJECTS.items():
        rows = []
        for i, (image, obj, label) in enumerate([("COCO_val2014_000000000001.jpg", present, "yes"),
                                                 ("COCO_val2014_000000000001.jpg", absent, "no"),
                                                 ("COCO_val2014_000000000002.jpg", absent, "no"),
                                                 ("COCO_val2014_000000000002.jpg", present, "yes")], 1):
            rows.append({"question_id": i, "image": image, "text": f"Is there a {obj} in the image?", "label": label})
            llava.append({"question_id": qid, "image": image, "text": f"Is there a {obj} in the image?\n{SHORT}",
                          "category": split})
            qid += 1
        labels[split] = jsonl(root / "coco" / f"coco_pope_{split}.json", rows)
    jsonl(root / "llava_pope_test.jsonl", llava)
    return labels


def test_pope_in_llavas_layout_takes_labels_from_the_label_files_by_order(tmp_path):
    labels = write_pope(tmp_path)
    items = load_pope_llava(tmp_path / "llava_pope_test.jsonl", labels, tmp_path / "val2014")
    assert len(items) == 12 and [it.extra["split"] for it in items[:4]] == ["random"] * 4
    assert [it.label for it in items[:4]] == ["yes", "no", "no", "yes"]
    assert items[0].extra["source_id"] == 3000 and items[-1].extra["source_id"] == 3011
    # the instruction the file carries is not appended twice
    assert items[0].question == f"Is there a dog in the image?\n{SHORT}"
    # the same questions from POPE's own files give the same items but for the ids
    official = [it for split, path in labels.items() for it in load_pope(path, tmp_path / "val2014", split)]
    assert [(it.question, it.label, it.image) for it in official] == [(it.question, it.label, it.image) for it in items]


def test_pope_in_llavas_layout_refuses_questions_that_do_not_match_their_labels(tmp_path):
    labels = write_pope(tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "llava_pope_test.jsonl").read_text().splitlines()]
    rows[1]["text"] = f"Is there a cat in the image?\n{SHORT}"
    jsonl(tmp_path / "llava_pope_test.jsonl", rows)
    with pytest.raises(DataFileError, match=r"llava_pope_test.jsonl:2: does not match its label line in coco_pope_random"):
        load_pope_llava(tmp_path / "llava_pope_test.jsonl", labels, tmp_path / "val2014")
    with pytest.raises(DataFileError, match=r"categories \['adversarial'\] have no label file"):
        load_pope_llava(tmp_path / "llava_pope_test.jsonl", {"random": labels["random"], "popular": labels["popular"]},
                        tmp_path / "val2014")


# ---- MME ----------------------------------------------------------------------------------
def write_mme(root: Path) -> Path:
    """MME_Benchmark_release_version: flat subtasks (image and .txt side by side) and subtasks
    with images/ and questions_answers_YN/; two questions per image, MME's instruction."""
    release = root / "MME_Benchmark_release_version"
    for task, flat in (("existence", True), ("artwork", False), ("code_reasoning", True)):
        for k in range(2):
            image = release / task / (f"{k}.png" if flat else f"images/{k}.jpg")
            png(image, (k * 100, 0, 0))
            txt = release / task / (f"{k}.txt" if flat else f"questions_answers_YN/{k}.txt")
            txt.parent.mkdir(parents=True, exist_ok=True)
            txt.write_text(f"Is this picture {task} {k}? Please answer yes or no.\tYes\n"
                           f"Is this picture not {task} {k}? Please answer yes or no.\tNo\n")
    return release


def test_mme_reads_both_layouts_with_llavas_instruction_and_scores_perception_and_cognition_apart(tmp_path):
    release = write_mme(tmp_path)
    items = load_mme(release)
    assert len(items) == 12
    assert {(it.extra["subtask"], it.extra["group"]) for it in items} == {
        ("artwork", "perception"), ("existence", "perception"), ("code_reasoning", "cognition")}
    assert items[0].question == f"Is this picture artwork 0?\n{SHORT}" and "Please answer" not in items[0].question
    assert items[0].extra["source_id"] == "artwork/0.jpg"
    # answers: all right but one on an existence image (acc 3/4, acc+ 1/2), cognition all right
    answers = {it.qid: it.label.capitalize() for it in items}
    wrong = next(it for it in items if it.extra["subtask"] == "existence")
    answers[wrong.qid] = "No" if wrong.label == "yes" else "Yes"
    scores = score_predictions([it.row(answers[it.qid]) for it in items])
    assert scores["mme"]["existence"]["acc"] == 75.0 and scores["mme"]["existence"]["acc_plus"] == 50.0  # points
    assert scores["mme"]["perception"]["score"] == pytest.approx(200 + 125)
    assert scores["mme"]["cognition"]["score"] == pytest.approx(200)
    top = headline(scores)
    assert "mme.score" not in top  # never perception and cognition summed
    assert top["mme.perception.score"] == pytest.approx(325) and top["mme.cognition.score"] == pytest.approx(200)


def test_mme_refuses_a_folder_that_is_not_a_subtask(tmp_path):
    release = write_mme(tmp_path)
    (release / "eval_tool").mkdir()
    with pytest.raises(DataFileError, match="not an MME subtask"):
        load_mme(release)


# ---- MMBench ------------------------------------------------------------------------------
MMBENCH_HEADER = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                  "l2-category", "comment", "split"]


def write_mmbench(path: Path, with_answer: bool = True) -> Path:
    """Two questions as the official tsv holds them: each question's row (index < 1e6, the image
    as base64) and its circular copies (index + k * 1e6, options rotated, answer letter moved,
    the image cell holding the first row's index)."""
    questions = [(3, "What colour is the square?", "nan", ["red", "green", "blue", "white"], 0, "attribute_recognition",
                  "Fine-grained Perception (instance)", (200, 0, 0)),
                 (8, "Which is it?", "A hint.", ["cat", "dog", "cow"], 2, "image_topic", "Coarse Perception", (0, 0, 200))]
    rows = []
    for index, question, hint, options, right, category, l2, color in questions:
        for k in range(len(options)):
            rotated = options[k:] + options[:k]
            letter = "ABCD"[(right - k) % len(options)]
            image = base64.b64encode(png(color=color)).decode() if k == 0 else str(index)
            rows.append([index + k * 1_000_000, question, hint, *(rotated + [""] * (4 - len(rotated))), letter,
                         category, image, "source", l2, "nan", "dev"])
    header = MMBENCH_HEADER if with_answer else [c for c in MMBENCH_HEADER if c != "answer"]
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(header)
        for row in rows:
            w.writerow(row if with_answer else row[:7] + row[8:])
    return path


def test_mmbench_groups_the_circular_copies_by_g_index_and_decodes_each_image_once(tmp_path):
    items = load_mmbench(write_mmbench(tmp_path / "mmbench_dev_20230712.tsv"), tmp_path / "cache")
    assert len(items) == 7  # the rows, none rotated again
    assert sorted({it.extra["question_id"] for it in items}) == ["mmbench-3", "mmbench-8"]
    assert len(list((tmp_path / "cache").iterdir())) == 2  # one image per question, the copies refer to it
    assert len({it.image for it in items if it.extra["question_id"] == "mmbench-3"}) == 1
    three = next(it for it in items if it.qid == "mmbench-8")
    assert three.extra["options"] == ["cat", "dog", "cow"] and three.label == "C"
    assert three.question == f"A hint.\nWhich is it?\nA. cat\nB. dog\nC. cow\n{LETTER}"
    assert three.extra["l2_category"] == "Coarse Perception" and three.extra["rotation"] == 0
    # every copy right for question 3; question 8 wrong in one copy: circular 1/2, vanilla 2/2
    answers = {it.qid: it.label for it in items}
    answers["mmbench-2000008"] = "A" if answers["mmbench-2000008"] != "A" else "B"
    scores = score_predictions([it.row(answers[it.qid]) for it in items])["mmbench"]
    assert scores["questions"] == 2 and scores["circular_accuracy"] == 0.5 and scores["vanilla_accuracy"] == 1.0
    assert scores["category"]["attribute_recognition"]["circular_accuracy"] == 1.0
    assert scores["l2_category"]["Coarse Perception"]["circular_accuracy"] == 0.0
    top = headline({"mmbench": scores})
    assert top["mmbench.circular_accuracy"] == 0.5 and top["mmbench.l2_category.Coarse Perception.circular_accuracy"] == 0.0


def test_mmbench_test_split_has_no_answer_and_is_answered_not_scored(tmp_path):
    items = load_mmbench(write_mmbench(tmp_path / "mmbench_test.tsv", with_answer=False), tmp_path / "cache")
    assert len(items) == 7 and all(it.label == "" for it in items)
    scores = score_predictions([it.row("A") for it in items])["mmbench"]
    assert scores["questions"] == 0 and scores["unlabelled_questions"] == 2
    assert "mmbench.circular_accuracy" not in headline({"mmbench": scores})


def test_every_real_item_names_its_image_by_absolute_path(tmp_path, monkeypatch):
    """evaluate reads an item's image under the run's data root (data/); only an absolute path
    escapes it. MMBench's decoded images once lay in a relative cache (the default
    `.reverie/mmbench_images`) and were looked for under data/.reverie/."""
    monkeypatch.chdir(tmp_path)
    write_all(Path("suites"))
    real = real_items(suites_params(Path("suites")).evaluate.suites)  # the default, relative cache
    assert set(real) == {"pope", "mme", "mmbench", "scienceqa"}
    for name, (items, _) in real.items():
        assert items and all(Path(it.image).is_absolute() and Path(it.image).is_file() for it in items), name


def test_mmbench_refuses_an_image_reference_to_a_row_that_is_not_there(tmp_path):
    path = write_mmbench(tmp_path / "mmbench.tsv")
    path.write_text(path.read_text().replace("\t8\tsource", "\t9\tsource", 1))
    with pytest.raises(DataFileError, match="image cell refers to row index 9, which is not in the file"):
        load_mmbench(path, tmp_path / "cache")


# ---- ScienceQA ----------------------------------------------------------------------------
def write_scienceqa(root: Path) -> Path:
    """LLaVA's llava_test_CQM-A.json: image questions (images/test/<id>/image.png) and
    text-only ones, the options as `A. ...` lines."""
    entries = [{"id": "5", "image": "5/image.png",
                "conversations": [{"from": "human", "value": "<image>\nContext: A picture.\nWhich is a mammal?\nA. cat\nB. fish"},
                                  {"from": "gpt", "value": "A"}]},
               {"id": "6", "conversations": [{"from": "human", "value": "Which is a bird?\nA. owl\nB. cow"},
                                             {"from": "gpt", "value": "A"}]},
               {"id": "9", "image": "9/image.png",
                "conversations": [{"from": "human", "value": "<image>\nWhich is hot?\nA. ice\nB. snow\nC. fire"},
                                  {"from": "gpt", "value": "C"}]}]
    for pid in ("5", "9"):
        png(root / "images" / "test" / pid / "image.png")
    path = root / "llava_test_CQM-A.json"
    path.write_text(json.dumps(entries, indent=2))
    return path


def test_scienceqa_in_llavas_layout_keeps_image_questions(tmp_path):
    items = load_scienceqa(write_scienceqa(tmp_path), tmp_path / "images" / "test")
    assert [it.extra["source_id"] for it in items] == ["5", "9"] and [it.label for it in items] == ["A", "C"]
    assert items[0].question == f"Context: A picture.\nWhich is a mammal?\nA. cat\nB. fish\n{LETTER}"
    assert items[0].extra["llava_prompt"].startswith("<image>\n")


@pytest.mark.parametrize("answer, letter", [("B", "B"), (" B ", None), ("B. fish", "B"), ("The answer is B.", "B"),
                                            ("The answer is B", None), ("B.", None), ("I think B", None),
                                            ("fish", None), ("C", None), ("AB", None)])
def test_scienceqa_uses_llavas_strict_parser(answer, letter):
    """llava/eval/eval_science_qa.py (main): exactly a bare letter, "X. " at the start, or one
    match of r'The answer is ([A-Z]).' (a character must follow the letter); the text is not
    stripped, a lone "B." fails there too, and a letter beyond the options is wrong."""
    assert scienceqa_choice(answer, 2) == letter


def test_scienceqa_is_in_the_headline():
    rows = [{"benchmark": "scienceqa", "question_id": f"q{i}", "rotation": 0, "options": ["a", "b"], "label": "A",
             "answer": answer} for i, answer in enumerate(["A", "The answer is A.", "a", "B"])]
    assert headline(score_predictions(rows))["scienceqa.accuracy"] == 0.5


# ---- settings, prompts, items and answer files ---------------------------------------------
def suites_params(root: Path, **overrides) -> Params:
    suites = {"root": str(root),
              "pope": {"labels": {s: f"coco/coco_pope_{s}.json" for s in POPE_OBJECTS}, "images": "val2014",
                       "questions": "llava_pope_test.jsonl"},
              "mme": {"folder": "MME_Benchmark_release_version"},
              "mmbench": {"tsv": "mmbench_dev_20230712.tsv"},
              "scienceqa": {"questions": "llava_test_CQM-A.json", "images": "images/test"}}
    suites.update(overrides)
    return Params.model_validate({"evaluate": {"suites": suites}})


def write_all(root: Path) -> None:
    write_pope(root)
    write_mme(root)
    write_mmbench(root / "mmbench_dev_20230712.tsv")
    write_scienceqa(root)


def test_suites_default_to_llavas_prompts_and_budgets_and_unknown_keys_fail(tmp_path):
    params = suites_params(tmp_path)
    s = params.evaluate.suites
    assert (s.pope.prompt, s.pope.max_new_tokens) == (SHORT, 128) and (s.mme.prompt, s.mme.max_new_tokens) == (SHORT, 128)
    assert (s.mmbench.prompt, s.mmbench.max_new_tokens) == (LETTER, 1024)
    assert (s.scienceqa.prompt, s.scienceqa.max_new_tokens) == (LETTER, 1024)
    assert Params().evaluate.suites.pope is None and Params().evaluate.max_new_tokens == 8
    with pytest.raises(ValueError, match="evaluate.suites.mme.promt"):
        suites_params(tmp_path, mme={"folder": "x", "promt": "?"})
    with pytest.raises(ValueError, match="evaluate.suites.gqa"):
        suites_params(tmp_path, gqa={"folder": "x"})
    with pytest.raises(ValueError, match="relative to evaluate.suites.root"):
        suites_params(tmp_path, mmbench={"tsv": "/elsewhere/mmbench.tsv"})


def test_real_items_use_each_suites_prompt_and_budget(tmp_path):
    write_all(tmp_path)
    real = real_items(suites_params(tmp_path, mme={"folder": "MME_Benchmark_release_version", "prompt": "Yes or no?",
                                                   "max_new_tokens": 3}).evaluate.suites, tmp_path / "cache")
    assert {name: (len(items), budget) for name, (items, budget) in real.items()} == {
        "pope": (12, 128), "mme": (12, 3), "mmbench": (7, 1024), "scienceqa": (2, 1024)}
    assert all(it.question.endswith("\nYes or no?") for it in real["mme"][0])


def test_named_suites_replace_their_synthetic_namesakes_for_students_and_chance(tmp_path, monkeypatch):
    import reverie.evaluation.run as run

    seen = {}

    def fake_build_all(train, evals, records, world, settings, seed):
        from reverie.evaluation.suites import Item
        seen["called"] = True
        return [Item(b, f"{b}-1", "x.png", "q", "yes") for b in ("pope", "mme", "mmbench", "short_answer", "reasoning")]

    monkeypatch.setattr(run, "build_all", fake_build_all)
    monkeypatch.setattr(run, "load_scenes", lambda data: {})
    monkeypatch.setattr(run, "read_jsonl", lambda path: [])
    eval_items, train_items = benchmark_items(suites_params(tmp_path, mme=None, scienceqa=None), tmp_path, tmp_path)
    assert [it.benchmark for it in eval_items] == [it.benchmark for it in train_items] == ["mme", "short_answer", "reasoning"]
    eval_items, _ = benchmark_items(Params(), tmp_path, tmp_path)
    assert [it.benchmark for it in eval_items] == ["pope", "mme", "mmbench", "short_answer", "reasoning"]
    # a student's evaluation asks for its items alone: the same ones, and no train-side build
    seen.clear()
    assert benchmark_items(Params(), tmp_path, tmp_path, train=False) == (eval_items, [])


def test_answer_files_are_in_llavas_layouts(tmp_path):
    write_all(tmp_path)
    params = suites_params(tmp_path)
    real = real_items(params.evaluate.suites, tmp_path / "cache")
    rows = [it.row(it.label.capitalize() or "A") for items, _ in real.values() for it in items]
    out = tmp_path / "answers"
    written = write_answer_files(rows, out, "pos-s0", tmp_path / "mmbench_dev_20230712.tsv")
    assert written == ["pope_questions.jsonl", "pope_answers.jsonl", "mme_answers.jsonl", "mmbench_answers.jsonl",
                       "mmbench_submission.tsv", "scienceqa_answers.jsonl"]
    read = lambda name: [json.loads(line) for line in (out / name).read_text().splitlines()]
    vqa_keys = ["question_id", "prompt", "text", "answer_id", "model_id", "metadata"]
    # POPE: eval_pope.py reads the answers per category in order and pairs them with the label file
    answers, questions = read("pope_answers.jsonl"), {q["question_id"]: q for q in read("pope_questions.jsonl")}
    assert all(list(a) == vqa_keys and a["model_id"] == "pos-s0" for a in answers)
    for split in POPE_OBJECTS:
        mine = [a["text"].lower() for a in answers if questions[a["question_id"]]["category"] == split]
        truth = [json.loads(line)["label"] for line in (tmp_path / "coco" / f"coco_pope_{split}.json").read_text().splitlines()]
        assert mine == truth
    assert answers[0]["question_id"] == 3000  # LLaVA's ids, so its own question file serves as well
    # MME: convert_answer_to_mme.py finds each answer's ground truth by (subtask, file, question)
    for a in read("mme_answers.jsonl"):
        category, image = a["question_id"].split("/")
        question = a["prompt"].replace(SHORT, "").strip() + " Please answer yes or no."
        folder = tmp_path / "MME_Benchmark_release_version" / category
        txt = (folder / "questions_answers_YN" if (folder / "questions_answers_YN").is_dir() else folder) / (image.split(".")[0] + ".txt")
        assert question in [line.split("\t")[0] for line in txt.read_text().splitlines()]
    # MMBench: model_vqa_mmbench.py's rows, and convert_mmbench_for_submission.py's table
    mmb = read("mmbench_answers.jsonl")
    assert list(mmb[0]) == ["question_id", "round_id", "prompt", "text", "options", "option_char", "answer_id",
                            "model_id", "metadata"]
    assert mmb[0]["question_id"] == 3 and LETTER not in mmb[0]["prompt"] and mmb[0]["option_char"] == ["A", "B", "C", "D"]
    table = list(csv.reader((out / "mmbench_submission.tsv").read_text().splitlines(), delimiter="\t"))
    assert table[0] == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert len(table) == 8 and all(row[6] == row[7] for row in table[1:])
    # ScienceQA: eval_science_qa.py counts a prompt with <image> as IMG
    sqa = read("scienceqa_answers.jsonl")
    assert [a["question_id"] for a in sqa] == ["5", "9"] and all(a["prompt"].startswith("<image>\n") for a in sqa)
    assert "eval_pope.py" in (out / "README.md").read_text()


def test_without_real_suites_the_answer_folder_holds_only_a_readme(tmp_path):
    rows = [{"benchmark": "pope", "qid": "pope-random-1", "image": "x.png", "split": "random", "label": "yes",
             "answer": "yes", "question": "q"}]
    assert write_answer_files(rows, tmp_path / "a", "response-s0") == []
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["README.md"]


def test_the_report_shows_the_real_benchmarks_and_keeps_the_synthetic_layout(tmp_path):
    from reverie.report import ablation, markdown, _details

    def run(perception, circ):
        return {"pope.random.f1": 0.8, "pope.random.accuracy": 0.8, "pope.random.yes_ratio": 0.5,
                "mme.perception.score": perception, "mme.cognition.score": 300.0, "mme.existence.score": 190.0,
                "mmbench.circular_accuracy": circ, "mmbench.category.image_topic.circular_accuracy": circ,
                "scienceqa.accuracy": 0.6}

    runs = {"response": {0: run(1400.0, 0.6), 1: run(1410.0, 0.62)}, "pos_neg": {0: run(1450.0, 0.65), 1: run(1440.0, 0.66)}}
    result = ablation(runs, "response", 100, 0)
    result["detail"] = _details(runs)
    text = markdown(result)
    assert "MME perception (max 2000)" in text and "ScienceQA-IMG" in text and "MME-4" not in text
    assert "## Real benchmarks in detail" in text and "mmbench.category.image_topic.circular_accuracy" in text
    assert result["variants"]["pos_neg"]["mme.perception.score"]["diff_mean"] == pytest.approx(40.0)


def test_evaluate_logs_every_real_benchmarks_metrics_into_the_mlflow_run(tmp_path, monkeypatch):
    """evaluate_student with the model stubbed: each real suite answered with its own budget,
    predictions and LLaVA answer files written, and every metric in the student's MLflow run."""
    import mlflow

    import reverie.evaluation.run as run
    import reverie.student.model as student_model
    from reverie.tracking import project_run

    write_all(tmp_path)
    params = Params.model_validate({**suites_params(tmp_path).model_dump(by_alias=True),
                                    "project": {"mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}})
    logger = project_run(params, "pos-s0", {"variant": "pos", "seed": "0"})
    run_id = logger.run_id
    logger.end()
    budgets = []

    def fake_answer(model, processor, items, root, batch_size, max_new_tokens, progress=True):
        budgets.append((items[0].benchmark, max_new_tokens))
        return [it.row(it.label.capitalize() or "A") for it in items], 1.0

    monkeypatch.setattr(run, "benchmark_items", lambda *a, **k: ([], []))
    monkeypatch.setattr(run, "answer_items", fake_answer)
    monkeypatch.setattr(student_model, "load_tuned", lambda d, precision: (None, None, {"run_id": run_id, "variant": "pos", "seed": 0}))
    monkeypatch.setattr(run, "real_items", lambda suites: real_items(suites, tmp_path / "cache"))
    metrics = run.evaluate_student(params, tmp_path / "models" / "pos-s0", tmp_path, tmp_path,
                                   tmp_path / "pred.jsonl", tmp_path / "llava", progress=False)
    assert budgets == [("pope", 128), ("mme", 128), ("mmbench", 1024), ("scienceqa", 1024)]
    assert metrics["pope.random.f1"] == 1.0 and metrics["mme.perception.score"] == 400.0
    assert metrics["mme.cognition.score"] == 200.0 and metrics["mmbench.circular_accuracy"] == 1.0
    assert metrics["scienceqa.accuracy"] == 1.0
    logged = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(run_id).data.metrics
    for key in ("pope.adversarial.f1", "mme.perception.score", "mme.cognition.score", "mmbench.circular_accuracy",
                "mmbench.l2_category.Coarse Perception.circular_accuracy", "scienceqa.accuracy",
                "eval.mme.artwork.acc_plus", "eval.mmbench.category.image_topic.circular_accuracy"):
        assert key in logged, key
    assert (tmp_path / "llava" / "mmbench_submission.tsv").exists()
