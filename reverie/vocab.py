"""The domain's words, written once: the image token, an image's path under the data root, the prompt suffixes that LLaVA-1.5 (and so the REVERIE
data, the student's base step and the benchmarks) append to a question, the ablation's variants
and the name of one (variant, seed) run. Depends on nothing, so every layer may use it."""
from dataclasses import dataclass

IMAGE_TOKEN = "<image>"  # where the image stands in a LLaVA conversation's first message
SHORT = "Answer the question using a single word or phrase."
LETTER = "Answer with the option's letter from the given choices directly."

# The ablation's variants, as data: the rationale samples each adds to the response sample
# (the paper's response-only, +positive, +negative, +both), and two controls. Every variant
# trains the same number of optimizer steps on batches of the same size, and every sample
# trains its record's answer once, so variants differ in what they are taught, not in how long
# or how often they see an answer (reverie/tuning.py derives the steps). The controls:
# - `pos_neg_shuffled`: pos_neg with each record's rationales taken from another image's
#   record: the same amount of rationale text, none of its content about this image;
# - `response_1x`: the baseline at a third of the steps, as the paper's recipe (the same epochs
#   for every variant, pos_neg having three samples per record) gives it: what the extra steps
#   alone are worth.
@dataclass(frozen=True)
class Variant:
    rationales: tuple[str, ...]
    shuffled_rationales: bool = False
    step_share: float = 1.0  # of the steps every main variant trains
    control: bool = False


VARIANT_SPECS: dict[str, Variant] = {
    "response": Variant(()),
    "pos": Variant(("positive",)),
    "neg": Variant(("negative",)),
    "pos_neg": Variant(("positive", "negative")),
    "pos_neg_shuffled": Variant(("positive", "negative"), shuffled_rationales=True, control=True),
    "response_1x": Variant((), step_share=1 / 3, control=True),
}
VARIANT_RATIONALES: dict[str, tuple[str, ...]] = {name: v.rationales for name, v in VARIANT_SPECS.items()}
VARIANTS = tuple(VARIANT_SPECS)
MAIN_VARIANTS = tuple(name for name, v in VARIANT_SPECS.items() if not v.control)
# The report's comparisons, (variant, against): the paper's three against the baseline, then each
# control against what it controls for. One Holm family per metric holds all of them.
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("pos", "response"), ("neg", "response"), ("pos_neg", "response"),
    ("pos_neg", "pos_neg_shuffled"), ("response", "response_1x"),
)


# The one-skill questions the base student is taught (reverie/student/curriculum.py poses them; base.skills
# in params.yaml picks and weights them): whether a kind is there, how many, its colour, size and place,
# the shape at a place, everything about a kind, the shape or colour as a multiple-choice letter, and
# yes/no checks of a count, a colour and a place.
BASE_SKILLS = ("existence", "count", "color", "size", "position", "shape", "about", "choice_shape", "choice_color",
               "verify_count", "verify_color", "verify_position")

# Plurals of the object kinds the teachers, the base's probes and the benchmarks count: the
# synthetic world's shapes and the COCO and Visual Genome categories a real scene graph names.
_IRREGULAR = {"person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
              "foot": "feet", "tooth": "teeth", "goose": "geese", "knife": "knives", "leaf": "leaves",
              "shelf": "shelves", "wolf": "wolves", "scarf": "scarves", "loaf": "loaves"}
_INVARIANT = {"sheep", "deer", "fish", "skis", "scissors", "glasses", "pants", "jeans", "shorts", "series",
              "species", "aircraft", "skateboarding"}


def plural(kind: str) -> str:
    """The plural of an object kind ("cross" -> "crosses", "traffic light" -> "traffic lights",
    "person" -> "people"): the last word is inflected by English's regular rules, irregular
    and invariant nouns by a table."""
    *head, last = kind.split(" ")
    lower = last.lower()
    if lower in _INVARIANT:
        word = last
    elif lower in _IRREGULAR:
        word = _IRREGULAR[lower]
    elif lower.endswith(("s", "x", "z", "ch", "sh")):
        word = last + "es"
    elif len(lower) > 1 and lower.endswith("y") and lower[-2] not in "aeiou":
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return " ".join([*head, word])


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
