"""Reading teachers' free-text answers, function by function: the JSON or Python literal found in
prose and fences (and the bounds on what is tried), cut-off answers, question lists with their
problems reported one by one, rationales, judge verdicts and the messages fed back to the model.
Every expected value is written out by hand."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from reverie.data_import import ImageEntry
from reverie.teachers.parsing import (MAX_LITERAL_CHARS, MAX_STARTS, MIN_RATIONALE_CHARS, ParseError, Question, _decode,
                                      _key, cut_off, describe_validation, find_json, image_entries, parse_judge,
                                      parse_questions, parse_rationale)

SHORT_SUFFIX = "Answer the question using a single word or phrase."
LETTER_SUFFIX = "Answer with the option's letter from the given choices directly."


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(ParseError) as caught:
        call(*args, **kwargs)
    return str(caught.value)


def summary(questions) -> list[tuple]:
    return [(q.question, q.question_type, q.correct_answer, q.confusing_answer) for q in questions]


# ---- _decode: JSON, else a bounded Python literal -------------------------------------------
def test_the_literal_bound_is_inclusive_and_measured_after_stripping():
    assert MAX_LITERAL_CHARS == 100_000
    at_bound = "['" + "a" * (100_000 - 4) + "']"  # a Python literal (single quotes), not JSON
    assert len(at_bound) == 100_000
    assert _decode("\n  " + at_bound + "  \n") == ["a" * 99_996]
    assert find_json(at_bound) == ["a" * 99_996]
    over = "['" + "a" * (100_000 - 3) + "']"
    with pytest.raises(ValueError) as caught:
        _decode(over)
    assert str(caught.value) == "too long for a literal"
    assert error_of(find_json, over) == "no JSON object found in the answer"


def test_a_broken_literal_is_a_value_error_that_keeps_the_parsers_reason():
    with pytest.raises(ValueError) as caught:
        _decode("[1, 2")
    assert "'[' was never closed" in str(caught.value)
    with pytest.raises(ValueError) as caught:
        _decode("{'a': open('x')}")  # a call is refused, never run
    assert "malformed node" in str(caught.value)


def test_json_and_python_literals_decode_alike():
    assert _decode('{"a": [1, 2.5, true, null]}') == {"a": [1, 2.5, True, None]}
    assert _decode("{'a': [1, 2.5, True, None],}") == {"a": [1, 2.5, True, None]}


# ---- find_json: fences first, then the whole text, then brackets inside prose -----------------
def test_a_fenced_block_wins_over_json_earlier_in_the_prose():
    answer = ('For example {"a": 1} is the format.\n```text\nsee below\n```\n'
              '```json\n{"b": 2}\n```\nThat is all.')
    assert find_json(answer) == {"b": 2}


def test_a_fenced_block_that_the_caller_does_not_want_is_skipped():
    answer = '```json\n{"note": "draft"}\n```\n```json\n{"contradiction": "no"}\n```'
    assert find_json(answer, lambda v: isinstance(v, dict) and "contradiction" in v) == {"contradiction": "no"}


def test_a_bracket_that_does_not_decode_does_not_stop_the_search():
    assert find_json('Use the format [question, answer]: {"a": 1}') == {"a": 1}


def test_an_object_followed_by_punctuation_is_read_to_its_closing_brace():
    assert find_json('The answer is {"a": 1}.') == {"a": 1}
    assert find_json('Result: [1, 2], as you asked.') == [1, 2]


def test_brackets_inside_quoted_strings_are_not_counted():
    assert find_json('Here: {"q": "a ] b"} done') == {"q": "a ] b"}
    assert find_json("Here: {'q': 'is it [A] or {B'} done") == {"q": "is it [A] or {B"}


def test_escaped_quotes_and_escapes_before_a_closing_quote_are_read_inside_strings():
    assert find_json('Sure: {"reason": "first line\\n", "contradiction": "no"} Thanks') == {
        "reason": "first line\n", "contradiction": "no"}
    assert find_json('Verdict: {"reason": "it says \\"left]\\"", "contradiction": "yes"} end') == {
        "reason": 'it says "left]"', "contradiction": "yes"}


def test_an_unclosed_bracket_in_the_prose_does_not_hide_a_later_object():
    assert find_json("Answer [note: it's below]\n{\"contradiction\": \"no\"}") == {"contradiction": "no"}


def test_a_cut_off_list_yields_its_complete_items_even_with_json_only_words():
    assert find_json('[{"a": true}, {"b": null}, {"c": fal', lambda v: isinstance(v, list)) == [
        {"a": True}, {"b": None}]


def test_a_cut_off_wrapper_is_closed_with_every_open_bracket():
    assert find_json('{"questions": [{"q": 1}, {"q": 2') == {"questions": [{"q": 1}]}
    assert find_json('{"questions": [{"q": 1}, {"q": 2', lambda v: isinstance(v, dict)) == {"questions": [{"q": 1}]}


def test_the_errors_say_whether_the_answer_was_cut_off_or_held_no_json():
    assert error_of(find_json, "I'm sorry, I can't help with that.") == "no JSON object found in the answer"
    assert error_of(find_json, None) == "no JSON object found in the answer"
    assert error_of(find_json, "") == "no JSON object found in the answer"
    assert error_of(find_json, '{"questions": [{"question": "What') == "the answer ends before its JSON closes (cut off?)"
    assert error_of(find_json, "See figure [X") == "the answer ends before its JSON closes (cut off?)"
    assert error_of(find_json, "[X-ray of a hand] and no JSON here") == "no JSON object found in the answer"


def test_only_the_first_max_starts_brackets_in_prose_are_tried():
    assert MAX_STARTS == 64
    assert find_json("[x] " * 63 + '{"a": 1}') == {"a": 1}
    assert error_of(find_json, "[x] " * 64 + '{"a": 1}') == "no JSON object found in the answer"
    assert error_of(find_json, "[x] " * 70) == "no JSON object found in the answer"


# ---- cut_off ---------------------------------------------------------------------------------
def test_cut_off_looks_at_the_first_bracket_only():
    assert cut_off('[{"question": "What is') is True
    assert cut_off('Sure: {"a": [1, 2]}') is False
    assert cut_off("[X-ray of the left hand] shows no fracture") is False
    assert cut_off("Answer: [Option X") is True
    assert cut_off("no brackets at all") is False
    assert cut_off(None) is False
    assert cut_off("") is False


# ---- describe_validation ----------------------------------------------------------------------
class Box(BaseModel):
    sizes: list[int]


def validation_error(data) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        Box.model_validate(data)
    return caught.value


def test_describe_validation_names_each_location_with_dots_and_joins_with_semicolons():
    exc = validation_error({"sizes": [1, "two", 3, "four"]})
    assert describe_validation(exc) == ("sizes.1: Input should be a valid integer, unable to parse string as an integer; "
                                        "sizes.3: Input should be a valid integer, unable to parse string as an integer")


def test_describe_validation_calls_an_error_without_location_the_answer():
    with pytest.raises(ValidationError) as caught:
        Box.model_validate([1, 2])
    assert describe_validation(caught.value) == "answer: Input should be a valid dictionary or instance of Box"


def test_describe_validation_is_cut_at_its_limit():
    exc = validation_error({"sizes": ["x"] * 20})
    text = describe_validation(exc)
    assert len(text) == 400
    assert text.startswith("sizes.0: Input should be a valid integer, unable to parse string as an integer; sizes.1: ")
    assert describe_validation(exc, limit=30) == "sizes.0: Input should be a val"


# ---- _key -------------------------------------------------------------------------------------
def test_field_names_are_snake_cased_without_markup_or_item_numbers():
    assert _key("**Question**") == "question"
    assert _key(" Correct Answer: ") == "correct_answer"
    assert _key("- confusing-answer2") == "confusing_answer"
    assert _key("Question 3") == "question"


# ---- parse_questions -----------------------------------------------------------------------
def test_a_single_question_object_in_prose_is_one_question():
    answer = ('Here is one question:\n{"question": "How many buses are there?", "correct_answer": 2, '
              '"confusing_answer": 3}\nLet me know if you need more.')
    questions, problems = parse_questions(answer)
    assert summary(questions) == [("How many buses are there?", "short_answer", "2", "3")]
    assert problems == []


def test_keys_written_in_markdown_bold_or_with_colons_are_read():
    answer = json.dumps([{"**Question**": "What is the man holding?", "Correct Answer:": "An umbrella",
                          "- Confusing answer -": "A newspaper"}])
    questions, problems = parse_questions(answer)
    assert summary(questions) == [("What is the man holding?", "short_answer", "An umbrella", "A newspaper")]
    assert problems == []


def test_answers_written_as_booleans_become_yes_and_no():
    answer = json.dumps([{"question": "Is the traffic light green?", "question_type": "short answer",
                          "correct_answer": True, "confusing_answer": False}])
    questions, _ = parse_questions(answer)
    assert summary(questions) == [("Is the traffic light green?", "short_answer", "yes", "no")]
    literal = "[{'question': 'Is it raining?', 'correct_answer': False, 'confusing_answer': True}]"
    questions, _ = parse_questions(literal)
    assert summary(questions) == [("Is it raining?", "yes_no", "no", "yes")]


def test_numbers_and_padded_text_are_normalised():
    answer = json.dumps({"questions": [{"question": "  What colour is the bus?  ", "correct_answer": " Red ",
                                        "confusing_answer": "Blue\n"},
                                       {"question": "How tall is the lamp in metres?", "correct_answer": 2.5,
                                        "confusing_answer": 4}]})
    questions, problems = parse_questions(answer)
    assert summary(questions) == [("What colour is the bus?", "short_answer", "Red", "Blue"),
                                  ("How tall is the lamp in metres?", "short_answer", "2.5", "4")]
    assert problems == []


def test_each_rejected_question_is_reported_with_its_index_and_the_rest_are_kept():
    answer = json.dumps({"questions": [
        {"question": "Is the dog asleep?", "question_type": "yes_no", "correct_answer": "Yes",
         "confusing_answer": "Maybe"},
        {"question": "What colour is the bus?", "correct_answer": "Red", "confusing_answer": "Blue"},
        {"question": "what colour is the bus?", "correct_answer": "Red", "confusing_answer": "Green"},
        {"question": "How many people are waiting?", "correct_answer": 3, "confusing_answer": 5},
        {"question": "Which animal is on the sofa?", "options": ["a cat", "a dog"], "correct_answer": "C",
         "confusing_answer": "a cat"},
        {"question": "What is on the table?", "correct_answer": "a cup"},
        {"question": "What colour is the bus?", "correct_answer": "Red", "confusing_answer": "Yellow"},
        {"question": "Where is the cup?", "correct_answer": "on the table", "confusing_answer": "on the floor"},
    ]})
    questions, problems = parse_questions(answer)
    assert summary(questions) == [("What colour is the bus?", "short_answer", "Red", "Blue"),
                                  ("How many people are waiting?", "short_answer", "3", "5"),
                                  ("Where is the cup?", "short_answer", "on the table", "on the floor")]
    assert problems == [
        "question 0: answer: Value error, a yes_no question needs the answers 'yes' and 'no'",
        "question 2: repeats an earlier question",
        "question 4: answer: Value error, the answer 'C' is neither an option letter nor an option",
        "question 5: confusing_answer: Input should be a valid string",
        "question 6: repeats an earlier question",
    ]


def test_no_valid_question_is_a_parse_error_listing_every_problem():
    answer = json.dumps({"questions": [
        {"question": "Is it day?", "question_type": "yes_no", "correct_answer": "maybe", "confusing_answer": "no"},
        {"question": "Hi", "correct_answer": "a", "confusing_answer": "b"}]})
    assert error_of(parse_questions, answer) == (
        "no valid question: question 0: answer: Value error, a yes_no question needs the answers 'yes' and 'no'; "
        "question 1: question: Value error, the question is empty")


def test_the_no_valid_question_message_is_cut_at_500_characters_of_problems():
    bad = {"question": "Is it day?", "question_type": "yes_no", "correct_answer": "maybe", "confusing_answer": "no"}
    message = error_of(parse_questions, json.dumps([bad] * 10))
    assert len(message) == len("no valid question: ") + 500
    assert message.startswith("no valid question: question 0: answer: Value error, a yes_no question needs the "
                              "answers 'yes' and 'no'; question 1: answer: ")


def test_an_empty_question_list_and_an_empty_answer_say_different_things():
    assert error_of(parse_questions, '{"questions": []}') == (
        "expected a list of questions, each with question, correct_answer and confusing_answer")
    assert error_of(parse_questions, "[]") == "no JSON object found in the answer"
    assert error_of(parse_questions, "42") == "no JSON object found in the answer"


def test_objects_that_are_not_questions_before_the_questions_are_skipped():
    answer = ('Scene: {"objects": ["bus", "man"]}\nQuestions: [{"question": "What is the man holding?", '
              '"correct_answer": "an umbrella", "confusing_answer": "a newspaper"}]')
    questions, problems = parse_questions(answer)
    assert summary(questions) == [("What is the man holding?", "short_answer", "an umbrella", "a newspaper")]
    assert problems == []
    tags = ('Tags: ["street", "bus"]\n[{"question": "What colour is the bus?", "correct_answer": "Red", '
            '"confusing_answer": "Blue"}]')
    assert summary(parse_questions(tags)[0]) == [("What colour is the bus?", "short_answer", "Red", "Blue")]


def test_a_bracketed_note_with_capital_x_before_the_question_is_not_a_cut_off():
    answer = ('[X-ray image]\n{"question": "Is the bone broken?", "correct_answer": "no", '
              '"confusing_answer": "yes"}')
    questions, problems = parse_questions(answer)
    assert summary(questions) == [("Is the bone broken?", "yes_no", "no", "yes")]
    assert problems == []


def test_a_cut_off_answer_with_json_null_keeps_both_complete_questions():
    answer = ('[{"question": "Is the cup full?", "correct_answer": "no", "confusing_answer": "yes", "options": null}, '
              '{"question": "What is on the table?", "correct_answer": "a cup", "confusing_answer": "a bowl", '
              '"options": null}, {"question": "Why is')
    questions, problems = parse_questions(answer)
    assert summary(questions) == [("Is the cup full?", "yes_no", "no", "yes"),
                                  ("What is on the table?", "short_answer", "a cup", "a bowl")]
    assert problems == ["the answer is cut off after 2 complete question(s)"]


# ---- Question.record_question -----------------------------------------------------------------
def one_question(**fields) -> Question:
    return Question.model_validate(fields)


def test_yes_no_and_short_questions_get_the_short_answer_suffix_once():
    yes_no = one_question(question="Is there a dog on the road?", correct_answer="No", confusing_answer="Yes")
    assert yes_no.question_type == "yes_no"
    assert yes_no.record_question() == "Is there a dog on the road?\n" + SHORT_SUFFIX
    short = one_question(question="What colour is the bus?", correct_answer="Red", confusing_answer="Blue")
    assert short.question_type == "short_answer"
    assert short.record_question() == "What colour is the bus?\n" + SHORT_SUFFIX
    suffixed = one_question(question="What colour is the bus?\n" + SHORT_SUFFIX, correct_answer="Red",
                            confusing_answer="Blue")
    assert suffixed.record_question() == "What colour is the bus?\n" + SHORT_SUFFIX
    suffixed_yes_no = one_question(question="Is it raining?\n" + SHORT_SUFFIX, correct_answer="yes",
                                   confusing_answer="no")
    assert suffixed_yes_no.question_type == "yes_no"
    assert suffixed_yes_no.record_question() == "Is it raining?\n" + SHORT_SUFFIX


def test_open_ended_questions_are_left_as_written_and_choices_are_listed_with_letters():
    open_ended = one_question(question="Why is the man holding an umbrella?",
                              correct_answer="Because it is raining hard.", confusing_answer="Because it is sunny.")
    assert open_ended.question_type == "open_ended"
    assert open_ended.record_question() == "Why is the man holding an umbrella?"
    choice = one_question(question="Which animal is on the sofa?", options=["a cat", "a dog"],
                          correct_answer="a dog", confusing_answer="(A)")
    assert choice.record_question() == "Which animal is on the sofa?\nA. a cat\nB. a dog\n" + LETTER_SUFFIX


# ---- parse_rationale ---------------------------------------------------------------------------
def test_a_fenced_rationale_is_read_without_its_fence():
    assert parse_rationale("```\nThe bus is red, so 'red' is the right answer.\n```") == (
        "The bus is red, so 'red' is the right answer.", [])
    assert parse_rationale("Here it is:\n```text\nThe sign reads STOP in white letters.\n```\nHope it helps.") == (
        "The sign reads STOP in white letters.", [])


@pytest.mark.parametrize("key", ["Rationale", "explanation", "Analysis", "answer"])
def test_a_rationale_answered_in_json_is_read_under_any_of_its_names(key):
    answer = "```json\n" + json.dumps({key: "  The umbrella is open because it rains.  "}) + "\n```"
    assert parse_rationale(answer) == ("The umbrella is open because it rains.", [])


def test_the_rationale_key_is_preferred_over_the_answer_key():
    answer = json.dumps({"answer": "Red", "rationale": "The paint of the bus is clearly red."})
    assert parse_rationale(answer) == ("The paint of the bus is clearly red.", [])


def test_a_json_rationale_without_a_known_key_is_empty():
    assert error_of(parse_rationale, '{"verdict": "the bus is red, clearly"}') == (
        "the rationale is empty or shorter than 10 characters")


def test_a_rationale_needs_at_least_ten_characters():
    assert MIN_RATIONALE_CHARS == 10
    assert parse_rationale("  It is red.  ") == ("It is red.", [])
    assert error_of(parse_rationale, "It's red.") == "the rationale is empty or shorter than 10 characters"
    assert error_of(parse_rationale, None) == "the rationale is empty or shorter than 10 characters"


def test_a_brace_that_is_not_json_stays_prose():
    assert parse_rationale("{The bus} is red because of its paint.") == ("{The bus} is red because of its paint.", [])


# ---- parse_judge ----------------------------------------------------------------------------------
def test_a_judge_object_after_a_list_in_the_prose_is_read():
    answer = 'Points: ["colour", "count"]\n{"contradiction": "no", "reason": "both say red"}'
    judged, problems = parse_judge(answer)
    assert (judged.contradiction, judged.reason, problems) == (False, "both say red", [])


def test_a_judge_that_answers_in_prose_keeps_its_words_as_the_reason():
    judged, problems = parse_judge("  Yes, the first says red and the second says blue.\n")
    assert (judged.contradiction, judged.reason, problems) == (
        True, "Yes, the first says red and the second says blue.", [])
    judged, _ = parse_judge("**NO** - they agree.")
    assert (judged.contradiction, judged.reason) == (False, "**NO** - they agree.")


def test_a_prose_reason_is_cut_at_300_characters():
    judged, _ = parse_judge("Yes. " + "x" * 400)
    assert judged.contradiction is True
    assert judged.reason == "Yes. " + "x" * 295
    assert len(judged.reason) == 300


def test_a_judge_answer_with_neither_json_nor_yes_or_no_says_what_is_expected():
    expected = 'expected {"contradiction": "yes" or "no", "reason": "..."}'
    assert error_of(parse_judge, "I cannot tell from these rationales.") == expected
    assert error_of(parse_judge, None) == expected
    assert error_of(parse_judge, "") == expected


def test_an_invalid_judge_object_reports_the_validation_problem():
    assert error_of(parse_judge, '{"contradiction": "maybe", "reason": "unclear"}') == (
        "contradiction: Input should be a valid boolean, unable to interpret input")


def test_judge_keys_and_verdicts_are_normalised():
    judged, _ = parse_judge("{'Contradiction': ' No. ', 'Reason': None}")
    assert (judged.contradiction, judged.reason) == (False, "")
    judged, _ = parse_judge('{"contradiction": true, "reason": 3}')
    assert (judged.contradiction, judged.reason) == (True, "3")


# ---- image_entries -----------------------------------------------------------------------------
def test_image_entries_keep_entries_and_send_bare_pairs_to_train():
    entry = ImageEntry("coco_1", Path("/data/coco/1.jpg"), "images/val/coco_1.jpg", "val")
    result = image_entries([entry, ("img7", "/photos/img7.png"), (8, Path("/photos/8.png"))])
    assert result[0] is entry
    assert result[1:] == [ImageEntry("img7", Path("/photos/img7.png"), "/photos/img7.png", "train"),
                          ImageEntry("8", Path("/photos/8.png"), "/photos/8.png", "train")]
