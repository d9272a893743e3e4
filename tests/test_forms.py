"""Well-formedness of answers (reverie/evaluation/forms.py), case by case, by hand."""
import pytest

from reverie.evaluation.forms import answer_vocabulary, group, question_form, well_formed


def row(benchmark: str, answer: str, label: str = "", **extra) -> dict:
    return {"benchmark": benchmark, "qid": "q", "image": "im", "question": "?", "label": label, "answer": answer,
            **extra}


# ---- which rule a row takes -------------------------------------------------------------------

@pytest.mark.parametrize("r,form", [
    (row("pope", "yes", "yes", split="random"), "yes_no"),
    (row("mme", "no", "no", subtask="count"), "yes_no"),
    (row("reasoning", "no", "no", question_type="yes_no", options=None), "yes_no"),
    (row("mmbench", "A", "A", options=["x", "y"]), "multiple_choice"),
    (row("scienceqa", "A", "A", options=["x", "y"]), "multiple_choice"),
    (row("reasoning", "B", "B", question_type="multiple_choice", options=["x", "y"]), "multiple_choice"),
    (row("short_answer", "3", "3", category="count"), "open"),
    (row("reasoning", "3", "3", question_type="short_answer", options=None), "open"),
    (row("reasoning", "a red circle", "a red circle", question_type="open_ended", options=None), "open"),
    # a benchmark the module does not know: options make it multiple choice, else open
    (row("custom", "C", "C", options=["x", "y", "z"]), "multiple_choice"),
    (row("custom", "cat", "cat"), "open"),
])
def test_question_form_reads_the_row(r, form):
    assert question_form(r) == form


# ---- yes/no ---------------------------------------------------------------------------------

@pytest.mark.parametrize("answer,ok", [
    ("yes", True), ("no", True), ("Yes", True), ("NO", True), ("Yes.", True), (" no! ", True), ("yes?", True),
    ("No.\n", True),
    ("Yes, there is", False), ("There is not", False), ("y", False), ("nope", False), ("", False),
    ("yes no", False), ("2", False), ("maybe", False), (".yes", False)])
def test_yes_no_answers_are_exactly_yes_or_no(answer, ok):
    assert well_formed(row("pope", answer, "yes", split="random"), {}) is ok
    assert well_formed(row("mme", answer, "no", subtask="color"), {}) is ok
    assert well_formed(row("reasoning", answer, "no", question_type="yes_no", options=None), {}) is ok


# ---- multiple choice ----------------------------------------------------------------------------

@pytest.mark.parametrize("answer,ok", [
    ("A", True), ("C", True), ("B.", True), ("B)", True), (" D ", True), ("A.\n", True),
    ("E", False),  # four options: no E
    ("a", False), ("(A)", False), ("A. red", False), ("The answer is A.", False), ("AB", False), ("red", False),
    ("", False), ("A:", False)])
def test_multiple_choice_answers_are_one_option_letter(answer, ok):
    options = ["red", "green", "blue", "white"]
    assert well_formed(row("mmbench", answer, "A", options=options, question_id="m", rotation=0), {}) is ok
    assert well_formed(row("reasoning", answer, "A", question_type="multiple_choice", options=options), {}) is ok


def test_the_number_of_options_bounds_the_letters():
    assert well_formed(row("scienceqa", "B", "A", options=["x", "y"]), {})
    assert not well_formed(row("scienceqa", "C", "A", options=["x", "y"]), {})
    assert well_formed(row("scienceqa", "E", "A", options=list("vwxyz")), {})


# ---- open answers: the vocabulary of the group's labels -----------------------------------------

COLORS = ["red", "green", "blue"]
RUN = ([row("short_answer", "", str(n), category="count") for n in (1, 2, 3)]
       + [row("short_answer", "", c, category="color") for c in COLORS]
       + [row("reasoning", "", "a small red circle", question_type="open_ended", reasoning="attribute", options=None),
          row("reasoning", "", "a large blue star", question_type="open_ended", reasoning="attribute", options=None),
          row("reasoning", "", "green", question_type="short_answer", reasoning="attribute", options=None),
          row("reasoning", "", "top left", question_type="short_answer", reasoning="spatial", options=None),
          row("reasoning", "", "center", question_type="short_answer", reasoning="spatial", options=None),
          # yes/no and multiple-choice labels never enter the vocabulary
          row("reasoning", "", "yes", question_type="yes_no", reasoning="attribute", options=None),
          row("short_answer", "", "", category="color")])  # an unlabelled row adds nothing


def test_answer_vocabulary_by_hand():
    vocabulary = answer_vocabulary(RUN)
    assert vocabulary[("short_answer", None, "count")] == {1: [{"1", "2", "3"}]}
    assert vocabulary[("short_answer", None, "color")] == {1: [{"red", "green", "blue"}]}
    # normalised labels: "a" is an article and goes
    assert vocabulary[("reasoning", "open_ended", "attribute")] == {3: [{"small", "large"}, {"red", "blue"},
                                                                        {"circle", "star"}]}
    assert vocabulary[("reasoning", "short_answer", "attribute")] == {1: [{"green"}]}
    assert vocabulary[("reasoning", "short_answer", "spatial")] == {2: [{"top"}, {"left"}], 1: [{"center"}]}
    assert ("reasoning", "yes_no", "attribute") not in vocabulary
    assert set(vocabulary) == {("short_answer", None, "count"), ("short_answer", None, "color"),
                               ("reasoning", "open_ended", "attribute"), ("reasoning", "short_answer", "attribute"),
                               ("reasoning", "short_answer", "spatial")}


def test_the_vocabulary_comes_from_labels_never_answers():
    answered = [dict(r, answer="purple") for r in RUN]
    assert answer_vocabulary(answered) == answer_vocabulary(RUN)
    assert not well_formed(row("short_answer", "purple", "red", category="color"), answer_vocabulary(answered))


@pytest.mark.parametrize("r,ok", [
    (row("short_answer", "3", "2", category="count"), True),
    (row("short_answer", "three", "2", category="count"), True),  # number words are digits once normalised
    (row("short_answer", "3.", "2", category="count"), True),
    (row("short_answer", "7", "2", category="count"), False),  # no label of the group is 7
    (row("short_answer", "yes", "2", category="count"), False),
    (row("short_answer", "2 circles", "2", category="count"), False),
    (row("short_answer", "red", "blue", category="color"), True),
    (row("short_answer", "Red.", "blue", category="color"), True),
    (row("short_answer", "the red", "blue", category="color"), True),  # the article goes, one word is left
    (row("short_answer", "yes", "blue", category="color"), False),
    (row("short_answer", "2", "blue", category="color"), False),  # a count is no colour
    (row("short_answer", "red red", "blue", category="color"), False),
    (row("short_answer", "", "blue", category="color"), False),
    (row("reasoning", "a small red circle", "x", question_type="open_ended", reasoning="attribute"), True),
    (row("reasoning", "A large red star.", "x", question_type="open_ended", reasoning="attribute"), True),
    (row("reasoning", "red small circle", "x", question_type="open_ended", reasoning="attribute"), False),
    (row("reasoning", "a small circle", "x", question_type="open_ended", reasoning="attribute"), False),
    (row("reasoning", "red", "x", question_type="open_ended", reasoning="attribute"), False),
    (row("reasoning", "green", "x", question_type="short_answer", reasoning="attribute"), True),
    (row("reasoning", "top left", "x", question_type="short_answer", reasoning="spatial"), True),
    (row("reasoning", "center", "x", question_type="short_answer", reasoning="spatial"), True),
    (row("reasoning", "left top", "x", question_type="short_answer", reasoning="spatial"), False),
    (row("reasoning", "top", "x", question_type="short_answer", reasoning="spatial"), False),
    # a group the run never labelled: nothing is well-formed there
    (row("short_answer", "3", "3", category="size"), False),
])
def test_open_answers_take_the_shape_of_their_groups_labels(r, ok):
    assert well_formed(r, answer_vocabulary(RUN)) is ok


def test_a_group_is_benchmark_question_type_and_category_or_reasoning():
    assert group(row("short_answer", "", "2", category="count")) == ("short_answer", None, "count")
    assert group(row("reasoning", "", "2", question_type="short_answer", reasoning="counting")) == \
        ("reasoning", "short_answer", "counting")
    assert group(row("custom", "", "x")) == ("custom", None, None)
