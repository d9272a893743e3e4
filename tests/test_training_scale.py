"""The training loop's settings for real models, on a tiny model: accumulation, truncation,
bf16 autocast and gradient checkpointing on the CPU, streamed images, the LLaVA mix."""
import json
from pathlib import Path

import pytest
import torch

from reverie.settings import LoraSettings, MixSettings, TuneSettings
from reverie.student.model import build_tiny, image_token_count, train_tokenizer
from reverie.student.samples import IGNORE, RATIONALE, RESPONSE, ChatEncoder, Conversation, Turn
from reverie.student.batching import ImageStream, ImageTable, collate, image_source
from reverie.student.train import TrainConfig, train, truncate
from reverie.tuning import apply_lora, mix_conversations
from tests.test_training import TINY, make_data


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    torch.manual_seed(0)
    convs = make_data(root, 64)
    tok = train_tokenizer(["What color is the image?", "red", "blue", "USER: ASSISTANT:", "Explain why."] * 5, 300)
    model, processor = build_tiny(TINY, tok, 16)
    enc = ChatEncoder(tok, image_token_count(model.config))
    samples = [enc.encode(c) for c in convs]
    return model, processor, enc, samples, ImageTable(processor, root, [s.image for s in samples]), root


def run(model, samples, images, pad, steps=2, **cfg):
    import copy

    m = copy.deepcopy(model)
    config = TrainConfig(**{"epochs": 2, "batch_size": 32, "lr": 1e-3, "seed": 0, "max_steps": steps} | cfg)
    result = train(m, samples, images, config, pad, progress=False, log_every=1)
    return m, result


def weights(model):
    return {n: p.detach().float().clone() for n, p in model.named_parameters()}


def test_two_accumulated_micro_batches_of_16_equal_one_batch_of_32(tiny):
    model, processor, enc, samples, images, _ = tiny
    pad = processor.tokenizer.pad_token_id
    for norm in ("token", "sample"):
        one, r_one = run(model, samples, images, pad, loss_normalization=norm)
        acc, r_acc = run(model, samples, images, pad, loss_normalization=norm, micro_batch_size=16)
        assert [h["loss"] for h in r_acc.history] == pytest.approx([h["loss"] for h in r_one.history], rel=1e-5)
        w1, w2 = weights(one), weights(acc)
        assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-5
    # independently: the first step's loss is the model's own mean over the batch's target tokens
    from reverie.student.train import length_grouped_batches

    first = length_grouped_batches([len(s.input_ids) for s in samples], 32, 2, 0)[0]
    batch = [samples[i] for i in first]
    ids, labels, _, mask = collate(batch, pad)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, pixel_values=images([s.image for s in batch]),
                         labels=labels).loss.item()
    assert r_acc.history[0]["loss"] == pytest.approx(expected, rel=1e-5)


def test_truncation_cuts_ids_labels_and_targets_together_and_counts(tiny):
    model, _, enc, _, _, _ = tiny
    conv = Conversation("x", "img/0.png", (Turn("What color is the image?", "blue", RESPONSE),
                                           Turn("Explain why.", "blue blue blue red red red", RATIONALE)), "positive")
    s = enc.encode(conv)
    image_id = model.config.image_token_id
    cut_at = len(s.input_ids) - 4  # inside the rationale's answer
    (t,), counts = truncate([s], cut_at, image_id)
    assert (t.input_ids, t.labels, t.targets) == (s.input_ids[:cut_at], s.labels[:cut_at], s.targets[:cut_at])
    assert counts == {"truncated_samples": 1, "truncated_tokens": 4, "samples_without_targets": 0}
    # masks stay aligned: a trained token is a token of an answer, with its kind
    assert all((label == IGNORE) == (kind == 0) for label, kind in zip(t.labels, t.targets))
    assert all(label in (IGNORE, tok) for label, tok in zip(t.labels, t.input_ids))
    # a cut right after the first prompt leaves no target token
    first_target = next(i for i, label in enumerate(s.labels) if label != IGNORE)
    (u,), counts = truncate([s], first_target, image_id)
    assert counts["samples_without_targets"] == 1 and all(label == IGNORE for label in u.labels)
    with pytest.raises(ValueError, match="image tokens"):
        truncate([s], 3, image_id)
    assert truncate([s], len(s.input_ids), image_id)[1]["truncated_samples"] == 0


def test_training_with_max_length_reports_the_cut_samples(tiny):
    model, processor, _, samples, images, _ = tiny
    longest = max(len(s.input_ids) for s in samples)
    _, result = run(model, samples, images, processor.tokenizer.pad_token_id, steps=1, max_length=longest - 1)
    assert result.metrics["truncated_samples"] == sum(len(s.input_ids) == longest for s in samples) > 0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_autocast_runs_on_the_cpu_and_keeps_trainable_weights_fp32(tiny, precision):
    model, processor, _, samples, images, _ = tiny
    lora = apply_lora(__import__("copy").deepcopy(model), LoraSettings())
    tuned, result = run(lora, samples, images, processor.tokenizer.pad_token_id, precision=precision,
                        micro_batch_size=16)
    _, reference = run(lora, samples, images, processor.tokenizer.pad_token_id)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    # half-precision autocast moves the loss a little, not a lot
    assert losses[0] == pytest.approx(reference.history[0]["loss"], rel=0.05)
    assert all(p.dtype == torch.float32 for p in tuned.parameters() if p.requires_grad)


def test_gradient_checkpointing_gives_the_same_losses_and_weights(tiny):
    model, processor, _, samples, images, _ = tiny
    lora = apply_lora(__import__("copy").deepcopy(model), LoraSettings())
    pad = processor.tokenizer.pad_token_id
    plain, r_plain = run(lora, samples, images, pad)
    checkpointed, r_ckpt = run(lora, samples, images, pad, gradient_checkpointing=True)
    flags = {n: m.gradient_checkpointing for n, m in checkpointed.named_modules() if hasattr(m, "gradient_checkpointing")}
    assert flags and all(flags.values())  # the tower's encoder and the language model recompute
    assert [h["loss"] for h in r_ckpt.history] == pytest.approx([h["loss"] for h in r_plain.history], rel=1e-6)
    w1, w2 = weights(plain), weights(checkpointed)
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-6


def test_the_streaming_dataloader_gives_the_in_memory_tables_batches(tiny):
    model, processor, _, samples, images, root = tiny
    rels = [[s.image for s in samples[i:i + 8]] for i in range(0, 40, 8)]
    stream = ImageStream(processor, root, workers=2)
    for streamed, rel in zip(stream.batches(rels), rels):
        assert torch.equal(streamed, images(rel))
    # and the same training, to the bit
    pad = processor.tokenizer.pad_token_id
    a, ra = run(model, samples, images, pad)
    b, rb = run(model, samples, stream, pad)
    assert [h["loss"] for h in ra.history] == [h["loss"] for h in rb.history]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    # the source is chosen by size: a table within the budget, a stream beyond it
    assert isinstance(image_source(processor, root, [s.image for s in samples], 1.0, 2), ImageTable)
    assert isinstance(image_source(processor, root, [s.image for s in samples], 0.0, 2), ImageStream)


def test_the_llava_mix_is_read_by_the_import_with_exact_loss_masks(tiny, tmp_path, monkeypatch):
    from PIL import Image

    model, processor, enc, _, _, _ = tiny
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mix/images/coco").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (16, 16), (200, 30 * i, 30)).save(tmp_path / f"mix/images/coco/{i}.png")
    rows = [{"id": f"m{i}", "image": f"coco/{i}.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat color is the image?"}, {"from": "gpt", "value": "red"},
        {"from": "human", "value": "Explain why."}, {"from": "gpt", "value": "red red blue"}]} for i in range(4)]
    rows.append({"id": "text-only", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]})
    rows.append({"id": "missing", "image": "coco/none.png", "conversations": rows[0]["conversations"]})
    (tmp_path / "mix/mix.json").write_text(json.dumps(rows))
    mix = MixSettings(path="mix/mix.json", images_root="mix/images", count=3)
    conversations, counts = mix_conversations(mix)
    assert counts == {"mix_conversations": 3, "mix_available": 4, "mix_set_aside": 2}
    assert conversations == mix_conversations(mix)[0]  # one seeded choice, the same for every run
    assert all(Path(c.image).is_absolute() and Path(c.image).is_file() for c in conversations)
    s = enc.encode(conversations[0])
    # the loss falls on the two answers (and their end tokens), nothing else
    trained = [tok for tok, label in zip(s.input_ids, s.labels) if label != IGNORE]
    assert trained == enc._ids(" red") + [enc.eos] + enc._ids(" red red blue") + [enc.eos]
    assert s.input_ids.count(model.config.image_token_id) == image_token_count(model.config)
    assert set(s.targets) == {0, RESPONSE}
    # the images load from their own root, beside the variant's
    table = ImageTable(processor, tmp_path / "elsewhere", [c.image for c in conversations])
    assert table([conversations[0].image]).shape[0] == 1


def test_loop_and_mix_settings_are_validated():
    with pytest.raises(ValueError, match="micro_batch_size"):
        TuneSettings(batch_size=8, micro_batch_size=16)
    with pytest.raises(ValueError, match="exactly one"):
        MixSettings(path="mix/a.json", images_root="mix/images")
    with pytest.raises(ValueError, match="under mix/"):
        MixSettings(path="/data/a.json", images_root="mix/images", fraction=0.5)
    with pytest.raises(ValueError, match="path"):
        MixSettings(fraction=0.5)
    assert TuneSettings().precision == "fp32" and TuneSettings().micro_batch_size is None


def test_the_7b_profile_applies_as_validated_params_overrides():
    from reverie.orchestration import profile_overrides
    from reverie.settings import load_params

    root = Path(__file__).resolve().parents[1]
    params = load_params(root / "params.yaml", profile_overrides(root / "configs/llava-1.5-7b.yaml"))
    tune = params.tune
    assert params.base.model.pretrained == "llava-hf/llava-1.5-7b-hf"
    assert (tune.lora.r, tune.lora.alpha, tune.lr, tune.epochs, tune.batch_size) == (128, 256, 2e-4, 1, 128)
    assert (tune.max_length, tune.precision, tune.gradient_checkpointing) == (2048, "bf16", True)
    assert tune.mix.path == "mix/llava_v1_5_mix665k.json" and tune.mix.fraction == 1.0


def test_tune_variant_runs_the_real_model_recipe_with_a_mix(tiny, tmp_path, monkeypatch):
    """tune_variant with bf16, checkpointing, accumulation, max_length and tune.mix, two steps."""
    from PIL import Image

    from reverie.io import write_jsonl
    from reverie.settings import Params
    from reverie.tuning import tune_variant
    from tests.conftest import merge, tiny_params_dict

    model, processor, *_ = tiny
    monkeypatch.chdir(tmp_path)
    model.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    (tmp_path / "data/img").mkdir(parents=True)
    (tmp_path / "mix/images").mkdir(parents=True)
    records = []
    for i in range(8):
        Image.new("RGB", (16, 16), (200, 20 * i, 20)).save(tmp_path / f"data/img/{i}.png")
        Image.new("RGB", (16, 16), (20, 20 * i, 200)).save(tmp_path / f"mix/images/{i}.png")
        records.append({"id": f"r{i}", "image": f"img/{i}.png", "question": "What color is the image?",
                        "correct_answer": "red", "confusing_answer": "blue", "correct_rationale": "red red red",
                        "incorrect_rationale": "blue is wrong red", "question_type": "short_answer"})
    write_jsonl(tmp_path / "split/train.jsonl", records)
    (tmp_path / "mix/mix.json").write_text(json.dumps([
        {"id": f"m{i}", "image": f"{i}.png", "conversations": [{"from": "human", "value": "<image>\nWhat color?"},
                                                              {"from": "gpt", "value": "blue"}]} for i in range(8)]))
    params = Params.model_validate(merge(tiny_params_dict(tmp_path), {"tune": {
        "batch_size": 8, "micro_batch_size": 4, "precision": "bf16", "gradient_checkpointing": True,
        "max_length": 40, "epochs": 1, "mix": {"path": "mix/mix.json", "images_root": "mix/images", "count": 4}}}))
    metrics = tune_variant(params, "pos_neg", 0, tmp_path / "base", tmp_path / "data", tmp_path / "split",
                           tmp_path / "out", state_dir=tmp_path / "state", progress=False, max_steps=2)
    assert metrics["steps"] == 2 and metrics["samples"] == 8 * 3 + 4
    assert metrics["mix_conversations"] == 4 and metrics["tokens_by_kind"]["llava_mix"] > 0
    assert metrics["truncated_samples"] > 0  # the rationale samples are longer than 40 tokens
    assert metrics["tokens_per_s"] > 0
