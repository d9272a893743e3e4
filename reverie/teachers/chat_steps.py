"""The paper's three teacher steps for one image, as prompt files (prompts/), over any chat
client: QA collection, a positive and a negative rationale per question, the text-only
consistency judge. Each answer is parsed, asked again with its problem shown (`reask`) when
unusable, or quarantined with its reason and raw text (`AnswerRejected`). `ChatSteps` holds
them; the chat teacher (openai_compat.py) and the local one (local_vlm.py) run them over every
image (`teach_images`)."""
from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from string import Template

from tqdm import tqdm

from ..data_import import ImageEntry
from ..records import make_record
from .chat_messages import image_data_url
from .chat_transport import TeacherConfigError, TeacherError
from .judge import Verdict
from .parsing import ParseError, parse_judge, parse_questions, parse_rationale
from .scene_graph import QAItem

PROMPTS = Path(__file__).parent / "prompts"


def load_prompts() -> dict[str, Template]:
    return {name: Template((PROMPTS / f"{name}.txt").read_text())
            for name in ("qa", "rationale_positive", "rationale_negative", "judge")}


def prompt_versions() -> dict[str, str]:
    """Each template's own digest: part of the cache key of the calls made from it, so that
    editing the judge's prompt re-asks the judge only."""
    return {p.stem: hashlib.sha256(p.read_bytes()).hexdigest()[:12] for p in sorted(PROMPTS.glob("*.txt"))}


def prompts_digest() -> str:
    h = hashlib.sha256()
    for name in sorted(p.name for p in PROMPTS.glob("*.txt")):
        h.update(name.encode() + (PROMPTS / name).read_bytes())
    return h.hexdigest()[:12]


def problem_of(parse, content: str) -> ParseError | str | None:
    """None for an answer without problems; the `ParseError` of an unusable one; the joined
    problems of a usable one with rejected parts."""
    try:
        _, problems = parse(content)
    except ParseError as exc:
        return exc
    return "; ".join(problems) if problems else None


def reask(messages: list[dict], answer: str, problem: str, attempt: int, attempts: int) -> list[dict]:
    """The conversation that shows the model its unusable answer and why. The try's number
    makes each re-ask a new prompt: a model decoding greedily (or a server that caches) would
    give a repeated one the same answer."""
    return messages + [{"role": "assistant", "content": answer},
                       {"role": "user", "content": f"Your answer could not be used: {problem}. Answer again, in "
                                                   f"exactly the format asked for (try {attempt} of {attempts})."}]


class AnswerRejected(ParseError):
    """An answer still unusable after every re-ask: the reason and the last raw text."""

    def __init__(self, reason: str, raw: str, attempts: int):
        super().__init__(reason)
        self.raw, self.attempts = raw, attempts


@dataclass(frozen=True)
class StepModels:
    """What the three steps ask: the model of each step, the answer budget, the re-asks."""

    qa_model: str
    rationale_model: str
    judge_model: str
    max_tokens: int
    max_parse_retries: int


class ChatSteps:
    """The three steps for one image over a chat client (`ChatClient`, `BatchClient`, or the
    local `BatchingClient`), each answer parsed, asked again when unusable, or quarantined
    with its reason and raw text. `ChatTeacher` and `LocalTeacher` open their client and run
    these steps over every image."""

    name: str

    def __init__(self, generate, client, models: StepModels | None):
        self.g, self.o, self.client = generate, models, client
        self.prompts = load_prompts()
        self.versions = prompt_versions()
        self.digest = prompts_digest()

    async def ask(self, prompt: str, model: str, messages: list[dict], parse):
        """Returns (value, problems, raw). An answer with problems (unusable, cut off, or with
        some bad items) is asked again with the problem appended, up to `max_parse_retries`
        times; when every try fails, the last partial answer is kept if there was one, else
        `AnswerRejected` carries the reason and raw text to the quarantine.

        A conversation the cache holds to its usable end is replayed without a call (the same
        path, so the same records); any other is asked afresh from its first question, so a
        failure of the last run is tried again rather than replayed."""
        attempts, version = 1 + self.o.max_parse_retries, self.versions[prompt]
        replay = self.replay(model, messages, parse, attempts, version)
        if replay is not None:
            self.client.usage.cache_hits += len(replay)
        conversation, partial = messages, None
        for attempt in range(1, attempts + 1):
            if replay is not None:
                content = replay[attempt - 1]
            else:
                content = await self.client.complete(model, conversation, self.o.max_tokens, accept=parse,
                                                     prompt=version, fresh=True)
            error = problem_of(parse, content)
            if error is None:
                return (*parse(content), content)
            if not isinstance(error, ParseError):
                partial = (*parse(content), content)
            if attempt < attempts:
                conversation = reask(messages, content, str(error), attempt + 1, attempts)
        if partial is not None:
            return partial
        raise AnswerRejected(str(error), content, attempts)

    def replay(self, model: str, messages: list[dict], parse, attempts: int, version: str) -> list[str] | None:
        """The cached answers of this conversation up to a usable one without problems, or None."""
        conversation, chain = messages, []
        for attempt in range(1, attempts + 1):
            hit = self.client.lookup(model, conversation, self.o.max_tokens, version)
            if hit is None:
                return None
            chain.append(hit["content"])
            error = problem_of(parse, hit["content"])
            if error is None:
                return chain
            conversation = reask(messages, hit["content"], str(error), attempt + 1, attempts)
        return None

    def quarantine(self, step: str, exc: Exception, **where) -> dict:
        entry = {"reason": f"{step}: {self.client.scrub(str(exc))}", **where}
        if isinstance(exc, AnswerRejected):
            entry.update(attempts=exc.attempts, raw=self.client.scrub(exc.raw))
        return entry

    async def records_for_image(self, entry: ImageEntry) -> tuple[list[dict], list[dict]]:
        image = {"type": "image_url", "image_url": {"url": image_data_url(entry.path)}}
        qa_text = self.prompts["qa"].substitute(questions_per_image=self.g.questions_per_image)
        where = {"image_id": entry.image_id, "image": entry.relpath}
        try:
            questions, problems, raw = await self.ask(
                "qa", self.o.qa_model, [{"role": "user", "content": [{"type": "text", "text": qa_text}, image]}],
                parse_questions)
        except TeacherConfigError:
            raise
        except (TeacherError, ParseError) as exc:
            return [], [self.quarantine("qa", exc, **where)]
        quarantined = [{"reason": f"qa: {p}", **where, "raw": self.client.scrub(raw)} for p in problems]
        results = await asyncio.gather(*(self.record(entry, j, q, image)
                                         for j, q in enumerate(questions[: self.g.questions_per_image])))
        records = [r for r, _ in results if r is not None]
        quarantined += [q for _, q in results if q is not None]
        return records, quarantined

    async def record(self, entry: ImageEntry, j: int, q, image: dict) -> tuple[dict | None, dict | None]:
        record_id = f"{entry.image_id}-q{j}"
        question = q.record_question()
        fields = {"question": question, "correct_answer": q.correct_answer, "confusing_answer": q.confusing_answer}
        step = "rationale"
        try:
            def with_image(name: str) -> list[dict]:
                text = self.prompts[name].substitute(fields)
                return [{"role": "user", "content": [{"type": "text", "text": text}, image]}]

            # both run to the end even when one fails, so the other's answer is cached
            both = await asyncio.gather(
                self.ask("rationale_positive", self.o.rationale_model, with_image("rationale_positive"), parse_rationale),
                self.ask("rationale_negative", self.o.rationale_model, with_image("rationale_negative"), parse_rationale),
                return_exceptions=True)
            for outcome in both:
                if isinstance(outcome, BaseException):
                    raise outcome
            (positive, _, _), (negative, _, _) = both
            step = "judge"
            judge_text = self.prompts["judge"].substitute(fields, correct_rationale=positive, incorrect_rationale=negative)
            answer, _, _ = await self.ask("judge", self.o.judge_model, [{"role": "user", "content": judge_text}],
                                          parse_judge)
        except TeacherConfigError:
            raise
        except (TeacherError, ParseError) as exc:
            return None, self.quarantine(step, exc, id=record_id, image_id=entry.image_id, image=entry.relpath,
                                         question=question)
        item = QAItem(question, q.question_type, q.reasoning, q.correct_answer, q.confusing_answer, q.options,
                      support=[], refute=[], correct_rationale=positive, incorrect_rationale=negative)
        verdict = Verdict(not answer.contradiction, answer.reason if answer.contradiction else "")
        provenance = {"teacher": self.name, "judge": self.name, "qa_model": self.o.qa_model,
                      "rationale_model": self.o.rationale_model, "judge_model": self.o.judge_model,
                      "template_version": self.g.template_version, "prompts_sha": self.digest,
                      "question_type_inferred": q.inferred_type, "split": entry.split, "injected_error": None}
        return make_record(record_id, entry.relpath, entry.split, item, verdict, provenance), None


async def teach_images(teacher, entries, in_flight: int, progress: bool) -> list:
    """Runs the three steps for every image, at most `in_flight` images at once, with a
    progress bar; results come back in the order of `entries`."""
    slots = asyncio.Semaphore(in_flight)
    bar = tqdm(total=len(entries), desc="teacher", unit="img", disable=not progress, mininterval=1.0)

    async def one(entry):
        async with slots:
            result = await teacher.records_for_image(entry)
        bar.update()
        return result

    try:
        return await asyncio.gather(*(one(e) for e in entries))
    finally:
        bar.close()
