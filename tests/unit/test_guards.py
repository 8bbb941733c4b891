"""Each guard: what it must block, and the true paraphrases it must let through."""

from __future__ import annotations

import time

import pytest

from promptcache._keys import canonical
from promptcache.guards import (
    ALL_GUARDS,
    default_guards,
    literal_guard,
    negation_guard,
    numbers_guard,
    polarity_guard,
    quantities,
    swap_guard,
    target_guard,
)


def check(guard, a: str, b: str) -> str | None:  # type: ignore[no-untyped-def]
    return guard(canonical(a), canonical(b))


# ---------------------------------------------------------------- numbers
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I boil 2 eggs?", "How do I boil 3 eggs?"),
        ("How far is 5 km?", "How far is 5 miles?"),
        ("Best phone under $300", "Best phone under $500"),
        ("What happened in 2016?", "What happened in 2017?"),
        ("Boil two eggs", "Boil three eggs"),
        ("the 6th regiment", "the 7th regiment"),
        ("iPhone 6", "iPhone 6s"),
        ("How to lose 10 kg?", "How to lose 10 lbs?"),
    ],
)
def test_numbers_guard_blocks_different_quantities(a: str, b: str) -> None:
    assert check(numbers_guard, a, b) == "numbers differ"
    assert check(numbers_guard, b, a) == "numbers differ"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is 2 + 2?", "What is two plus two?"),
        ("How far is 5km?", "How far is 5 km?"),
        ("Is it 1,000 dollars?", "Is it $1000?"),
        ("the sixth infantry regiment", "the 6th infantry regiment"),
        ("Which one is better?", "Which is better?"),  # "one" as a pronoun is no number
        ("How do I learn Python?", "How can I learn Python?"),
        ("Cook for 20 minutes", "Cook for twenty minutes"),
        ("It costs 2.5 euros", "It costs 2,5 euros"),
    ],
)
def test_numbers_guard_lets_equal_quantities_through(a: str, b: str) -> None:
    assert check(numbers_guard, a, b) is None


def test_quantities_canonical_forms() -> None:
    assert quantities("boil 2 eggs for 5 min") == quantities("boil two eggs for 5 minutes")
    assert quantities("10%") == quantities("10 percent")


# ---------------------------------------------------------------- negation
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("A cake recipe with sugar", "A cake recipe without sugar"),
        ("Why do cats purr?", "Why don't cats purr?"),
        ("Can I eat eggs on keto?", "Can I never eat eggs on keto?"),
    ],
)
def test_negation_guard_blocks(a: str, b: str) -> None:
    assert check(negation_guard, a, b) == "negation differs"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Why can't I sleep?", "Why am I not able to sleep?"),
        ("How do I learn to code?", "What is the way to learn coding?"),
    ],
)
def test_negation_guard_lets_paraphrases_through(a: str, b: str) -> None:
    assert check(negation_guard, a, b) is None


# ---------------------------------------------------------------- swapped roles
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I convert Celsius to Fahrenheit?", "How do I convert Fahrenheit to Celsius?"),
        ("Flights from Paris to London", "Flights from London to Paris"),
        (
            "Andrew Snoid born Andrew McLennan is a musician",
            "Andrew McLennan born Andrew Snoid is a musician",
        ),
        (
            "Characters go through the routine nature and the environment, poetic conflict.",
            "Characters go through the poetic nature and the environment, routine conflict.",
        ),
        ("Is Messi better than Ronaldo?", "Is Ronaldo better than Messi?"),
    ],
)
def test_swap_guard_blocks_exchanged_roles(a: str, b: str) -> None:
    assert check(swap_guard, a, b) == "words exchanged"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "What is the difference between Python and Java?",
            "What is the difference between Java and Python?",
        ),
        ("Cape Don was named in 1818 by George Don", "Cape Don was named by George Don in 1818"),
        ("He lived in Europe during his teens", "He lived during his teens in Europe"),
        (
            "Sterling Brown was known for his southern black dialect",
            "Sterling Brown was known for his black southern dialect",
        ),
        ("Which is better, tea or coffee?", "Which is better, coffee or tea?"),
        ("How do I reset my password?", "How can I reset my password?"),
        (
            "For data science, what is the best way to learn Python?",
            "What is the best way to learn Python for data science?",
        ),
    ],
)
def test_swap_guard_lets_moves_and_symmetric_swaps_through(a: str, b: str) -> None:
    assert check(swap_guard, a, b) is None


# ---------------------------------------------------------------- changed target
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Translate 'good morning' into Spanish.", "Translate 'good morning' into German."),
        ("How do I move from Android to iPhone?", "How do I move from Android to Windows Phone?"),
        ("What is the best laptop for gaming?", "What is the best laptop for programming?"),
    ],
)
def test_target_guard_blocks_another_target(a: str, b: str) -> None:
    assert check(target_guard, a, b) is not None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Translate 'good morning' into Spanish.", "How do you say 'good morning' in Spanish?"),
        ("What is the best laptop for gaming?", "Which laptop is best for gaming?"),
        ("How do I get to the airport?", "How can I get to the airport?"),
    ],
)
def test_target_guard_lets_paraphrases_through(a: str, b: str) -> None:
    assert check(target_guard, a, b) is None


# ---------------------------------------------------------------- all guards
@pytest.mark.parametrize("guard", list(ALL_GUARDS.values()))
def test_identical_prompts_always_pass(guard) -> None:  # type: ignore[no-untyped-def]
    for text in ("", "a", "How do I convert 5 km into miles, not feet?", "x y z w v u"):
        assert guard(canonical(text), canonical(text)) is None


@pytest.mark.parametrize("guard", list(ALL_GUARDS.values()))
def test_guards_are_cheap(guard) -> None:  # type: ignore[no-untyped-def]
    a = canonical(
        "After the end of the war in June 1902, Higgins left Southampton in August, "
        "returning to Cape Town the following month."
    )
    b = canonical(
        "In August, after the end of the war in June 1902, Higgins left Southampton and "
        "returned to Cape Town the following month."
    )
    started = time.perf_counter()
    for _ in range(200):
        guard(a, b)
    per_call = (time.perf_counter() - started) / 200
    assert per_call < 1e-3  # well under a millisecond (typically tens of microseconds)


def test_default_guards_are_named_guards() -> None:
    names = {g.__name__ for g in default_guards()}
    assert names and names <= set(ALL_GUARDS)


# ---------------------------------------------------------------- literal differences
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is 10² ?", "What is 102 ?"),
        ("Spell Maße", "Spell Masse"),
        ("What does 'ABC' stand for?", "What does 'abc' stand for?"),
        ("Run `ls -L`", "Run `ls -l`"),
        ("Fix:\n```\nif x:\n    y()\nz()\n```", "Fix:\n```\nif x:\n    y()\n    z()\n```"),
        ("Fix:\ndef f():\n  a()\nb()", "Fix:\ndef f():\n  a()\n  b()"),
    ],
)
def test_literal_guard_blocks_what_folding_merges(a: str, b: str) -> None:
    assert check(literal_guard, a, b) is not None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I reset my password?", "how do i RESET my password?"),
        ("What does 'carpe diem' mean?", 'Meaning of "carpe diem"?'),
        ("Translate 'Hello' into French", "Translate hello into French"),
        ("What is 10 squared?", "What is ten squared?"),
    ],
)
def test_literal_guard_passes_case_and_quote_marks(a: str, b: str) -> None:
    assert check(literal_guard, a, b) is None


# ---------------------------------------------------------------- polarity and direction
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Sort the list descending", "Sort the list ascending"),
        ("is it safe to eat raw eggs?", "is it unsafe to eat raw eggs?"),
        ("How do I increase my credit score?", "How do I decrease my credit score?"),
        ("What happened before the war?", "What happened after the war?"),
        ("Find the min of an array", "Find the max of an array"),
        ("How to encrypt a file with gpg", "How to decrypt a file with gpg"),
        ("How do I enable dark mode?", "How do I disable dark mode?"),
        ("Is this number valid?", "Is this number invalid?"),
        ("How to install numpy", "How to uninstall numpy"),
    ],
)
def test_polarity_guard_blocks_opposites(a: str, b: str) -> None:
    assert check(polarity_guard, a, b) is not None
    assert check(polarity_guard, b, a) is not None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is the largest planet?", "Which planet is the largest?"),
        ("How do I increase and decrease volume?", "How to decrease or increase volume?"),
        ("Is it safe to fly?", "Is flying safe?"),
        ("Is it safe to fly?", "Is it secure to fly?"),
        ("What is the max value?", "What is the maximum value?"),
        ("How can I increase my height?", "How do I increase my height?"),
    ],
)
def test_polarity_guard_passes_paraphrases(a: str, b: str) -> None:
    assert check(polarity_guard, a, b) is None


def test_literal_and_polarity_guards_are_default() -> None:
    assert literal_guard in default_guards() and polarity_guard in default_guards()
    assert ALL_GUARDS["literal_guard"] is literal_guard
    assert ALL_GUARDS["polarity_guard"] is polarity_guard
