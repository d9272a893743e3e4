"""The domain's words, written once: the prompt suffixes that LLaVA-1.5 (and so the REVERIE
data, the student's base step and the benchmarks) append to a question. Depends on nothing,
so every layer may use it."""

SHORT = "Answer the question using a single word or phrase."
LETTER = "Answer with the option's letter from the given choices directly."
