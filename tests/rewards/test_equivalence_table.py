"""Table-driven equivalence checks: >= 150 equivalent and non-equivalent answer pairs."""
import pytest

from reasoning_jax.rewards import answers_match, check_equivalence

EQUIVALENT = [
    # integers, signs, commas, whitespace
    ("42", "42"), ("1,000", "1000"), ("1000", "1,000"), ("1,234,567", "1234567"),
    ("-7", "-7"), ("+7", "7"), (" 12 ", "12"), ("007", "7"), ("12.", "12"),
    ("-1,000", "-1000"), ("$5$", "5"), ("\\boxed{5}", "5"),
    # decimals and their exact fractions
    ("0.5", "1/2"), ("0.25", "\\frac{1}{4}"), (".5", "0.5"), ("2.50", "2.5"),
    ("3.0", "3"), ("1e3", "1000"), ("2.5e-1", "0.25"), ("0.125", "1/8"),
    ("1.5", "\\frac{3}{2}"), ("-0.75", "-\\frac{3}{4}"), ("0.3333333", "\\frac{1}{3}"),
    ("0.6666667", "2/3"), ("3.14159265", "\\pi"), ("2.7182818", "e"),
    # fractions in every spelling
    ("\\frac{1}{2}", "1/2"), ("\\dfrac{1}{2}", "\\frac{1}{2}"), ("\\tfrac{3}{4}", "0.75"),
    ("\\frac12", "0.5"), ("2/4", "1/2"), ("\\frac{6}{8}", "\\frac{3}{4}"),
    ("-\\frac{1}{2}", "-0.5"), ("\\frac{-1}{2}", "-1/2"), ("10/4", "5/2"),
    ("\\frac{10}{4}", "2.5"), ("1\\frac{1}{2}", "1.5"),
    # percentages (value or value/100)
    ("50%", "50"), ("50\\%", "0.5"), ("12.5%", "0.125"), ("100%", "1"), ("25 %", "25"),
    ("5%", "5\\%"),
    # roots and powers
    ("\\sqrt{2}", "\\sqrt{2}"), ("\\sqrt{8}", "2\\sqrt{2}"), ("\\sqrt{12}", "2\\sqrt{3}"),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"), ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}"),
    ("\\sqrt[3]{8}", "2"), ("2^{10}", "1024"), ("2^3", "8"), ("\\sqrt{16}", "4"),
    ("3\\sqrt{3}", "\\sqrt{27}"), ("\\sqrt{2}\\cdot\\sqrt{3}", "\\sqrt{6}"),
    ("1.41421356", "\\sqrt{2}"),
    # simple expressions
    ("x+1", "1+x"), ("2x", "2*x"), ("x^2+2x+1", "(x+1)^2"), ("(x-1)(x+1)", "x^2-1"),
    ("2(a+b)", "2a+2b"), ("\\frac{x}{2}", "0.5x"), ("3\\pi", "3*\\pi"),
    ("\\pi/2", "\\frac{\\pi}{2}"), ("a^2b", "b a^2"), ("x y", "xy"), ("-x", "-1\\cdot x"),
    ("n(n+1)/2", "\\frac{n^2+n}{2}"), ("\\frac{1}{x}", "x^{-1}"),
    ("2\\cdot 3", "6"), ("4+5", "9"), ("10-3", "7"), ("\\frac{2}{3}+\\frac{1}{3}", "1"),
    # equations with a single variable answer
    ("x=3", "3"), ("3", "x=3"), ("y = -2", "-2"),
    # intervals, tuples, sets
    ("[-1,1]", "[-1, 1]"), ("(0,1)", "(0, 1)"), ("(1,2)", "(1, 2)"),
    ("[0,\\infty)", "[0, \\infty)"), ("(-\\infty, 3]", "(-\\infty,3]"),
    ("\\{1,2\\}", "\\{2,1\\}"), ("(1, 2, 3)", "(1,2,3)"), ("\\{3\\}", "3"),
    ("[\\frac{1}{2}, 1]", "[0.5, 1]"), ("(2,\\frac{1}{2})", "(2, 0.5)"),
    # degrees, text wrappers, LaTeX spacing macros
    ("90^\\circ", "90"), ("\\left(1,2\\right)", "(1,2)"), ("1\\,000", "1000"),
    ("\\text{ }5", "5"), ("\\displaystyle\\frac{1}{2}", "0.5"), ("5.", "5"),
    # big and tiny numbers within relative tolerance
    ("123456789", "123456789.0"), ("1000000", "1e6"), ("0.000001", "1e-6"),
    ("3.0000001", "3"), ("-2.0000001", "-2"),
    # boxed wrappers on both sides
    ("\\boxed{\\frac{1}{2}}", "0.5"), ("\\boxed{x+1}", "x+1"), ("$\\sqrt{4}$", "2"),
]

NOT_EQUIVALENT = [
    ("42", "43"), ("1,000", "100"), ("-7", "7"), ("0.5", "1/3"), ("0.25", "\\frac{1}{2}"),
    ("3.1", "3"), ("1e3", "100"), ("12", "1.2"), ("0", "1"), ("10", "100"),
    ("\\frac{1}{2}", "\\frac{1}{3}"), ("2/3", "3/2"), ("\\frac{3}{4}", "0.7"),
    ("-\\frac{1}{2}", "\\frac{1}{2}"), ("0.333", "\\frac{1}{3}"), ("0.67", "2/3"),
    ("3.14", "\\pi"), ("50%", "0.05"), ("12.5%", "1.25"), ("5%", "0.5"),
    ("\\sqrt{2}", "\\sqrt{3}"), ("\\sqrt{8}", "3"), ("2\\sqrt{2}", "\\sqrt{2}"),
    ("2^{10}", "1000"), ("2^3", "6"), ("\\sqrt{16}", "-4"), ("1.414", "\\sqrt{2}"),
    ("x+1", "x-1"), ("2x", "x^2"), ("x^2+1", "(x+1)^2"), ("(x-1)(x+1)", "x^2+1"),
    ("2(a+b)", "2a+b"), ("\\frac{x}{2}", "2x"), ("3\\pi", "\\pi^3"),
    ("\\pi/2", "\\pi"), ("n(n+1)/2", "n(n-1)/2"), ("\\frac{1}{x}", "x"),
    ("2\\cdot 3", "5"), ("4+5", "20"), ("x", "y"), ("a+b", "ab"),
    ("x=3", "4"), ("3", "x=4"),
    ("[-1,1]", "(-1,1)"), ("[0,1)", "[0,1]"), ("(1,2)", "(2,1)"), ("(1,2,3)", "(1,2)"),
    ("[0,\\infty)", "(0,\\infty)"), ("\\{1,2\\}", "\\{1,3\\}"), ("(1,2)", "(1,3)"),
    ("\\{1,2\\}", "\\{1\\}"), ("[2,5]", "[2,6]"),
    ("90^\\circ", "180"), ("123456789", "123456788"), ("1000000", "1e7"),
    ("0.001", "0.0001"), ("3.001", "3"), ("-2.01", "-2"), ("1", "-1"),
    ("\\boxed{\\frac{1}{2}}", "2"), ("\\boxed{x+1}", "x+2"), ("$\\sqrt{4}$", "4"),
    ("99", "9"), ("1/2", "2"), ("\\frac{2}{4}", "\\frac{1}{4}"), ("7", "7.5"),
    ("100", "10%"), ("1.5", "15"), ("0", "0.1"), ("-0", "1"),
    ("2\\pi", "6.28"), ("e", "2.71"), ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}"),
]


def test_table_is_large_and_has_both_kinds():
  assert len(EQUIVALENT) + len(NOT_EQUIVALENT) >= 150
  assert len(EQUIVALENT) >= 75 and len(NOT_EQUIVALENT) >= 70


@pytest.mark.parametrize("pred,gold", EQUIVALENT)
def test_equivalent(pred, gold):
  verdict = check_equivalence(pred, gold)
  assert verdict.reason == "ok", verdict
  assert verdict.match, (pred, gold)
  assert answers_match(pred, gold)


@pytest.mark.parametrize("pred,gold", NOT_EQUIVALENT)
def test_not_equivalent(pred, gold):
  verdict = check_equivalence(pred, gold)
  assert not verdict.match, (pred, gold, verdict)
  assert not answers_match(pred, gold)


@pytest.mark.parametrize("pred,gold,reason", [
    (None, "5", "unparsable_answer"), ("", "5", "unparsable_answer"),
    ("5", "", "unparsable_gold"), ("5", "\\frac{", "unparsable_gold"),
    ("\\frac{", "5", "unparsable_answer"), ("$$", "5", "unparsable_answer"),
])
def test_unparsable_reasons(pred, gold, reason):
  verdict = check_equivalence(pred, gold)
  assert (verdict.match, verdict.reason) == (False, reason)
  assert verdict.detail


def test_bad_types_are_clear_errors():
  with pytest.raises(TypeError, match="gold must be str"):
    check_equivalence("1", 1)
  with pytest.raises(TypeError, match="predicted must be str"):
    check_equivalence(1, "1")


def test_works_off_the_main_thread():
  # math-verify's signal timeout raises off the main thread; ours must not.
  import concurrent.futures
  with concurrent.futures.ThreadPoolExecutor(1) as ex:
    assert ex.submit(answers_match, "\\sqrt{8}", "2\\sqrt{2}").result()
    assert not ex.submit(answers_match, "x^2", "x^3").result()
