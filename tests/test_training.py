"""The student and its training loop on a tiny model built here (no download)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from reverie.settings import LoraSettings, ModelSettings
from reverie.student.model import build_tiny, image_token_count, load_student, train_tokenizer
from reverie.student.samples import ChatEncoder, Conversation, Turn, RESPONSE
from reverie.student.batching import ImageTable
from reverie.student.train import TrainConfig, checkpoint_dir, length_grouped_batches, remove_checkpoints, train
from reverie.tuning import apply_lora

TINY = ModelSettings(vision_hidden=32, text_hidden=32, intermediate=64, vision_layers=1, text_layers=1,
                     vision_heads=2, text_heads=2, vocab_size=300, patch_size=8)
COLORS = {"red": (220, 40, 40), "blue": (40, 80, 220)}


def make_data(root: Path, n: int = 24):
    convs = []
    for i in range(n):
        color = "red" if i % 2 else "blue"
        rel = f"img/{i}.png"
        (root / "img").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), COLORS[color]).save(root / rel)
        convs.append(Conversation(f"c{i}", rel, (Turn("What color is the image?", color, RESPONSE),), "response"))
    return convs


@pytest.fixture
def tiny(tmp_path):
    torch.manual_seed(0)
    convs = make_data(tmp_path)
    tok = train_tokenizer(["What color is the image?", "red", "blue", "USER: ASSISTANT:"] * 5, 300)
    model, processor = build_tiny(TINY, tok, 16)
    enc = ChatEncoder(tok, image_token_count(model.config))
    samples = [enc.encode(c) for c in convs]
    images = ImageTable(processor, tmp_path, [s.image for s in samples])
    return model, processor, samples, images, tmp_path


def batch_loss(model, samples, images, pad_id):
    from reverie.student.batching import collate

    ids, labels, _, mask = collate(samples, pad_id)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, pixel_values=images([s.image for s in samples]), labels=labels).loss.item()


def test_tiny_model_saves_and_loads_by_path(tiny):
    model, processor, *_ , root = tiny
    model.save_pretrained(root / "student")
    processor.save_pretrained(root / "student")
    loaded, loaded_processor = load_student(root / "student")
    assert type(loaded).__name__ == "LlavaForConditionalGeneration"
    assert loaded_processor.tokenizer.chat_template and "<image>" in loaded_processor.tokenizer.get_vocab()
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), n


def test_a_lora_step_lowers_the_loss(tiny):
    model, processor, samples, images, _ = tiny
    pad = processor.tokenizer.pad_token_id
    model = apply_lora(model, LoraSettings(r=4, alpha=8))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any("multi_modal_projector" in n for n in trainable)
    assert not any("vision_tower" in n for n in trainable)
    assert all("language_model" in n or "multi_modal_projector" in n for n in trainable)
    before = batch_loss(model, samples[:8], images, pad)
    train(model, samples, images, TrainConfig(epochs=3, batch_size=8, lr=5e-3, seed=0), pad, progress=False)
    assert batch_loss(model, samples[:8], images, pad) < before


class StepCounter:
    """Counts the model's forward passes: one per training step actually executed."""

    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_hook(self.hook)

    def hook(self, *_):
        self.calls += 1


@pytest.mark.parametrize("crash", ["after_save", "between_renames"])
def test_resume_from_checkpoint_runs_only_the_remaining_steps_and_gives_the_same_weights(tiny, tmp_path, crash):
    model, processor, samples, images, _ = tiny
    pad = processor.tokenizer.pad_token_id
    start = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(epochs=3, batch_size=8, lr=3e-3, seed=1, checkpoint_every=2)
    total = 9  # 24 samples in batches of 8, three epochs
    counter = StepCounter(model)
    straight_run = train(model, samples, images, cfg, pad, progress=False, log_every=1)
    straight = {k: v.clone() for k, v in model.state_dict().items()}
    assert counter.calls == straight_run.steps == total and straight_run.metrics["resumed_from"] == 0

    model.load_state_dict(start)
    ckpt = tmp_path / "ckpt"
    counter.calls = 0
    interrupted = train(model, samples, images, TrainConfig(**{**cfg.__dict__, "max_steps": 5}), pad, ckpt,
                        progress=False, log_every=1)
    assert interrupted.steps == 5 == counter.calls and interrupted.metrics["total_steps"] == total
    assert interrupted.state_dict is None  # unfinished: nothing to save as a model
    # checkpoints after steps 2 and 4 were replaced by the one at the stop: one folder, marked complete
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint"]
    assert json.loads((ckpt / "checkpoint" / "progress.json").read_text()) == {"step": 5}
    if crash == "between_renames":  # the previous checkpoint moved aside, the new one half-written
        (ckpt / "checkpoint").rename(ckpt / "checkpoint.old")
        (ckpt / "checkpoint.tmp").mkdir()
        (ckpt / "checkpoint.tmp" / "model.safetensors").write_bytes(b"truncated")
        (ckpt / "checkpoint.tmp" / "progress.json").write_text('{"step": 7}')  # never trusted: .tmp is unfinished
    model.load_state_dict(start)  # a fresh process: only the checkpoint carries the progress
    counter.calls = 0
    resumed = train(model, samples, images, cfg, pad, ckpt, progress=False, log_every=1)
    # it went on from step 5: the four remaining steps ran, and no other
    assert resumed.metrics["resumed_from"] == 5 and counter.calls == total - 5
    assert resumed.steps == total and [h["step"] for h in resumed.history] == list(range(1, total + 1))
    # the history before the stop came from the checkpoint (the rationale loss is NaN: no rationale tokens)
    assert [(h["step"], h["loss"]) for h in resumed.history[:5]] == [(h["step"], h["loss"]) for h in interrupted.history]
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in straight_run.history], rel=1e-5)
    assert resumed.state_dict.keys() == straight.keys()
    for k in straight:
        assert torch.allclose(straight[k], model.state_dict()[k], atol=1e-6), k


def test_which_checkpoint_a_resume_trusts(tmp_path):
    from reverie.student.train import _checkpoint_due, _checkpoint_to_resume

    def make(name, complete=True):
        (tmp_path / name).mkdir()
        if complete:
            (tmp_path / name / "progress.json").write_text('{"step": 1}')

    assert _checkpoint_to_resume(tmp_path) is None
    make("checkpoint.tmp")  # a save that never finished, even if it looks complete
    assert _checkpoint_to_resume(tmp_path) is None
    make("checkpoint.old")
    assert _checkpoint_to_resume(tmp_path) == tmp_path / "checkpoint.old"
    make("checkpoint", complete=False)  # the current one half-moved: the previous one is used
    assert _checkpoint_to_resume(tmp_path) == tmp_path / "checkpoint.old"
    (tmp_path / "checkpoint" / "progress.json").write_text('{"step": 2}')
    assert _checkpoint_to_resume(tmp_path) == tmp_path / "checkpoint"
    # every 3 steps of 9: after steps 3 and 6, not after 9 (the model itself is saved then)
    assert [d for d in range(1, 10) if _checkpoint_due(d, 3, 9)] == [3, 6]
    assert [d for d in range(1, 9) if _checkpoint_due(d, 4, 8)] == [4]


def test_a_lora_checkpoint_keeps_only_the_trained_weights_and_refuses_another_model(tiny, tmp_path):
    from safetensors.torch import load_file

    model, processor, samples, images, _ = tiny
    pad = processor.tokenizer.pad_token_id
    lora = apply_lora(model, LoraSettings(r=4, alpha=8))
    cfg = TrainConfig(epochs=1, batch_size=8, lr=3e-3, seed=0, checkpoint_every=2, max_steps=2)
    train(lora, samples, images, cfg, pad, tmp_path / "ckpt", progress=False)
    saved = load_file(tmp_path / "ckpt" / "checkpoint" / "model.safetensors")
    assert set(saved) == {n for n, p in lora.named_parameters() if p.requires_grad}
    assert any("lora_A" in k for k in saved) and not any("vision_tower" in k for k in saved)
    # and a resume loads those weights back alone, the frozen ones staying the base model's
    resumed = train(lora, samples, images, TrainConfig(**{**cfg.__dict__, "max_steps": 3}), pad, tmp_path / "ckpt",
                    progress=False)
    assert resumed.metrics["resumed_from"] == 2 and resumed.steps == 3

    other, _ = build_tiny(TINY, processor.tokenizer, 16)  # full fine-tuning: other trainable weights
    with pytest.raises(RuntimeError, match="holds other weights than this run trains"):
        train(other, samples, images, cfg, pad, tmp_path / "ckpt", progress=False)


def test_a_checkpoint_is_keyed_by_the_samples_themselves_and_stale_ones_are_removed(tiny, tmp_path):
    import dataclasses

    _, _, samples, _, _ = tiny
    key = checkpoint_dir(tmp_path, "pos-s0", samples, {"lr": 1.0}, "base-abc")
    assert key == checkpoint_dir(tmp_path, "pos-s0", list(samples), {"lr": 1.0}, "base-abc")
    first = samples[0]
    one_token_differs = [dataclasses.replace(first, input_ids=first.input_ids[:-1] + [first.input_ids[-1] + 1])]
    stale = [checkpoint_dir(tmp_path, "pos-s0", one_token_differs + samples[1:], {"lr": 1.0}, "base-abc"),
             checkpoint_dir(tmp_path, "pos-s0", samples, {"lr": 2.0}, "base-abc"),
             checkpoint_dir(tmp_path, "pos-s0", samples, {"lr": 1.0}, "base-def")]
    assert len({key, *stale}) == 4  # the same number of samples is not the same training
    other_run = checkpoint_dir(tmp_path, "pos_neg-s0", samples, {"lr": 1.0}, "base-abc")
    for directory in (key, *stale, other_run):
        (directory / "checkpoint").mkdir(parents=True)
    remove_checkpoints(tmp_path, "pos-s0")
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [other_run.name]


def test_length_grouping_edges_worked_by_hand():
    # one sample first: a mutant that lets an empty list through loops forever on it, and a
    # hang costs mutmut its whole timeout (30x the tests' estimated time); every batch is full,
    # so four passes over the one sample fill its batch of 4
    assert length_grouped_batches([7], 4, 1, seed=0) == [[0, 0, 0, 0]]
    with pytest.raises(ValueError, match="^no training samples$"):
        length_grouped_batches([], 4, 1, seed=0)
    # 3 samples, batch 32, half an epoch: ceil(0.047) = 1 step, not 0 and not 2, of 32 samples
    # from 11 passes (33 samples; the one left over would open the next batch)
    (batch,) = length_grouped_batches([5, 6, 7], 32, 0.5, seed=0)
    assert len(batch) == 32 and sorted(batch.count(i) for i in range(3)) == [10, 11, 11]
    # 10 samples in 4s, one epoch: ceil(10 / 4) = 3 steps. The first pass fills two batches, sorted
    # longest first in its mega-batch (sample i has length i + 1) from the 8 it cut off; its last two
    # samples open the second pass, whose 12 make three batches, the first of which is the third step
    lengths = [i + 1 for i in range(10)]
    batches = length_grouped_batches(lengths, 4, 1, seed=0)
    assert len(batches) == 3 and all(len(b) == 4 for b in batches)
    first_pass = sorted(i for b in batches[:2] for i in b)
    assert len(set(first_pass)) == 8  # eight distinct samples, each once
    longer, shorter = sorted(batches[:2], key=min, reverse=True)
    assert min(longer) > max(shorter)  # sorted by length before cutting
    assert length_grouped_batches(lengths, 4, 1, seed=0, steps=5)[:3] == batches


def test_length_grouping_exact_steps_worked_by_hand():
    # `steps` replaces the epochs' count: 3 samples in batches of 32 make 3 steps of 32 samples
    # (96 draws: 32 passes, each sample 32 times)
    three = length_grouped_batches([5, 6, 7], 32, 0.5, seed=0, steps=3)
    assert len(three) == 3 and all(len(b) == 32 for b in three)
    assert [sum(b.count(i) for b in three) for i in range(3)] == [32, 32, 32]
    # 10 samples in 4s: 7 steps are 28 samples: two whole passes and 8 of a third; the schedule is
    # a function of the seed: the same seed gives the same batches, another seed others
    lengths = [i + 1 for i in range(10)]
    seven = length_grouped_batches(lengths, 4, 1, seed=0, steps=7)
    assert len(seven) == 7 and all(len(b) == 4 for b in seven)
    counts = [sum(b.count(i) for b in seven) for i in range(10)]
    assert sum(counts) == 28 and min(counts) >= 2 and max(counts) <= 3
    assert seven == length_grouped_batches(lengths, 4, 1, seed=0, steps=7)
    assert seven != length_grouped_batches(lengths, 4, 1, seed=1, steps=7)


def test_length_grouping_keeps_padding_small_and_is_seeded():
    lengths = [10 + (i * 37) % 90 for i in range(2000)]
    grouped = length_grouped_batches(lengths, 16, 1, seed=0)
    assert grouped == length_grouped_batches(lengths, 16, 1, seed=0)
    assert sorted(i for b in grouped for i in b) == list(range(2000))  # 125 full batches: one pass exactly

    def padding(batches):
        total = sum(max(lengths[i] for i in b) * len(b) for b in batches)
        return 1 - sum(lengths) / total

    import random
    order = list(range(2000))
    random.Random(0).shuffle(order)
    plain = [order[i:i + 16] for i in range(0, 2000, 16)]
    assert padding(grouped) < padding(plain) / 4


WORKER = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from tests.test_training import make_data, TINY
from pathlib import Path
from reverie.student.model import build_tiny, image_token_count, train_tokenizer
from reverie.student.samples import ChatEncoder
from reverie.student.batching import ImageTable
from reverie.student.train import TrainConfig, train
root = Path(sys.argv[2]); torch.manual_seed(0)
convs = make_data(root)
tok = train_tokenizer(["What color is the image?", "red", "blue", "USER: ASSISTANT:"] * 5, 300)
model, processor = build_tiny(TINY, tok, 16)
enc = ChatEncoder(tok, image_token_count(model.config))
samples = [enc.encode(c) for c in convs]
images = ImageTable(processor, root, [s.image for s in samples])
cfg = TrainConfig(epochs=2, batch_size=8, lr=3e-3, seed=0, checkpoint_every=2)
if len(sys.argv) > 4:  # interrupted after 3 steps, then resumed from the checkpoint in a fresh model
    start = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, samples, images, TrainConfig(**{**cfg.__dict__, "max_steps": 3}), tok.pad_token_id,
          checkpoint_dir=sys.argv[4], progress=False, log_every=1)
    model.load_state_dict(start)
result = train(model, samples, images, cfg, tok.pad_token_id, checkpoint_dir=sys.argv[4] if len(sys.argv) > 4 else None,
               progress=False, log_every=1)
import torch.distributed as dist
rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
if rank == 0:
    (root / sys.argv[3]).write_text(json.dumps([h["loss"] for h in result.history]))
"""


def test_two_cpu_processes_match_one_and_resume_from_a_collective_checkpoint(tmp_path):
    """The same code under torchrun (2 processes, gloo) gives the single-process loss curve, and
    a 2-process run stopped after 3 steps resumes from the checkpoint both processes wrote."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"]
    subprocess.run([sys.executable, str(script), root, str(tmp_path), "one.json"], check=True, env=env)
    subprocess.run(torchrun + [str(script), root, str(tmp_path), "two.json"], check=True, env=env, capture_output=True)
    resumed_run = subprocess.run(torchrun + [str(script), root, str(tmp_path), "resumed.json", str(tmp_path / "ckpt")],
                                 env=env, capture_output=True, text=True)
    assert resumed_run.returncode == 0, resumed_run.stderr[-3000:]
    assert "resumed from step 3" in resumed_run.stdout
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert len(one) == len(two) > 3
    for a, b in zip(one, two):
        assert abs(a - b) <= 0.02 * max(1.0, abs(a)), (one, two)
    assert resumed == pytest.approx(two, rel=1e-5)


def test_batched_greedy_answers_equal_batch_size_one(tiny):
    """Left padding and the KV cache must not change a single answer."""
    from reverie.evaluation.decode import Answerer, Question

    model, processor, samples, images, root = tiny
    train(model, samples, images, TrainConfig(epochs=4, batch_size=8, lr=5e-3, seed=0), processor.tokenizer.pad_token_id,
          progress=False)
    questions = [Question(f"q{i}", f"img/{i}.png", q) for i, q in
                 enumerate(["What color is the image?", "What color?", "Color of the image, please?",
                            "What color is the image? Answer in one word."] * 6)]
    answerer = Answerer(model, processor, root, max_new_tokens=6)
    one = answerer.answer(questions, batch_size=1, progress=False)
    many = answerer.answer(questions, batch_size=7, progress=False)
    assert one == many
    # and the answers are the model's reading of the image: a constant answerer gets 12 of 24,
    # a coin 22 or more once in 56,000 tries; this model, trained as above, gets all 24
    right = sum(a == ("red" if int(q.qid[1:]) % 2 else "blue") for q, a in zip(questions, one))
    assert right >= 22, one


def test_generation_stops_at_eos_so_a_large_budget_costs_nothing(tiny):
    """The real suites allow 128 or 1024 new tokens (LLaVA's budgets); a batch ends when every
    answer has ended, so a student that answers in one word decodes a few tokens, not 1024."""
    from reverie.evaluation.decode import Answerer, Question

    model, processor, samples, images, root = tiny
    train(model, samples, images, TrainConfig(epochs=4, batch_size=8, lr=5e-3, seed=0), processor.tokenizer.pad_token_id,
          progress=False)
    questions = [Question(f"q{i}", f"img/{i}.png", "What color is the image?") for i in range(8)]
    steps = []
    generate = model.generate

    def counting(*args, **kwargs):
        out = generate(*args, **kwargs)
        steps.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    model.generate = counting
    short = Answerer(model, processor, root, max_new_tokens=6).answer(questions, batch_size=8, progress=False)
    long = Answerer(model, processor, root, max_new_tokens=1024).answer(questions, batch_size=8, progress=False)
    assert short == long
    assert steps[1] <= 6, steps  # the answer and its end, then the batch stops
