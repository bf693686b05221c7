import pytest

from longforge.eval.scoring import effective_length, postprocess_pred, string_match_all, string_match_part


def test_string_match_all_is_fraction_of_refs_found_case_insensitive():
    preds = ["The numbers are 123 and 456.", "ALPHA-beta", "nothing here"]
    refs = [["123", "456", "789", "000"], ["alpha-BETA"], ["x1"]]
    # 2/4 + 1/1 + 0/1 over three samples
    assert string_match_all(preds, refs) == round((0.5 + 1 + 0) / 3 * 100, 2) == 50.0


def test_string_match_part_is_any_ref_found():
    preds = ["Paris", "it was in the city of lyon", "no idea"]
    refs = [["paris", "Paris, France"], ["Marseille", "Lyon"], ["Nice"]]
    assert string_match_part(preds, refs) == round(2 / 3 * 100, 2) == 66.67


def test_all_and_part_differ_on_partial_recall():
    preds, refs = ["apple banana"], [["apple", "banana", "cherry", "date"]]
    assert string_match_all(preds, refs) == 50.0
    assert string_match_part(preds, refs) == 100.0  # lm-eval's version would give 50 (fraction): RULER's is "any"


def test_substring_semantics_and_rounding():
    assert string_match_all(["12345678"], [["2345"]]) == 100.0  # substring, not token match
    assert string_match_all(["a", "b", "c"], [["a"], ["x"], ["x"]]) == 33.33


def test_postprocess_maps_control_characters_to_newlines_and_strips():
    assert postprocess_pred("  \x00 7 apples\tand\x1f2 pears \n") == "7 apples\nand\n2 pears"
    assert postprocess_pred("\x7fkept") == "\x7fkept"  # only \x00-\x1f are control characters here


@pytest.mark.parametrize(
    "preds, refs",
    [([], []), (["a"], [["a"], ["b"]]), (["a"], ["a"]), (["a"], [[]])],
)
def test_scorers_reject_malformed_input(preds, refs):
    with pytest.raises(ValueError):
        string_match_all(preds, refs)
    with pytest.raises(ValueError):
        string_match_part(preds, refs)


def test_effective_length_is_longest_length_above_threshold():
    assert effective_length({4096: 95.0, 8192: 90.0, 16384: 85.6, 32768: 70.0}) == 8192  # 85.6 itself fails
    assert effective_length({4096: 80.0, 8192: 86.0}) == 8192
    assert effective_length({4096: 50.0}) is None
    assert effective_length({4096: 60.0}, threshold=50) == 4096
