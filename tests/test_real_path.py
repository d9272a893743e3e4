"""The research path end to end through `dvc repro`, on the CPU, with tiny stand-ins in the
real formats (DESIGN.md, "The research path the default stands in for"; issue 14 item 4):

- the student: a random-weight LLaVA saved as a Hugging Face folder with LLaVA-1.5's real
  classes and layout (CLIPImageProcessor, a Llama tokenizer with byte fallback and `<image>`,
  `<pad>` added after the vocabulary, llava-hf's chat template, `default` feature selection
  from the second-last layer, a vocabulary padded past the tokenizer's), named as
  `base.model.pretrained`, so `base` copies it instead of training;
- the data: the released REVERIE instances (`reverie.json`'s LLaVA conversations, positive and
  negative per question) over a few images (`generate.teacher: reverie_json`);
- the recipe: a LLaVA-format mix under mix/ (`tune.mix`), bf16 autocast, gradient
  checkpointing, accumulation (micro-batch < batch), truncation, images streamed by a worker;
- the benchmarks: POPE, MME, MMBench and ScienceQA-IMG files in their published layouts under
  eval_data/, written by tests/test_real_benchmarks.py's fixture writers, at LLaVA's own
  prompts and token budgets.

One variant, one seed, 16 records, a 2-layer model: the test checks that every stage runs
on real formats and that every benchmark's figures reach MLflow, the report and LLaVA's
answer files, not that the model learns (tests/test_learning.py does that on the default)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import dvc, make_project, merge, tiny_params_dict
from tests.test_real_benchmarks import POPE_OBJECTS, write_mmbench, write_mme, write_pope, write_scienceqa

# llava-hf/llava-1.5-7b-hf's chat template (its processor's chat_template.json)
LLAVA_HF_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
IMAGE_SIZE, PATCH = 32, 8  # llava-1.5: 336 and 14; the same arithmetic, 16 image tokens instead of 576

# ---- the released data --------------------------------------------------------------------
POSITIVE = "Explain why. Including any necessary facts or knowledge."
NEGATIVE = "Explain why this answer is wrong: {}. Including any necessary facts or knowledge."
QUESTIONS = [  # one of each of the four question types, cycled over the images
    ("Is there a red square in the image?", "Yes", "No"),
    ("What colour is the large shape?\nAnswer the question using a single word or phrase.", "Red", "Blue"),
    ("Which shape is shown?\nA. a circle\nB. a square\nC. a star\n"
     "Answer with the option's letter from the given choices directly.", "B", "A"),
    ("Why is the shape in the middle of the picture?", "It was placed at the centre.", "It fell off the table."),
]


def write_release(root: Path, images: int = 8) -> Path:
    """The published `reverie.json` layout: per question one positive instance (the question
    and its answer, then the positive prompt and rationale) and one negative instance (the
    negative prompt naming the confusing answer, then the negative rationale); images under
    coco/ and vg/ as in the release."""
    rows = []
    for i in range(images):
        rel = f"{'coco/train2017' if i % 2 else 'vg/VG_100K'}/{i:012d}.jpg"
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (48 + 8 * i, 40), (30 * i, 200 - 20 * i, 60)).save(root / "images" / rel)
        for k in range(2):
            question, answer, confusing = QUESTIONS[(2 * i + k) % len(QUESTIONS)]
            human = f"<image>\n{question}"
            rows.append({"id": f"{i}-{k}-pos", "image": rel, "conversations": [
                {"from": "human", "value": human}, {"from": "gpt", "value": answer},
                {"from": "human", "value": POSITIVE},
                {"from": "gpt", "value": f"The picture shows it plainly: {answer.lower()} is what it holds."}]})
            rows.append({"id": f"{i}-{k}-neg", "image": rel, "conversations": [
                {"from": "human", "value": human}, {"from": "gpt", "value": answer},
                {"from": "human", "value": NEGATIVE.format(confusing)},
                {"from": "gpt", "value": f"Nothing in the picture supports {confusing.lower()}; it shows otherwise."}]})
    path = root / "reverie.json"
    path.write_text(json.dumps(rows, indent=1))
    return path


def write_mix(project: Path, count: int = 6) -> None:
    """A slice of llava_v1_5_mix665k.json under mix/: multi-turn conversations with an image,
    and a text-only ShareGPT row, which the import sets aside."""
    rows = []
    for i in range(count):
        rel = f"coco/train2017/{i:012d}.jpg"
        (project / "mix/images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 48), (20, 30 * i, 200)).save(project / "mix/images" / rel)
        rows.append({"id": f"{i:09d}", "image": rel, "conversations": [
            {"from": "human", "value": "What is the colour of the picture?\n<image>"},
            {"from": "gpt", "value": "The picture is mostly blue."},
            {"from": "human", "value": "Is there anything else?"}, {"from": "gpt", "value": "No, it is plain."}]})
    rows.append({"id": "sharegpt-1", "conversations": [{"from": "human", "value": "Hello"},
                                                       {"from": "gpt", "value": "Hi there."}]})
    (project / "mix/llava_mix.json").write_text(json.dumps(rows))


# ---- the student --------------------------------------------------------------------------
def write_tiny_llava(folder: Path, corpus: list[str]) -> Path:
    """A LLaVA-1.5-shaped checkpoint with random weights, saved as llava-hf saves one."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlamaTokenizer, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    # Llama's vocabulary: <unk> <s> </s>, the 256 byte-fallback pieces, then word pieces with
    # SentencePiece's "▁"; LlamaTokenizer gives it Llama's normaliser, decoder and BOS rule
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=700, special_tokens=pieces, show_progress=False))
    model_json = json.loads(bpe.to_str())["model"]
    tokenizer = LlamaTokenizer(vocab=model_json["vocab"], merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" "))
                                                                   for m in model_json["merges"]])
    # llava-hf added <image> (32000) and <pad> (32001) after Llama's 32000 pieces
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    image_id, pad_id = tokenizer.convert_tokens_to_ids("<image>"), tokenizer.convert_tokens_to_ids("<pad>")
    assert (image_id, pad_id) == (len(tokenizer) - 2, len(tokenizer) - 1)
    torch.manual_seed(0)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=32)
    text = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=2, vocab_size=(len(tokenizer) + 63) // 64 * 64,  # 32064 in llava-1.5
                       max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=pad_id,
                       tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_id, vision_feature_layer=-2,
                         vision_feature_select_strategy="default", projector_hidden_act="gelu",
                         image_seq_length=(IMAGE_SIZE // PATCH) ** 2, tie_word_embeddings=False)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = pad_id
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                           crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, resample=3),
        tokenizer=tokenizer, patch_size=PATCH, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=LLAVA_HF_TEMPLATE)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def corpus() -> list[str]:
    texts = [POSITIVE, NEGATIVE, "USER: ASSISTANT:", "Answer the question using a single word or phrase."]
    for question, answer, confusing in QUESTIONS:
        texts += [question, answer, confusing]
    for objects in POPE_OBJECTS.values():
        texts += [f"Is there a {o} in the image?" for o in objects]
    return texts * 3


# ---- the benchmark files ------------------------------------------------------------------
def write_suites(eval_data: Path) -> dict:
    """The four benchmarks in the layout eval_data/README.md gives, and their `evaluate.suites`."""
    write_pope(eval_data / "pope")
    write_mme(eval_data / "MME")
    (eval_data / "mmbench").mkdir(parents=True, exist_ok=True)
    write_mmbench(eval_data / "mmbench" / "mmbench_dev_20230712.tsv")
    write_scienceqa(eval_data / "scienceqa")
    return {"root": "eval_data",
            "pope": {"labels": {s: f"pope/coco/coco_pope_{s}.json" for s in POPE_OBJECTS}, "images": "pope/val2014",
                     "questions": "pope/llava_pope_test.jsonl"},
            "mme": {"folder": "MME/MME_Benchmark_release_version"},
            "mmbench": {"tsv": "mmbench/mmbench_dev_20230712.tsv"},
            "scienceqa": {"questions": "scienceqa/llava_test_CQM-A.json", "images": "scienceqa/images/test"}}


# what each fixture file holds (tests/test_real_benchmarks.py): items per benchmark
FIXTURE_ITEMS = {"pope": 12, "mme": 12, "mmbench": 7, "scienceqa": 2}


@pytest.fixture(scope="module")
def real_path(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real_path")
    release = write_release(tmp / "release")
    student = write_tiny_llava(tmp / "hf" / "tiny-llava-1.5", corpus())
    params = merge(tiny_params_dict(tmp), {
        "generate": {"teacher": "reverie_json",
                     "reverie_json": {"path": str(release), "images_dir": str(tmp / "release" / "images"),
                                      "eval_fraction": 0.25}},
        "base": {"model": {"pretrained": str(student)}},
        "tune": {"variants": ["pos_neg"], "seeds": [0], "epochs": 1, "batch_size": 8, "micro_batch_size": 4,
                 "precision": "bf16", "gradient_checkpointing": True, "max_length": 64, "lr": 1e-3,
                 "image_cache_max_mb": 0, "dataloader_workers": 1,  # streamed by a DataLoader worker
                 "lora": {"r": 4, "alpha": 8},
                 "mix": {"path": "mix/llava_mix.json", "images_root": "mix/images", "count": 4}},
        "evaluate": {"batch_size": 16},
        "report": {"baseline": "pos_neg"},
    })
    project = tmp / "project"
    make_project(project, params)
    write_mix(project)
    params["evaluate"]["suites"] = write_suites(project / "eval_data")
    import yaml

    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc(project, "repro")
    return project, params, student, result


def test_dvc_repro_runs_every_stage_of_the_real_path(real_path):
    project, params, student, result = real_path
    for name in ("generate", "validate", "base", "tune@pos_neg-0", "evaluate@pos_neg-0", "chance", "report"):
        assert f"Running stage '{name}'" in result.stdout, name
    gen = json.loads((project / "metrics/generate.json").read_text())
    assert gen["records"] == 16 and gen["release_images"] == 8
    val = json.loads((project / "metrics/validate.json").read_text())
    assert val["success"] and val["train_records"] > 0 and val["eval_records"] > 0
    # base: the pretrained folder copied as it is, not trained
    base = json.loads((project / "metrics/base.json").read_text())
    assert base["pretrained"] == str(student) and base["train_seconds"] == 0.0 and base["passed"]
    from safetensors.torch import load_file

    copied, original = load_file(project / "models/base/model.safetensors"), load_file(student / "model.safetensors")
    assert copied.keys() == original.keys() and all((copied[k] == original[k]).all() for k in original)
    # tune: the variant's samples and the mix, in accumulated bf16 steps
    tune = json.loads((project / "metrics/tune/pos_neg-s0.json").read_text())
    train_records = val["train_records"]
    assert tune["mix_conversations"] == 4 and tune["mix_set_aside"] == 1
    assert tune["samples"] == 3 * train_records + 4 and tune["tokens_by_kind"]["llava_mix"] > 0
    assert tune["steps"] == tune["total_steps"] >= 2  # finished, each step two micro-batches of 4
    assert tune["truncated_samples"] > 0  # tune.max_length cut the longest rationale samples


def test_the_tuned_students_mlflow_run_holds_every_real_benchmark(real_path):
    import mlflow

    project, params, *_ = real_path
    info = json.loads((project / "models/pos_neg-s0/mlflow_run.json").read_text())
    run = mlflow.MlflowClient(params["project"]["mlflow_tracking_uri"]).get_run(info["run_id"])
    assert run.data.tags["variant"] == "pos_neg" and run.info.status == "FINISHED"
    logged = run.data.params
    assert (logged["tune.precision"], logged["tune.gradient_checkpointing"], logged["tune.micro_batch_size"],
            logged["tune.batch_size"]) == ("bf16", "True", "4", "8")
    metrics = run.data.metrics
    expected = [f"pope.{split}.{m}" for split in POPE_OBJECTS for m in ("f1", "accuracy", "yes_ratio")] + [
        "mme.perception.score", "mme.cognition.score", "mme.existence.score", "mme.artwork.score",
        "mme.code_reasoning.score", "mmbench.circular_accuracy",
        "mmbench.category.attribute_recognition.circular_accuracy",
        "mmbench.l2_category.Coarse Perception.circular_accuracy", "scienceqa.accuracy"]
    missing = [k for k in expected if k not in metrics]
    assert not missing, f"not in the MLflow run: {missing}"
    assert "mme.score" not in metrics  # perception and cognition are never summed
    assert 0 <= metrics["mme.perception.score"] <= 400 and 0 <= metrics["mme.cognition.score"] <= 200
    # the same figures in the stage's DVC metrics
    evaluated = json.loads((project / "metrics/eval/pos_neg-s0.json").read_text())
    assert all(evaluated[k] == pytest.approx(metrics[k]) for k in expected)
    # and the held-out REVERIE questions beside them, from the first evaluate.eval_images images
    held_out = [json.loads(line) for line in (project / "data/split/eval.jsonl").read_text().splitlines()]
    first = sorted({r["image"] for r in held_out})[: params["evaluate"]["eval_images"]]
    assert evaluated["questions"] == sum(FIXTURE_ITEMS.values()) + sum(r["image"] in first for r in held_out)
    assert "reasoning.accuracy" in evaluated and "reasoning.accuracy" in metrics


def test_the_report_names_every_real_benchmark(real_path):
    project, *_ = real_path
    text = (project / "reports/report.md").read_text()
    for name in ("POPE", "MME perception (max 2000)", "MME cognition", "MMBench", "ScienceQA-IMG",
                 "## Real benchmarks in detail", "mmbench.l2_category.Coarse Perception.circular_accuracy"):
        assert name in text, name
    table = json.loads((project / "reports/ablation.json").read_text())
    assert "scienceqa.accuracy" in table["variants"]["pos_neg"]


def test_llava_answer_files_are_written_for_every_real_benchmark(real_path):
    project, *_ = real_path
    out = project / "predictions/llava/pos_neg-s0"
    lines = lambda name: [json.loads(line) for line in (out / name).read_text().splitlines()]  # noqa: E731
    assert len(lines("pope_answers.jsonl")) == len(lines("pope_questions.jsonl")) == FIXTURE_ITEMS["pope"]
    assert len(lines("mme_answers.jsonl")) == FIXTURE_ITEMS["mme"]
    assert len(lines("mmbench_answers.jsonl")) == FIXTURE_ITEMS["mmbench"]
    assert len(lines("scienceqa_answers.jsonl")) == FIXTURE_ITEMS["scienceqa"]
    assert (out / "mmbench_submission.tsv").is_file() and (out / "README.md").is_file()
    assert all(a["model_id"] == "pos_neg-s0" for a in lines("pope_answers.jsonl"))
    # nothing left to do: a second repro reruns no stage
    again = dvc(project, "repro")
    assert "Running stage" not in again.stdout


def test_without_scene_graphs_eval_images_caps_the_held_out_records_by_their_own_images(tmp_path):
    """The released data has no scene graphs: `evaluate.eval_images` takes the first held-out
    images of the records themselves (capping by scenes kept none, and the reasoning
    benchmark was silently empty on the real path)."""
    from reverie.evaluation.run import benchmark_items
    from reverie.io import write_jsonl
    from reverie.settings import Params

    (tmp_path / "data/scenes").mkdir(parents=True)
    (tmp_path / "data/scenes/scenes.jsonl").write_text("")
    records = [{"id": f"r{i}", "image": f"images/eval/{i // 2}.jpg", "question": "Is the square red?",
                "correct_answer": "yes", "question_type": "yes_no", "reasoning": "multi_step", "options": None}
               for i in range(8)]
    write_jsonl(tmp_path / "split/eval.jsonl", records[::-1])
    write_jsonl(tmp_path / "split/train.jsonl", [])
    eval_items, train_items = benchmark_items(Params.model_validate({"evaluate": {"eval_images": 3}}),
                                              tmp_path / "data", tmp_path / "split")
    assert sorted(it.qid for it in eval_items) == [f"r{i}" for i in range(6)] and train_items == []
    assert {it.benchmark for it in eval_items} == {"reasoning"}
