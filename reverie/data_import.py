"""Real data in and out: an image folder for a real teacher, the question formats of answers
that do not label them, LLaVA-style conversation JSON (the paper tunes on LLaVA-665k +
REVERIE), and exports of records and reflective samples as LLaVA and ShareGPT JSON. The
released REVERIE annotations are read by `release.py`.

Every image path read from a file is resolved inside its images root; one that would escape
it (`../`, an absolute path, a symlink out) is refused with `UnsafeImagePath`, because the
annotation files come from elsewhere. A row that is merely unusable (a missing field, a
missing image) is quarantined with its reason, never silently dropped.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from .conversations import (LLAVA, RESPONSE, SHAREGPT, ChatFormat, Conversation, Turn, build_variant, chat_messages,
                            strip_image_token, to_llava_json)
from .io import load_json_file
from .vocab import LETTER, SHORT, image_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


class UnsafeImagePath(ValueError):
    """An image path that resolves outside its images root."""


@dataclass(frozen=True)
class ImageEntry:
    """One image for a teacher: a stable id, where it is, and where it goes under the data root."""

    image_id: str
    path: Path
    relpath: str
    split: str


def safe_image_path(root: str | Path, rel: str) -> Path:
    """`root / rel`, refusing any path that leaves `root` (after resolving symlinks)."""
    root = Path(root).resolve()
    if not rel or Path(rel).is_absolute():
        raise UnsafeImagePath(f"image path {rel!r} must be relative to the images root {root}")
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise UnsafeImagePath(f"image path {rel!r} escapes the images root {root}; refusing to read it")
    return path


def stable_fraction(image_id: str, purpose: str = "") -> float:
    """A number in [0, 1) fixed by the image id alone, independent for each `purpose`: a subset
    drawn with one purpose is not skewed towards either side of a split drawn with another."""
    key = f"{purpose}:{image_id}" if purpose else image_id
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:12], 16) / 16 ** 12


def split_for(image_id: str, eval_fraction: float) -> str:
    """A deterministic split by a hash of the image id alone: adding or removing other images
    never moves an image between splits."""
    return "eval" if stable_fraction(image_id) < eval_fraction else "train"


def image_id_for(root: Path, path: Path) -> str:
    """The relative path without its suffix, made safe for ids and file names."""
    rel = path.relative_to(root).with_suffix("").as_posix()
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", rel.replace("/", "__"))


def image_files(root: str | Path) -> list[Path]:
    """Every image file under `root`, recursively and sorted; a link out of `root` is refused."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"images folder {root} does not exist")
    resolved = root.resolve()
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    for path in files:
        if not path.resolve().is_relative_to(resolved):
            raise UnsafeImagePath(f"{path} links outside the images folder {resolved}; refusing to read it")
    return files


def image_folder(root: str | Path, eval_fraction: float = 0.1) -> list[ImageEntry]:
    """Every image under `root` (recursively, sorted), with its id and split."""
    root = Path(root)
    entries: dict[str, ImageEntry] = {}
    for path in image_files(root):
        image_id = image_id_for(root, path)
        if image_id in entries:
            raise ValueError(f"{path} and {entries[image_id].path} map to the same image id {image_id!r}; rename one")
        split = split_for(image_id, eval_fraction)
        entries[image_id] = ImageEntry(image_id, path, image_path(split, image_id, path.suffix.lower()), split)
    if not entries:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return list(entries.values())


# ---- question formats, for answers that do not label them ---------------------------------
LETTERS = "ABCDEFGH"
# an option marker: "A." "A)" "(A)" starting a line, or "(A)" "A)" inline ("A." inline is too
# often a sentence: "vitamin A. Then ...")
OPTION_MARK = re.compile(r"^[ \t]*\(?([A-H])[.)]\s+|(?<=\s)\(?([A-H])\)\s+", re.M)
LETTER_ANSWER = re.compile(r"^\(?([A-H])\)?(?:[.):]\s*(.*)|\s+(.*))?$", re.S)
SHORT_ANSWER_WORDS = 3  # "2", "red", "the left side": a phrase, not a sentence


def split_options(question: str) -> tuple[str, list[str]]:
    """The stem and the options of a question that lists them in its text, on their own lines
    ("A. cat") or inline ("(A) cat (B) dog"): markers A, B, C ... in order, at least two. A
    question without such a list comes back whole, with no options."""
    marks = list(OPTION_MARK.finditer(question))
    for i, first in enumerate(marks):
        if (first.group(1) or first.group(2)) != "A":
            continue
        run = [first]
        for m in marks[i + 1:]:
            if (m.group(1) or m.group(2)) == LETTERS[len(run)]:
                run.append(m)
        if len(run) < 2:
            continue
        last_end = question.find("\n", run[-1].end())  # the last option ends with its line:
        last_end = len(question) if last_end < 0 else last_end  # an instruction may follow it
        ends = [m.start() for m in run[1:]] + [last_end]
        options = [question[m.end():end].strip().rstrip(",;.").strip() for m, end in zip(run, ends)]
        if all(options):
            return question[: first.start()].strip(), options
    return question, []


def option_letter(answer: str, options: list[str]) -> str | None:
    """An answer to a multiple-choice question as its option letter: "B", "(B)", "B.", "B) dog"
    or the text of an option ("dog"); None when it is neither."""
    letters = LETTERS[: len(options)]
    text = " ".join(str(answer).split())
    norm = lambda t: t.strip().lower().rstrip(".")  # noqa: E731
    for letter, option in zip(letters, options):
        if norm(text) == norm(option):
            return letter
    m = LETTER_ANSWER.match(text)
    if m and m.group(1) in letters:
        return m.group(1)
    return None


def infer_question_type(question: str, correct_answer: str, options: list[str] | None = None,
                        confusing_answer: str | None = None) -> str:
    """The format of a question nobody labelled (the release does not; teachers asked with the
    reference prompt do not): listed options make it multiple-choice, yes and no for answers
    make it yes/no, LLaVA's short-answer suffix or an answer of a few words make it short,
    and anything else is open-ended."""
    if options or LETTER in question or split_options(question)[1]:
        return "multiple_choice"
    answers = {str(a).strip().lower().rstrip(".") for a in (correct_answer, confusing_answer) if a is not None}
    if answers <= {"yes", "no"} and (confusing_answer is None or len(answers) == 2):
        return "yes_no"
    if SHORT in question:
        return "short_answer"
    answer = str(correct_answer).strip()
    if len(answer.split()) <= SHORT_ANSWER_WORDS and not answer.endswith((".", "!", "?")):
        return "short_answer"
    return "open_ended"


# ---- LLaVA and ShareGPT conversation JSON ---------------------------------------------------
def _conversation(row_id: str, image: str, pairs: list[tuple[str, str]], kind: str) -> Conversation:
    return Conversation(row_id, image, tuple(Turn(strip_image_token(u), a, RESPONSE) for u, a in pairs), kind)


def _pairs(row: dict, fmt: ChatFormat) -> list[tuple[str, str]]:
    """(user, assistant) pairs from a row's alternating messages in `fmt`; a system message is skipped."""
    turns = [m for m in row[fmt.messages_key] if m.get(fmt.role_key) != "system"]
    if len(turns) < 2 or len(turns) % 2:
        raise ValueError("expected alternating user and assistant messages")
    pairs = []
    for u, a in zip(turns[::2], turns[1::2]):
        if u.get(fmt.role_key) != fmt.user or a.get(fmt.role_key) != fmt.assistant:
            raise ValueError(f"expected '{fmt.user}' then '{fmt.assistant}', "
                             f"got '{u.get(fmt.role_key)}' then '{a.get(fmt.role_key)}'")
        pairs.append((str(u.get(fmt.text_key, "")), str(a.get(fmt.text_key, ""))))
    return pairs


def _read_conversations(rows, images_root, kind: str, parse) -> tuple[list[Conversation], list[dict]]:
    conversations, quarantined = [], []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            quarantined.append({"reason": "not a JSON object", "index": i, "row": row})
            continue
        image = row.get("image") or next(iter(row.get("images") or []), None)
        if not image:
            # the student always sees an image; text-only rows (ShareGPT in LLaVA-665k) go aside
            quarantined.append({"reason": "no image: text-only conversation", "index": i, "row": row})
            continue
        if images_root is not None:
            path = safe_image_path(images_root, str(image))
            if not path.is_file():
                quarantined.append({"reason": f"image {image} not found under {images_root}", "index": i, "row": row})
                continue
        try:
            pairs = parse(row)
        except (ValueError, AttributeError, TypeError) as exc:
            quarantined.append({"reason": f"unreadable conversation: {exc}", "index": i, "row": row})
            continue
        conversations.append(_conversation(str(row.get("id", f"{kind}-{i}")), str(image), pairs, kind))
    return conversations, quarantined


def import_llava(json_path: str | Path, images_root: str | Path | None = None) -> tuple[list[Conversation], list[dict]]:
    """LLaVA conversation JSON (llava_v1_5_mix665k.json) as an extra training mix."""
    rows = load_json_file(json_path)  # a syntax error names the file and line
    return _read_conversations(rows, images_root, "llava_mix", lambda row: _pairs(row, LLAVA))


def _read_all(rows: list[dict], source: str, turns) -> list[Conversation]:
    """Reads rows this project exported itself: any unreadable row is an error, not quarantine."""
    conversations, quarantined = _read_conversations(rows, None, source, turns)
    if quarantined:
        raise ValueError(f"{len(quarantined)} unreadable row(s), first: {quarantined[0]['reason']}")
    return conversations


def from_llava_json(rows: list[dict]) -> list[Conversation]:
    return _read_all(rows, "llava_mix", lambda row: _pairs(row, LLAVA))


def to_sharegpt_json(conversations: list[Conversation]) -> list[dict]:
    """ShareGPT in the multimodal layout of LLaMA-Factory and most trainers: `messages` with
    role/content, the image token in the first user message, and an `images` list."""
    return [{"id": c.id, SHAREGPT.messages_key: chat_messages(c, SHAREGPT), "images": [c.image]} for c in conversations]


def from_sharegpt_json(rows: list[dict]) -> list[Conversation]:
    return _read_all(rows, "sharegpt", lambda row: _pairs(row, SHAREGPT))


def export_samples(records: list[dict], variant: str, prompts, fmt: str = "llava") -> list[dict]:
    """Reflective training samples of a variant (see conversations.py) as LLaVA or ShareGPT JSON."""
    conversations = build_variant(records, variant, prompts)
    if fmt == "llava":
        return to_llava_json(conversations)
    if fmt == "sharegpt":
        return to_sharegpt_json(conversations)
    raise ValueError(f"unknown export format {fmt!r}; expected llava or sharegpt")
