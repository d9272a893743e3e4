"""The local teacher: a transformers model from a folder, batched, through the chat teacher's
steps, parsers, quarantine and cache."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from reverie.io import model_fingerprint
from reverie.records import PUBLISHED_FIELDS
from reverie.settings import GenerateSettings, LocalTeacherSettings
from reverie.teachers.local_vlm import LocalTeacher, LocalVLM, generate_with_local
from reverie.teachers.chat_messages import image_data_url
from reverie.teachers.chat_steps import PROMPTS
from reverie.teachers.chat_transport import TeacherConfigError

from .chat_server import judge_answer, qa_answer, rationale_answer
from .conftest import write_photos

QUESTIONS = 2


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory) -> Path:
    """A random tiny LLaVA saved as an ordinary model folder (weights, tokenizer with a chat
    template, image processor). Its tokenizer is trained on the prompt files, so that the
    prompts stay short in tokens."""
    import torch

    from reverie.settings import ModelSettings
    from reverie.student.model import build_tiny, train_tokenizer

    torch.manual_seed(0)
    tokenizer = train_tokenizer([p.read_text() for p in sorted(PROMPTS.glob("*.txt"))] * 3, 600)
    settings = ModelSettings(vision_hidden=32, text_hidden=32, intermediate=64, vision_layers=1, text_layers=1,
                             vision_heads=2, text_heads=2, vocab_size=600)
    model, processor = build_tiny(settings, tokenizer, image_size=32)
    path = tmp_path_factory.mktemp("teacher") / "tiny-llava"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture
def images(tmp_path) -> list[tuple[str, Path]]:
    return write_photos(tmp_path / "photos", 3, (40, 30))


def settings(model_path, **local) -> GenerateSettings:
    defaults = dict(model_path=str(model_path), batch_size=4, max_new_tokens=8, device="cpu")
    return GenerateSettings(teacher="local", questions_per_image=QUESTIONS,
                            local=LocalTeacherSettings(**{**defaults, **local}))


def step_of(chat: list[dict]) -> str:
    text = json.dumps(chat[0]["content"])
    if "questions about it" in text:
        return "qa"
    return "judge" if "You check training data" in text else "rationale"


def images_in(chat: list[dict]) -> int:
    return sum(p.get("type") == "image_url" for m in chat if isinstance(m["content"], list) for p in m["content"])


class CountingVLM(LocalVLM):
    """The real model, with a log of the batches it was asked to generate."""

    def __init__(self, *args, answer_qa: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list[list[str]] = []
        self.answer_qa = answer_qa

    def __call__(self, batch, max_new_tokens):
        self.batches.append([step_of(chat) for chat in batch])
        assert len({images_in(chat) for chat in batch}) == 1  # image and text-only chats are batched apart
        answers = super().__call__(batch, max_new_tokens)
        # with `answer_qa`, the QA step is scripted so that the model's own rationales and
        # judgements are asked for; a random model could never write the questions' JSON
        return [qa_answer(chat) if self.answer_qa and step_of(chat) == "qa" else a for chat, a in zip(batch, answers)]


class ScriptedVLM:
    """A stand-in generator answering each step in the expected format."""

    model_name, model_key = "scripted-vlm", "scripted:1"

    def __init__(self, broken_first_qa: bool = False):
        self.batches: list[list[str]] = []
        self.broken_first_qa = broken_first_qa

    def __call__(self, batch, max_new_tokens):
        self.batches.append([step_of(chat) for chat in batch])
        answers = []
        for chat in batch:
            step = step_of(chat)
            assert images_in(chat) == (0 if step == "judge" else 1)  # only the judge reads text alone
            if step == "qa" and self.broken_first_qa and len(chat) == 1:
                answers.append("Sure! {questions: [oops")
            else:
                answers.append({"qa": qa_answer, "rationale": rationale_answer, "judge": judge_answer}[step](chat))
        return answers


def run(images, gen, tmp_path, generator):
    return generate_with_local(images, gen, tmp_path / "cache.sqlite", progress=False, generator=generator)


def test_a_model_folder_answers_in_batches_and_bad_json_is_quarantined(tiny_llava, images, tmp_path):
    vlm = CountingVLM(tiny_llava, "cpu")
    records, quarantined, metrics = run(images, settings(tiny_llava), tmp_path, vlm)
    # a random model writes no JSON: every image's QA is asked twice, then quarantined with why
    assert records == [] and [q["image_id"] for q in quarantined] == ["img0", "img1", "img2"]
    assert all(q["reason"].startswith("qa: no JSON object found") for q in quarantined)
    assert metrics["calls"] == 2 * len(images) == sum(len(b) for b in vlm.batches)
    assert metrics["batches"] == len(vlm.batches) < metrics["calls"]
    assert metrics["prompt_tokens"] > 0 and metrics["completion_tokens"] > 0

    assert all(q["attempts"] == 2 and q["raw"] is not None for q in quarantined)

    # a failure is never frozen in the cache: the rerun asks the model again, and only that
    rerun = CountingVLM(tiny_llava, "cpu")
    again = run(images, settings(tiny_llava), tmp_path, rerun)
    assert again[2]["calls"] == metrics["calls"] and again[2]["cache_hits"] == 0 and rerun.model is not None
    assert again[:2] == (records, quarantined)  # greedy decoding: the same answers, the same reasons


def test_the_model_runs_all_three_steps_in_batches(tiny_llava, images, tmp_path):
    vlm = CountingVLM(tiny_llava, "cpu", answer_qa=True)
    records, quarantined, metrics = run(images, settings(tiny_llava), tmp_path, vlm)
    steps = [s for b in vlm.batches for s in b]
    assert {"qa", "rationale", "judge"} <= set(steps)
    assert steps.count("rationale") >= 2 * QUESTIONS * len(images)  # each question's two rationales, by the model
    assert max(len(b) for b in vlm.batches) == 4 and len(vlm.batches) < len(steps)
    # eight random tokens are neither a rationale of ten characters nor a judgement: every item
    # is quarantined (that records come out of these steps is shown with scripted answers below)
    assert records == [] and len(quarantined) == QUESTIONS * len(images)
    assert {q["reason"].split(":")[0] for q in quarantined} <= {"rationale", "judge"}
    assert [q["id"] for q in quarantined] == sorted(q["id"] for q in quarantined)


def test_scripted_answers_become_records_with_the_published_fields(tmp_path, images):
    model = tmp_path / "model"  # only its fingerprint is read: the generator replaces it
    model.mkdir()
    scripted = ScriptedVLM(broken_first_qa=True)
    records, quarantined, metrics = run(images, settings(model, batch_size=8), tmp_path, scripted)
    assert quarantined == []
    assert [r["id"] for r in records] == [f"img{i}-q{j}" for i in range(3) for j in range(QUESTIONS)]
    for r in records:
        assert all(isinstance(r[f], str) and r[f] for f in PUBLISHED_FIELDS)
        assert r["provenance"]["teacher"] == "local" and r["provenance"]["qa_model"] == "scripted-vlm"
        assert r["correct_rationale"].startswith("The image shows") and set(r["judge"]) == {"consistent", "reason"}
    # the QA chats, their retries (every first answer is malformed), the 12 rationales (a full
    # batch and the rest), the judgements: 5 generate calls for 3 * (2 + 2 * 2 + 2) = 24 chats
    assert [sorted(set(b)) for b in scripted.batches] == [["qa"], ["qa"], ["rationale"], ["rationale"], ["judge"]]
    assert [len(b) for b in scripted.batches] == [3, 3, 8, 4, 6]
    assert metrics["calls"] == 24 and metrics["batches"] == 5

    # each malformed first QA answer led to a usable one: the rerun replays those conversations
    # from the cache, so it takes the same path, generates nothing and never loads the model
    rerun = ScriptedVLM()
    again = run(images, settings(model, batch_size=8), tmp_path, rerun)
    assert rerun.batches == [] and again[:2] == (records, quarantined)
    assert again[2]["calls"] == 0 and again[2]["cache_hits"] == 24


def test_a_failing_chat_is_quarantined_without_sinking_its_batch(tmp_path, images):
    poisoned = image_data_url(images[1][1])

    class OneBadImage(ScriptedVLM):
        def __call__(self, batch, max_new_tokens):
            if any(step_of(chat) == "qa" and poisoned in json.dumps(chat) for chat in batch):
                raise RuntimeError("out of memory")
            return super().__call__(batch, max_new_tokens)

    model = tmp_path / "model"
    model.mkdir()
    records, quarantined, metrics = run(images, settings(model), tmp_path, OneBadImage())
    # the failed batch was retried chat by chat: only the poisoned image's QA is lost
    assert [r["id"] for r in records] == [f"img{i}-q{j}" for i in (0, 2) for j in range(QUESTIONS)]
    assert [(q["image_id"], q["reason"]) for q in quarantined] == [
        ("img1", "qa: local generation failed: RuntimeError('out of memory')")]
    assert metrics["failed"] == 1


def test_a_model_that_does_not_load_stops_the_run(tmp_path, images):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(TeacherConfigError, match="cannot load the local teacher from .*broken"):
        run(images, settings(broken), tmp_path, LocalVLM(broken, "cpu"))
    with pytest.raises(TeacherConfigError, match="not a model folder"):
        LocalVLM(tmp_path / "missing")


def test_the_cache_key_follows_the_model_files(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"a" * 100)
    before = model_fingerprint(folder)
    (folder / "model.safetensors").write_bytes(b"b" * 100)
    assert model_fingerprint(folder) != before


def test_generate_writes_the_local_teachers_records(tmp_path, images, monkeypatch):
    """The generate step with `teacher: local`: the image-folder outputs of the chat teacher."""

    import reverie.generate
    from reverie.generate import generate_from_image_folder
    from reverie.settings import Params

    from .conftest import tiny_params_dict

    model = tmp_path / "model"
    model.mkdir()
    data = tiny_params_dict(tmp_path)
    data["generate"] = settings(model, images_dir=str(images[0][1].parent), eval_fraction=0.4,
                                cache_path=str(tmp_path / "cache.sqlite")).model_dump()
    params = Params.model_validate(data)
    logged = []  # MLflow itself is exercised by the chat teacher's tests (and costs seconds)
    monkeypatch.setattr(reverie.generate, "log_generation_run", lambda params, metrics: logged.append(metrics))

    class OneContradiction(ScriptedVLM):
        """The judge finds the first item it reads contradictory, and every other consistent."""
        def __init__(self):
            super().__init__()
            self.flagged: list[str] = []

        def __call__(self, batch, max_new_tokens):
            answers = super().__call__(batch, max_new_tokens)
            for i, chat in enumerate(batch):
                if step_of(chat) == "judge":
                    contradiction = not self.flagged
                    if contradiction:
                        self.flagged.append(json.dumps(chat))
                    answers[i] = json.dumps({"contradiction": "yes" if contradiction else "no", "reason": "scripted"})
            return answers

    judge = OneContradiction()
    teacher = LocalTeacher(params.generate, generator=judge)
    result = generate_from_image_folder(params, tmp_path / "data", progress=False, teacher=teacher)
    assert logged == [result.metrics]
    assert len(result.raw) == 3 * QUESTIONS and result.metrics["teacher_calls"] == 3 * (1 + 2 * QUESTIONS + QUESTIONS)
    # the item the judge rejected is the one left out; the five others are kept
    filtered = [json.loads(line) for line in (tmp_path / "data" / "records" / "filtered.jsonl").read_text().splitlines()]
    assert len(filtered) == result.metrics["records"] == 3 * QUESTIONS - 1
    [dropped] = [r for r in result.raw if r["id"] not in {f["id"] for f in filtered}]
    assert json.dumps(dropped["question"])[1:-1] in judge.flagged[0]
    assert all(f["question"] and json.dumps(f["question"])[1:-1] not in judge.flagged[0] for f in filtered)
    for r in result.raw:
        assert (tmp_path / "data" / r["image"]).is_file() and r["image"].startswith(f"images/{r['split']}/")


def test_params_select_the_local_teacher(tmp_path, images, tiny_llava, monkeypatch):
    """`generate.teacher: local` alone routes the generate step to the model folder."""
    import reverie.generate
    from reverie.generate import generate_dataset
    from reverie.settings import Params
    from reverie.stage import StageFailed

    from .conftest import tiny_params_dict

    monkeypatch.setattr(reverie.generate, "log_generation_run", lambda params, metrics: None)
    data = tiny_params_dict(tmp_path)
    data["generate"] = settings(tiny_llava, images_dir=str(images[0][1].parent),
                                cache_path=str(tmp_path / "cache.sqlite")).model_dump()
    # a random model writes no JSON: nothing is kept, which is an error naming the quarantine
    with pytest.raises(StageFailed, match=r"the local teacher kept no record from 3 images .*quarantine.jsonl"):
        generate_dataset(Params.model_validate(data), tmp_path / "data", progress=False)
    quarantine = [json.loads(line) for line in (tmp_path / "data" / "records" / "quarantine.jsonl").read_text().splitlines()]
    assert len(quarantine) == 3 and all(q["reason"].startswith("qa: no JSON object found") for q in quarantine)


def test_a_model_under_a_cache_folder_is_fingerprinted_by_its_files(tmp_path):
    """Models often live under ~/.cache: only a .cache inside the model folder is left out."""
    folder = tmp_path / ".cache" / "models" / "m"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"one")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "download.lock").write_bytes(b"x")
    before = model_fingerprint(folder)
    (folder / ".cache" / "download.lock").write_bytes(b"y")
    assert model_fingerprint(folder) == before
    (folder / "model.safetensors").write_bytes(b"two")
    assert model_fingerprint(folder) != before


def test_large_files_are_fingerprinted_by_sample_and_time(tmp_path, monkeypatch):
    import os

    import reverie.io

    monkeypatch.setattr(reverie.io, "LARGE_FILE", 64)
    monkeypatch.setattr(reverie.io, "SAMPLE_BYTES", 8)
    weights = tmp_path / "m" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"h" * 100 + b"m" * 100 + b"t" * 100)
    os.utime(weights, ns=(1, 1))
    before = model_fingerprint(weights.parent)
    weights.write_bytes(b"h" * 100 + b"M" * 100 + b"t" * 100)  # a fine-tune of the middle only
    assert model_fingerprint(weights.parent) != before  # caught by its new modification time
    os.utime(weights, ns=(1, 1))
    assert model_fingerprint(weights.parent) == before  # (what the time is there for)
