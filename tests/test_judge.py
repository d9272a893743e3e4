"""The consistency judge, one check at a time, on rationales written by hand: each item is
consistent but for the one fault it is built to show, and the judge must name that fault."""
import pytest

from reverie.records import judge_scores
from reverie.teachers.judge import Claims, SceneGraphJudge, Verdict

JUDGE = SceneGraphJudge()
Q = "How many circles are there in the image?"
GOOD = ("2", "3", "There are 2 circles in the image. So the answer is 2.",
        "The answer 3 is wrong. There are 2 circles in the image.")


def judge(correct=GOOD[0], confusing=GOOD[1], positive=GOOD[2], negative=GOOD[3]) -> Verdict:
    return JUDGE.judge(Q, correct, confusing, positive, negative)


def test_a_consistent_item_passes():
    assert judge() == Verdict(True, "")
    assert judge().to_json() == {"consistent": True, "reason": ""}


@pytest.mark.parametrize("kwargs, reason", [
    (dict(confusing="2"), "the correct and the confusing answer are the same"),
    (dict(correct="Yes", confusing="yes."), "the correct and the confusing answer are the same"),  # after normalising
    (dict(positive="There are 2 circles in the image."), "the positive rationale reaches no answer"),
    (dict(positive="There are 2 circles in the image. So the answer is 3."),
     "the positive rationale concludes '3', not the correct answer '2'"),
    (dict(negative="There are 2 circles in the image."), "the negative rationale does not reject the confusing answer"),
    # it rejects an answer, but not the confusing one
    (dict(negative="The answer 2 is wrong. There are 2 circles in the image."),
     "the negative rationale does not reject the confusing answer"),
    # the rejection must open the rationale
    (dict(negative="There are 2 circles. The answer 3 is wrong."),
     "the negative rationale does not reject the confusing answer"),
])
def test_answers_and_conclusions_must_agree(kwargs, reason):
    verdict = judge(**kwargs)
    assert verdict == Verdict(False, reason)


@pytest.mark.parametrize("negative", [
    # it rejects the confusing answer, then concludes it: the claims would agree with each other
    # (the positive rationale is not read here), but the rationale contradicts itself
    "The answer 3 is wrong. There are 3 circles in the image. So the answer is 3.",
    "The answer 3 is wrong. So the answer is 3. There are 2 circles in the image.",  # wherever it stands
    "The answer 3 is wrong. There are 2 circles in the image. So the answer is 3 .",  # after normalising
])
def test_a_negative_rationale_concluding_the_confusing_answer_contradicts_itself(negative):
    assert judge(negative=negative) == Verdict(
        False, "the negative rationale rejects the confusing answer '3' but concludes it")
    # the same with no positive rationale of counts: the answers check decides before the claims
    assert judge(positive="So the answer is 2.", negative=negative).reason == \
        "the negative rationale rejects the confusing answer '3' but concludes it"


@pytest.mark.parametrize("negative", [
    "The answer 3 is wrong. There are 2 circles in the image.",  # the ordinary one: no conclusion
    "The answer 3 is wrong. There are 2 circles in the image. So the answer is 2.",  # concludes the correct one
    "The answer 3 is wrong. So the answer is 2.",
])
def test_a_negative_rationale_without_the_confusing_conclusion_passes(negative):
    assert judge(negative=negative) == Verdict(True, "")


def test_conclusion_and_rejection_are_compared_after_normalising():
    assert judge(correct="A large red circle", confusing="A small red circle",
                 positive="There is a large red circle at the top left. So the answer is a large  red circle.",
                 negative="The answer A SMALL red circle. is wrong. There is a large red circle at the top left.").consistent


@pytest.mark.parametrize("positive, negative, reason", [
    # one position, two objects
    ("There is a small red circle at the top left. So the answer is 2.",
     "The answer 3 is wrong. There is a large red circle at the top left.",
     "the negative rationale puts a large red circle at the top left, the positive one a small red circle"),
    ("There is a small red circle at the top left. So the answer is 2.",
     "The answer 3 is wrong. There is a small blue circle at the top left.",
     "the negative rationale puts a small blue circle at the top left, the positive one a small red circle"),
    ("There is a small red circle at the top left. So the answer is 2.",
     "The answer 3 is wrong. There is a small red star at the top left.",
     "the negative rationale puts a small red star at the top left, the positive one a small red circle"),
    # two counts of one kind
    ("There are 2 circles in the image. So the answer is 2.", "The answer 3 is wrong. There are 3 circles in the image.",
     "the negative rationale counts 3 circles, the positive one 2"),
    ("There are 2 circles in the image. So the answer is 2.", "The answer 3 is wrong. There is exactly one circle in the image.",
     "the negative rationale counts 1 circles, the positive one 2"),
    ("There is exactly one circle in the image. So the answer is 2.", "The answer 3 is wrong. There are 2 circles in the image.",
     "the negative rationale counts 2 circles, the positive one 1"),
    # absent and placed
    ("There is no star in the image. So the answer is 2.", "The answer 3 is wrong. There is a small red star at the top left.",
     "the positive rationale says there is no star, the negative one places one"),
    ("There is a small red star at the top left. So the answer is 2.", "The answer 3 is wrong. There is no star in the image.",
     "the negative rationale says there is no star, the positive one places one"),
    # more placed than counted
    ("There is exactly one circle in the image. So the answer is 2.",
     "The answer 3 is wrong. There is a small red circle at the top left. There is a large blue circle at the bottom right.",
     "the positive rationale counts 1 circles but 2 are placed"),
    ("There are 2 circles in the image. There is a small red circle at the top left. So the answer is 2.",
     "The answer 3 is wrong. There is a large blue circle at the bottom right. There is a small red circle at the center. "
     "There is a small green circle at the top right.",
     "the positive rationale counts 2 circles but 4 are placed"),  # one placed by each rationale, and 3 more
])
def test_contradicting_claims_are_named(positive, negative, reason):
    assert judge(positive=positive, negative=negative) == Verdict(False, reason)


@pytest.mark.parametrize("positive, negative", [
    # the same object said twice, at one position
    ("There is a small red circle at the top left. So the answer is 2.",
     "The answer 3 is wrong. There is a small red circle at the top left."),
    # as many placed as counted, and fewer (not every object need be mentioned)
    ("There are 2 circles in the image. So the answer is 2.",
     "The answer 3 is wrong. There is a small red circle at the top left. There is a large blue circle at the center."),
    ("There are 2 circles in the image. So the answer is 2.",
     "The answer 3 is wrong. There is a small red circle at the top left."),
    # no star, and a circle placed: different kinds
    ("There is no star in the image. So the answer is 2.", "The answer 3 is wrong. There is a small red circle at the top left."),
    # counts of different kinds
    ("There are 2 circles in the image. So the answer is 2.", "The answer 3 is wrong. There is exactly one star in the image."),
])
def test_agreeing_claims_pass(positive, negative):
    assert judge(positive=positive, negative=negative) == Verdict(True, "")


# counts are read by the kind's plural ("There are 3 crosses"), the form the teacher writes them in
# (reverie.vocab.plural): "There are 3 crosses" and "There is exactly one cross" name one kind
CROSSES = "How many crosses are there in the image?"


@pytest.mark.parametrize("positive, negative", [
    ("There are 2 crosses in the image. So the answer is 2.", "The answer 3 is wrong. There are 2 crosses in the image."),
    ("There are 2 crosses in the image. There is a small red cross at the top left. There is a large blue cross at "
     "the center. So the answer is 2.", "The answer 3 is wrong. There are 2 crosses in the image."),
    ("There are 2 crosses in the image. So the answer is 2.", "The answer 3 is wrong. There is exactly one bar in the image."),
    ("There is exactly one cross in the image. There is a small red cross at the top left. So the answer is 2.",
     "The answer 3 is wrong. There is a small red cross at the top left."),
])
def test_consistent_plural_counts_pass(positive, negative):
    assert JUDGE.judge(CROSSES, "2", "3", positive, negative) == Verdict(True, "")


@pytest.mark.parametrize("positive, negative, reason", [
    ("There are 2 crosses in the image. So the answer is 2.", "The answer 3 is wrong. There are 3 crosses in the image.",
     "the negative rationale counts 3 crosses, the positive one 2"),
    # the singular and the plural count one kind: one cross against 2 crosses
    ("There is exactly one cross in the image. So the answer is 2.", "The answer 3 is wrong. There are 2 crosses in the image.",
     "the negative rationale counts 2 crosses, the positive one 1"),
    ("There are 2 crosses in the image. So the answer is 2.", "The answer 3 is wrong. There is exactly one cross in the image.",
     "the negative rationale counts 1 crosses, the positive one 2"),
    # objects placed are counted under the plural of their kind: 3 crosses placed, 2 counted
    ("There are 2 crosses in the image. So the answer is 2.",
     "The answer 3 is wrong. There is a small red cross at the top left. There is a large blue cross at the center. "
     "There is a small green cross at the bottom right.",
     "the positive rationale counts 2 crosses but 3 are placed"),
])
def test_contradicting_plural_counts_are_caught(positive, negative, reason):
    assert JUDGE.judge(CROSSES, "2", "3", positive, negative) == Verdict(False, reason)


def test_claims_accumulate_within_one_rationale():
    claims = Claims()
    assert claims.add("There is exactly one square in the image.", "positive") is None
    assert claims.add("There is a large green square at the center.", "positive") is None
    assert claims.add("There is a small green square at the top left.", "negative") == \
        "the positive rationale counts 1 squares but 2 are placed"


def test_judge_scores_by_hand():
    def rec(flagged, injected):
        return {"judge": {"consistent": not flagged}, "provenance": {"injected_error": "wrong_answer" if injected else None}}

    # 3 flagged of which 2 injected; 4 injected in all
    raw = [rec(True, True), rec(True, True), rec(True, False), rec(False, True), rec(False, True), rec(False, False)]
    assert judge_scores(raw) == {"flagged": 3, "injected": 4, "filter_precision": 2 / 3, "filter_recall": 2 / 4}
    assert judge_scores([rec(False, False)]) == {"flagged": 0, "injected": 0, "filter_precision": 1.0,
                                                 "filter_recall": 1.0}
