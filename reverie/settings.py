"""Typed settings parsed from params.yaml: one section per stage.

Every model forbids unknown keys, so a typo fails before any work starts, with the key and
the file named in the message.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .vocab import BASE_SKILLS, LETTER, SHORT, VARIANTS

Variant = Literal[VARIANTS]  # reverie/vocab.py lists them


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectSettings(Section):
    seed: int = 0
    mlflow_tracking_uri: str = "sqlite:///mlflow.db"
    mlflow_experiment: str = "reverie"
    data_dir: str = "data"
    dvc_remote: str | None = None  # a DVC remote URL (s3://, gs://, ssh://, a path); the flow pushes to it


class WorldSettings(Section):
    image_size: int = Field(48, ge=16)
    grid: int = Field(3, ge=1, le=8)
    jitter: int = Field(0, ge=0)
    kinds: list[str] = ["circle", "square", "triangle", "star", "cross", "bar", "pole", "ring"]
    colors: list[str] = ["red", "green", "blue", "yellow", "purple", "white"]
    min_objects: int = Field(2, ge=1)
    max_objects: int = Field(5, ge=1)
    popularity_decay: float = Field(0.85, gt=0, le=1)  # kind i of `kinds` has weight decay ** i
    # scene types, each a group of kinds (none: one theme of every kind); a scene draws each new
    # kind from its theme with probability theme_bias, else from every kind (0: no themes)
    themes: list[list[str]] = []
    theme_bias: float = Field(0.85, ge=0, le=1)
    repeat_bias: float = Field(0.3, ge=0, lt=1)  # chance that a further object repeats a kind already placed
    faint_rate: float = Field(0.0, ge=0, le=1)  # share of objects in shadow, drawn at faint_contrast
    faint_contrast: float = Field(0.3, gt=0, le=1)  # a faint object's colour: this share of the way from the background
    noise: float = Field(0.0, ge=0, le=128)  # standard deviation of the pixel noise (0-255)
    train_images: int = Field(3000, ge=1)
    eval_images: int = Field(400, ge=1)

    @model_validator(mode="after")
    def _consistent(self):
        if self.min_objects > self.max_objects:
            raise ValueError("min_objects must not exceed max_objects")
        if self.image_size % self.grid:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of grid ({self.grid})")
        named = [k for theme in self.themes for k in theme]
        for k in named:
            if k not in self.kinds:
                raise ValueError(f"themes names {k!r}, which is not in kinds")
        if self.themes and sorted(named) != sorted(self.kinds):
            raise ValueError("themes must hold every kind exactly once (missing or repeated: "
                             f"{sorted(set(self.kinds) ^ set(named)) or sorted(k for k in set(named) if named.count(k) > 1)})")
        return self


class OpenAITeacherSettings(Section):
    """An OpenAI-compatible chat-completions teacher (OpenAI, Gemini's compatible endpoint,
    vLLM, Ollama). Only the *name* of the environment variable holding the key lives here:
    the key itself never reaches params, logs or outputs."""

    base_url: str = "http://127.0.0.1:8000/v1"
    qa_model: str = "gpt-4o-mini"
    rationale_model: str = "gpt-4o-mini"
    judge_model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = Field(16, ge=1)
    rpm: int | None = Field(None, ge=1)  # requests per minute; None: no limit
    tpm: int | None = Field(None, ge=1)  # tokens per minute; None: no limit
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(5, ge=0)
    backoff_base_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(60.0, gt=0)
    # 429s with a Retry-After are waited out without spending max_retries, up to this many
    # seconds per call in all; a single longer Retry-After (a spent quota) fails the call at once
    rate_limit_wait_max_s: float = Field(600.0, gt=0)
    temperature: float = Field(0.2, ge=0, le=2)
    max_tokens: int = Field(1024, ge=16)
    price_per_1k_prompt: float = Field(0.0, ge=0)
    price_per_1k_completion: float = Field(0.0, ge=0)
    images_dir: str = "images"
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    cache_path: str = ".reverie/teacher_cache.sqlite"
    # an unusable answer (no JSON, cut off, bad items) is asked again this many times, then quarantined
    max_parse_retries: int = Field(2, ge=0)
    # more than this share of the first `fail_fast_calls` requests failing stops the run
    fail_fast_calls: int = Field(20, ge=1)
    fail_fast_error_rate: float = Field(0.5, ge=0, le=1)
    # "batch": through the provider's batch endpoint (upload, poll, download; about half the price)
    mode: Literal["online", "batch"] = "online"
    batch_poll_s: float = Field(30.0, gt=0)
    batch_max_requests: int = Field(50_000, ge=1)  # per batch file (OpenAI's limit)
    batch_max_mb: float = Field(190.0, gt=0)  # per batch file (OpenAI's limit is 200 MB)
    batch_price_factor: float = Field(0.5, gt=0, le=1)  # batch price / online price, for the cost estimates

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # httpx would refuse it on every call; say so before any work, naming the key
            raise ValueError(f"{v!r} is not an http(s) URL with a host; write it with its scheme, "
                             "e.g. http://127.0.0.1:8000/v1 or https://api.openai.com/v1")
        return v


class LocalTeacherSettings(Section):
    """A transformers image-text-to-text model in a local folder (LLaVA, Qwen2-VL, ...) running
    the same three steps as the OpenAI-compatible teacher, in batches of greedy generation."""

    model_path: str = "models/teacher"
    batch_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(512, ge=1)
    images_dir: str = "images"
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    cache_path: str = ".reverie/teacher_cache.sqlite"
    device: str = "auto"  # "auto": the first CUDA device when there is one, else the CPU
    max_parse_retries: int = Field(1, ge=0)  # greedy decoding answers a re-ask alike unless the feedback helps


class ReverieJsonSettings(Section):
    """The released REVERIE annotations as the source of records (`teacher: reverie_json`):
    the JSON file (the published instances or the authors' flat records) and the root its
    image paths are relative to (coco/, vg/, scienceqa/ ...)."""

    path: str = "reverie.json"
    images_dir: str = "images"
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    # image paths containing any of these are dropped by rule (the authors drop OCR-VQA)
    exclude_images: list[str] = ["ocr_vqa"]
    # the second turns of the published instances, by which positive and negative ones are told apart
    positive_prompt: str = "Explain why. Including any necessary facts or knowledge."
    negative_prompt: str = "Explain why this answer is wrong: {confusing_answer}. Including any necessary facts or knowledge."

    @field_validator("negative_prompt")
    @classmethod
    def _names_confusing_answer(cls, v: str) -> str:
        if "{confusing_answer}" not in v:
            raise ValueError("the negative prompt must contain the placeholder {confusing_answer}")
        return v


class AnnotationSettings(Section):
    """Real scene graphs for the scene-graph teacher: COCO instances JSON or Visual Genome
    objects/attributes JSON, and the folder of the images they describe."""

    format: Literal["coco", "visual_genome"]
    path: str
    images_dir: str
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    # some questions list every object in their rationale: a crowded image would exceed
    # validate's rationale length, and dropping objects would make counts and "no" answers false
    max_objects: int = Field(10, ge=1)
    max_images: int | None = Field(None, ge=1)
    large_area_fraction: float = Field(0.05, gt=0, lt=1)  # bbox area / image area from which an object is "large"


class GenerateSettings(Section):
    teacher: Literal["scene_graph", "openai", "local", "reverie_json"] = "scene_graph"
    questions_per_image: int = Field(4, ge=1, le=20)
    noise_rate: float = Field(0.05, ge=0, le=1)
    template_version: str = "sg-v1"
    openai: OpenAITeacherSettings = OpenAITeacherSettings()
    local: LocalTeacherSettings = LocalTeacherSettings()
    reverie_json: ReverieJsonSettings = ReverieJsonSettings()
    annotations: AnnotationSettings | None = None  # None: the synthetic world
    # shards > 1: the stage runs flows/generate_fanout.py, one Prefect task per shard of
    # images on a local Dask cluster of `workers` processes; the records are the same
    shards: int = Field(1, ge=1)
    workers: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _teacher_sources_agree(self):
        if self.annotations is not None and self.teacher != "scene_graph":
            # the model teachers look at the pixels; only the scene-graph teacher reads annotations
            raise ValueError(f"annotations are read by the scene_graph teacher only, but teacher is '{self.teacher}'")
        if self.shards > 1 and (self.teacher != "scene_graph" or self.annotations is not None):
            # the model teachers have their own concurrency (generate.openai.concurrency,
            # generate.local.batch_size); the fan-out shards the synthetic world only
            raise ValueError(f"shards > 1 fans out the synthetic world with the scene_graph teacher only; "
                             f"set shards: 1 for teacher '{self.teacher}'"
                             + (" with annotations" if self.annotations is not None else ""))
        return self


class ValidateSettings(Section):
    min_question_chars: int = 8
    max_question_chars: int = 400
    max_answer_chars: int = 200
    min_rationale_chars: int = 15
    max_rationale_chars: int = 600
    min_type_share: float = Field(0.05, ge=0, le=1)
    min_records: int = Field(1, ge=0)
    max_bad_row_fraction: float = Field(0.02, ge=0, le=1)


class ModelSettings(Section):
    """The student: a tiny LLaVA built from config, or a pretrained id or local path."""

    pretrained: str | None = None
    patch_size: int = 16
    feature_select: Literal["default", "full"] = "default"
    vision_hidden: int = 128
    vision_layers: int = 2
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    intermediate: int = 256
    vocab_size: int = 1024


class LaunchSettings(Section):
    """How a training stage's processes start (reverie/launch.py): inside the command DVC runs, so
    a multi-process run is recorded in dvc.lock like any other."""

    launcher: Literal["plain", "torchrun", "accelerate"] = "plain"
    processes: int = Field(1, ge=1)  # per stage: torchrun's --nproc-per-node, accelerate's --num_processes; the devices it is given
    accelerate_config: str | None = None  # configs/accelerate/*.yaml, for launcher: accelerate
    port: int | None = Field(None, ge=1, le=65535)  # the rendezvous port; null: a free one at launch

    @model_validator(mode="after")
    def _consistent(self):
        if self.launcher == "plain" and self.processes != 1:
            raise ValueError("processes > 1 needs a launcher (torchrun or accelerate)")
        if self.launcher == "accelerate" and not self.accelerate_config:
            raise ValueError("launcher: accelerate needs accelerate_config (one of configs/accelerate/*.yaml)")
        if self.accelerate_config and not Path(self.accelerate_config).is_file():
            raise ValueError(f"accelerate_config {self.accelerate_config} is not a file")
        return self


class LoopSettings(Section):
    """How the training loop runs (reverie/student/train.py), the same keys in `base` and `tune`.
    The defaults are the tiny CPU run's: fp32, no checkpointing, the whole batch in one forward
    pass, every image's pixels in memory."""

    # samples per forward pass and process; batch_size stays the global batch of one optimizer
    # step (accumulation over batch_size / (micro_batch_size * processes) passes). null: no accumulation
    micro_batch_size: int | None = Field(None, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast; fp16 (or bf16 on a GPU without it) with a grad scaler
    gradient_checkpointing: bool = False
    max_length: int | None = Field(None, ge=2)  # tokens per sample; longer ones are cut at the end, masks alongside
    # the run's images are held in memory as pixels when they fit in this many MB, else decoded
    # per batch by a DataLoader with `dataloader_workers` processes (memory flat in dataset size)
    image_cache_max_mb: float = Field(1024, ge=0)
    dataloader_workers: int = Field(2, ge=0)
    # torch's compute threads. A declared param, not the route's choice: a CPU run's weights depend
    # on it (the order of a sum over threads), so the flow and a plain `dvc repro` must agree
    threads: int = Field(1, ge=1)
    launch: LaunchSettings = LaunchSettings()

    @model_validator(mode="after")
    def _micro_batch_fits(self):
        if self.micro_batch_size is not None and self.micro_batch_size > self.batch_size:
            raise ValueError(f"micro_batch_size ({self.micro_batch_size}) must not exceed batch_size "
                             f"({self.batch_size}), the global batch of one optimizer step")
        return self


def _known_skills(skills: list[str]) -> list[str]:
    unknown = sorted(set(skills) - set(BASE_SKILLS))
    if unknown or not skills:
        raise ValueError(f"unknown skill(s) {unknown}; known: {', '.join(BASE_SKILLS)}" if unknown else "name at least one skill")
    return skills


class BaseTrainSettings(LoopSettings):
    """The shared base: an alignment-like step on dense scene descriptions, trained once."""

    model: ModelSettings = ModelSettings()
    describe_epochs: float = Field(0.0, ge=0)
    epochs: float = Field(3.0, gt=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    min_lr_fraction: float = Field(0.1, gt=0, le=1)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = 0.0
    seeing_epochs: float = Field(1.5, ge=0)  # first: descriptions, kinds present and existence probes only
    probes_per_image: int = Field(6, ge=0)  # then, per image and epoch: one-skill questions cycling through `skills`
    # the one-skill questions of the second phase, in the order they cycle (a skill named twice is asked
    # twice as often); every name is one of student/curriculum.py SKILLS
    skills: list[str] = ["existence", "choice_shape", "color", "count", "verify_color", "choice_shape", "choice_color",
                         "verify_count", "existence", "verify_position", "shape", "choice_shape"]
    seed: int = 0
    checkpoint_every: int = Field(200, ge=1)
    # vision pretraining of the tiny tower (reverie/student/vision.py); 0 skips it
    vision_epochs: float = Field(6.0, ge=0)
    vision_lr: float = Field(2e-3, gt=0)
    vision_batch_size: int = Field(64, ge=1)
    freeze_vision: bool = True
    # the perception check on held-out scenes (reverie/evaluation/perception.py) and its gate
    check_images: int = Field(200, ge=0)
    describe_check_images: int = Field(100, ge=0)
    check_every: int = Field(100, ge=0)  # the check (no descriptions) again every this many steps; 0: never
    min_seeing_accuracy: float = Field(0.9, ge=0, le=1)
    # share of the base's questions about an absent object (and the instruction mix's, which replays
    # them in tuning) asked about a kind of a theme the scene lacks, none when the scene holds every
    # theme, the rest uniformly (world.AbsentRule); from epoch unrelated_negatives_from, uniform before
    unrelated_negatives: float = Field(0.0, ge=0, le=1)
    unrelated_negatives_from: float = Field(0.0, ge=0)
    circular_choices: bool = False  # each multiple-choice question in its four circular shifts, in one batch

    _skills = field_validator("skills")(classmethod(lambda cls, v: _known_skills(v)))


class LoraSettings(Section):
    enabled: bool = True
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class PromptSettings(Section):
    positive: str = "Explain why. Including any necessary facts or knowledge."
    negative: str = "Explain why this answer is wrong: {confusing_answer}. Including any necessary facts or knowledge."

    @field_validator("negative")
    @classmethod
    def _names_confusing_answer(cls, v: str) -> str:
        if "{confusing_answer}" not in v:
            raise ValueError("the negative prompt must contain the placeholder {confusing_answer}")
        return v


class MixSettings(Section):
    """A LLaVA-format conversation file (llava_v1_5_mix665k.json) mixed into every tuning run,
    the paper's recipe. Off while `path` is null. Both paths lie under `mix/`, the folder the
    tune stage declares as a DVC dependency (dvc.yaml), so a changed file or image reruns it."""

    path: str | None = None           # e.g. mix/llava_v1_5_mix665k.json
    images_root: str | None = None    # what its `image` fields are relative to, e.g. mix/images
    fraction: float | None = Field(None, gt=0, le=1)  # of the file's usable conversations, or
    count: int | None = Field(None, ge=1)              # this many (a fixed seeded choice, the same for every run)

    @model_validator(mode="after")
    def _consistent(self):
        if self.path is None:
            if self.images_root is not None or self.fraction is not None or self.count is not None:
                raise ValueError("tune.mix: set path (the conversation file) or leave the whole section null")
            return self
        if self.images_root is None:
            raise ValueError("tune.mix.images_root is required with tune.mix.path")
        if (self.fraction is None) == (self.count is None):
            raise ValueError("tune.mix: set exactly one of fraction and count")
        for key in ("path", "images_root"):
            parts = Path(getattr(self, key)).parts
            if Path(getattr(self, key)).is_absolute() or not parts or parts[0] != "mix" or ".." in parts:
                raise ValueError(f"tune.mix.{key} must lie under mix/ (put the file or a symlink there): "
                                 f"dvc.yaml declares that folder as the tune stage's dependency")
        return self


class TuneSettings(LoopSettings):
    variants: list[Variant] = list(VARIANTS)
    seeds: list[int] = [0, 1, 2]
    prompts: PromptSettings = PromptSettings()
    lora: LoraSettings = LoraSettings()
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = 0.0
    checkpoint_every: int = Field(100, ge=1)
    quick_eval_images: int = Field(100, ge=0)
    mix: MixSettings = MixSettings()
    # the base's instruction questions (student/curriculum.py SKILLS) mixed into every run, this many per
    # train record, drawn once (the same for every variant and seed): the miniature's share of
    # LLaVA-665k that the paper tunes on beside REVERIE's samples (measured without it: the
    # baseline forgot the yes/no checks of colours it was trained on, MME colour 50 -> 3)
    instruction_mix: float = Field(0.0, ge=0)


def _relative_inside(path: str) -> str:
    """A benchmark file's path under `evaluate.suites.root`: relative and not leaving it, so that
    the root, which dvc.yaml declares as the evaluate stage's dependency, holds every file read."""
    parts = Path(path).parts
    if not path or Path(path).is_absolute() or ".." in parts:
        raise ValueError(f"{path!r} must be a path relative to evaluate.suites.root, without '..'")
    return path


class SuiteSettings(Section):
    """One real benchmark: the instruction appended to each question and the generation budget,
    both as LLaVA-1.5's eval scripts use them (scripts/v1_5/eval/*.sh)."""

    prompt: str = SHORT
    max_new_tokens: int = Field(128, ge=1)


class PopeSuite(SuiteSettings):
    # POPE's own files, one per split (coco_pope_<split>.json: question_id, image, text, label)
    labels: dict[Literal["random", "popular", "adversarial"], str]
    images: str                         # the image folder (COCO val2014)
    questions: str | None = None        # LLaVA's llava_pope_test.jsonl (with `category`); labels then come from `labels`

    @field_validator("labels")
    @classmethod
    def _some_split(cls, v: dict) -> dict:
        if not v:
            raise ValueError("name at least one split's file")
        return {k: _relative_inside(p) for k, p in v.items()}

    @field_validator("images", "questions")
    @classmethod
    def _inside(cls, v: str | None) -> str | None:
        return None if v is None else _relative_inside(v)


class MMESuite(SuiteSettings):
    folder: str                         # MME_Benchmark_release_version: one folder per subtask

    @field_validator("folder")
    @classmethod
    def _inside(cls, v: str) -> str:
        return _relative_inside(v)


class MMBenchSuite(SuiteSettings):
    tsv: str                            # the official tsv (e.g. mmbench_dev_20230712.tsv, MMBench_DEV_EN.tsv)
    prompt: str = LETTER
    max_new_tokens: int = Field(1024, ge=1)

    @field_validator("tsv")
    @classmethod
    def _inside(cls, v: str) -> str:
        return _relative_inside(v)


class ScienceQASuite(SuiteSettings):
    questions: str                      # LLaVA's llava_test_CQM-A.json (or ScienceQA's problems.json)
    images: str                         # LLaVA's images/test (for problems.json: the images root holding test/)
    prompt: str = LETTER
    max_new_tokens: int = Field(1024, ge=1)

    @field_validator("questions", "images")
    @classmethod
    def _inside(cls, v: str) -> str:
        return _relative_inside(v)


class SuitesSettings(Section):
    """The real benchmark files. A suite named here replaces the synthetic benchmark of the same
    name (ScienceQA has none and is added); with none named the synthetic suites run alone."""

    root: str = "eval_data"             # every path below is relative to it; dvc.yaml declares it a dep
    pope: PopeSuite | None = None
    mme: MMESuite | None = None
    mmbench: MMBenchSuite | None = None
    scienceqa: ScienceQASuite | None = None


class EvaluateSettings(Section):
    batch_size: int = Field(64, ge=1)
    threads: int = Field(1, ge=1)  # torch's compute threads, as LoopSettings.threads
    # the weights' precision when answering (on the GPU the stage is given, else the CPU)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    max_new_tokens: int = Field(8, ge=1)  # the synthetic suites'; real suites have their own
    pope_objects: int = Field(3, ge=1)
    eval_images: int | None = Field(None, ge=1)
    mmbench_questions_per_image: int = Field(1, ge=0)
    suites: SuitesSettings = SuitesSettings()


class ReportSettings(Section):
    baseline: Variant = "response"
    # the comparison is void when the baseline does not see (reverie/report.py)
    min_baseline_pope_accuracy: float = Field(0.7, ge=0, le=1)
    baseline_yes_ratio: tuple[float, float] = (0.2, 0.8)
    bootstrap_replicates: int = Field(1000, ge=100)
    bootstrap_seed: int = 0

    @field_validator("baseline_yes_ratio")
    @classmethod
    def _a_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] < v[1] <= 1:
            raise ValueError("must be [low, high] with 0 <= low < high <= 1")
        return v


class OrchestrationSettings(Section):
    cron: str = "0 3 * * *"
    stage_retries: int = Field(1, ge=0)
    # stages the flow runs at once, in DVC's order, each with cores / parallel_stages threads
    # (plain `dvc repro` runs one at a time); 1 on a GPU machine where the runs would share one GPU
    parallel_stages: int = Field(2, ge=1)
    # the flow's stage processes fork from one that imported torch, transformers, peft and mlflow
    # once (reverie/warm.py), instead of each importing them again
    warm_interpreter: bool = True
    # the devices the flow places stages on (CUDA_VISIBLE_DEVICES ids): each base/tune@ run gets its
    # launch.processes of them, each evaluate@ run one, never shared; empty: no placement (a CPU run)
    devices: list[str] = []
    # where `make serve` (and `make mlflow-ui`) listen; the artifacts' MLflow links point there
    host: str = "127.0.0.1"
    prefect_port: int = Field(4200, ge=1, le=65535)
    mlflow_port: int = Field(5000, ge=1, le=65535)


class PlanSettings(Section):
    """What `flows.pipeline --plan` cannot count or measure in the workspace (reverie/plan.py);
    null: counted (data, the mix file) or measured (this workspace's metrics, a gpu_step file)."""

    records: int | None = Field(None, ge=1)  # train records per run
    mix_conversations: int | None = Field(None, ge=0)  # conversations in tune.mix.path
    tokens_per_sample: float | None = Field(None, gt=0)  # null: tune.max_length (an upper bound)
    tokens_per_s: float | None = Field(None, gt=0)  # training tokens per second per device
    throughput_file: str | None = None  # `python -m benchmarks.gpu_step --write FILE` output
    base_seconds: float | None = Field(None, ge=0)
    eval_seconds: float | None = Field(None, ge=0)  # per evaluate@ run
    stage_seconds: float = Field(0.0, ge=0)  # every stage's start-up (imports, loading)


class Params(Section):
    project: ProjectSettings = ProjectSettings()
    world: WorldSettings = WorldSettings()
    generate: GenerateSettings = GenerateSettings()
    validate_: ValidateSettings = Field(ValidateSettings(), alias="validate")
    base: BaseTrainSettings = BaseTrainSettings()
    tune: TuneSettings = TuneSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    report: ReportSettings = ReportSettings()
    orchestration: OrchestrationSettings = OrchestrationSettings()
    plan: PlanSettings = PlanSettings()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ParamsError(ValueError):
    """A params.yaml problem, phrased for the person who edits the file."""


def load_params(path: str | Path = "params.yaml", overrides: dict | None = None) -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(_describe(exc, path)) from None


def _set_dotted(data: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    data[keys[-1]] = value


# keys that were settings once, and why they are gone: an old params.yaml is told what to do
REMOVED_KEYS = {
    "base.existence_probes_per_image": "replaced by base.probes_per_image (questions of every skill, existence among them)",
    "base.attribute_probes_per_image": "replaced by base.probes_per_image (questions of every skill, colours and sizes among them)",
    "generate.judge": "removed: each teacher brings its own judge; delete the line and keep generate.teacher",
    "world.cooccurrence_pairs": "replaced by world.themes (groups of kinds that appear together) and world.theme_bias",
    "world.cooccurrence_bias": "replaced by world.theme_bias (the chance that a kind is drawn from the scene's theme)",
    "base.min_existence_accuracy": "replaced by base.min_seeing_accuracy (present kinds found and absent kinds unrelated "
                                   "to the scene rejected: a base that hallucinates the scene's theme still sees)",
}


def _describe(exc: ValidationError, path: Path) -> str:
    lines = [f"{path}: {exc.error_count()} problem(s) in the parameters"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden" and key in REMOVED_KEYS:
            lines.append(f"  - unknown key '{key}' ({REMOVED_KEYS[key]})")
        elif err["type"] == "extra_forbidden":
            lines.append(f"  - unknown key '{key}' (check its spelling; it is not a setting)")
        else:
            shown = "" if isinstance(err.get("input"), dict) else f" (got {err.get('input')!r})"
            lines.append(f"  - '{key}': {err['msg']}{shown}")
    return "\n".join(lines)


class ReadRecorder:
    """A read-only view of typed params that records the dotted path of every setting read
    through it (`world.kinds`, `tune.lora.r`), so a test can hold each stage's reads against
    the `params:` that dvc.yaml declares for it. Sections read through it come back wrapped
    too; a `model_dump()` counts as reading every key it returns."""

    def __init__(self, target: BaseModel, reads: set[str] | None = None, path: str = ""):
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_reads", set() if reads is None else reads)
        object.__setattr__(self, "_path", path)

    def _key(self, name: str) -> str:
        field = type(self._target).model_fields.get(name)
        name = field.alias if field is not None and field.alias else name
        return f"{self._path}.{name}" if self._path else name

    def __getattr__(self, name: str):
        value = getattr(self._target, name)
        if name in type(self._target).model_fields:
            if isinstance(value, BaseModel):
                return ReadRecorder(value, self._reads, self._key(name))
            self._reads.add(self._key(name))
            return value
        if name == "model_dump":
            def dump(*args, **kwargs):
                out = value(*args, **kwargs)
                by_alias = kwargs.get("by_alias", False)
                for field_name, field in type(self._target).model_fields.items():
                    if (field.alias if by_alias and field.alias else field_name) in out:
                        self._reads.add(self._key(field_name))
                return out
            return dump
        return value

    def __setattr__(self, name, value):
        raise TypeError("params are read-only")

    @property
    def reads(self) -> set[str]:
        return self._reads
