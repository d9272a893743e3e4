"""The domain's words, written once: the image token, an image's path under the data root, the prompt suffixes that LLaVA-1.5 (and so the REVERIE
data, the student's base step and the benchmarks) append to a question, the ablation's variants
and the name of one (variant, seed) run. Depends on nothing, so every layer may use it."""

IMAGE_TOKEN = "<image>"  # where the image stands in a LLaVA conversation's first message
SHORT = "Answer the question using a single word or phrase."
LETTER = "Answer with the option's letter from the given choices directly."

# The ablation's variants, as data: the rationale samples each adds to the response sample
# (the paper's response-only, +positive, +negative, +both).
VARIANT_RATIONALES: dict[str, tuple[str, ...]] = {
    "response": (),
    "pos": ("positive",),
    "neg": ("negative",),
    "pos_neg": ("positive", "negative"),
}
VARIANTS = tuple(VARIANT_RATIONALES)


def image_path(split: str, image_id: str, suffix: str = ".png") -> str:
    """Where an image lies under the data root: the path every record, scene and benchmark item
    names it by."""
    return f"images/{split}/{image_id}{suffix}"


def run_name(variant: str, seed: int) -> str:
    """The name of one (variant, seed) run: its model folder, metrics files and MLflow run."""
    return f"{variant}-s{seed}"


def parse_run_name(name: str) -> tuple[str, str]:
    """`run_name`'s inverse: (variant, seed as written)."""
    variant, seed = name.rsplit("-s", 1)
    return variant, seed
