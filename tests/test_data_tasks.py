"""Task registry: built-in reasoning-gym tasks, disjoint splits, scoring, answer extraction."""

from __future__ import annotations

import pytest

from headjax.data import (
    Example,
    Task,
    extract_answer,
    extract_number,
    get_task,
    list_tasks,
    register_task,
    split_of,
)

PAPER_TASKS = ("basic_arithmetic", "chain_sum", "products", "word_sorting", "leg_counting",
               "gsm_symbolic")


def test_registry_holds_the_paper_tasks_with_their_kinds():
    assert set(PAPER_TASKS) <= set(list_tasks())
    # gsm_symbolic and the multi-step arithmetic candidates of the reproduction's targets stage
    assert list_tasks("complex") == ["chain_sum_3", "decimal_chain_sum", "gsm_symbolic",
                                     "mixed_arithmetic", "simple_equations"]
    assert "basic_arithmetic" in list_tasks("basic")
    with pytest.raises(KeyError, match="unknown task 'nope'.*basic_arithmetic"):
        get_task("nope")


@pytest.mark.parametrize("name", list_tasks())
def test_gold_answer_scores_one_and_a_wrong_one_zero(name):
    task = get_task(name)
    examples = task.examples("test", 8, seed=3)
    assert len(examples) == 8
    for example in examples:
        assert example.task == name
        assert example.prompt.endswith("Give only the final answer.")
        assert task.score(example, example.answer) == 1.0
        assert task.score(example, f"The answer is **{example.answer}**.") == 1.0
        assert task.score(example, "I do not know") == 0.0
        assert task.score(example, "999999999999 zebra") == 0.0


@pytest.mark.parametrize("name", ["basic_arithmetic", "word_sorting", "gsm_symbolic"])
def test_splits_are_disjoint_deterministic_and_seeded(name):
    task = get_task(name)
    train = task.examples("train", 300, seed=0)
    test = task.examples("test", 100, seed=0)
    train_questions = {e.prompt for e in train}
    test_questions = [e.prompt for e in test]
    assert not train_questions & set(test_questions)
    assert len(set(test_questions)) == len(test_questions)
    assert all(split_of(q) == "train" for q in train_questions)
    assert [e.prompt for e in task.examples("test", 100, seed=0)] == test_questions
    assert [e.prompt for e in task.examples("test", 100, seed=1)] != test_questions
    with pytest.raises(ValueError, match="split must be one of"):
        task.examples("validation", 1, 0)


def test_a_task_too_small_for_the_request_fails_clearly():
    def draw(seed, count):
        return [Example(f"q{i}", str(i), "tiny_space", {}) for i in range(3)] * (count // 3)

    task = Task("tiny_space", "basic", draw, lambda e, a: float(a == e.answer))
    with pytest.raises(ValueError, match="tiny_space.*too small"):
        task.examples("test", 10, seed=0)


def test_register_task_refuses_silent_overwrite():
    task = Task("custom_echo", "basic", lambda s, c: [], lambda e, a: 0.0)
    register_task(task)
    with pytest.raises(ValueError, match="already registered"):
        register_task(task)
    assert register_task(task, overwrite=True) is get_task("custom_echo")
    with pytest.raises(ValueError, match="kind must be one of"):
        Task("bad", "medium", lambda s, c: [], lambda e, a: 0.0)


@pytest.mark.parametrize("text, expected", [
    ("42", "42"),
    ("  42.\n", "42"),
    ("The answer is 42.", "42"),
    ("Final answer: apple, banana", "apple, banana"),
    ("Let me think.\n3 + 4 = 7\nAnswer: **7**", "7"),
    ("<answer>blue</answer> trailing", "blue"),
    ("so \\boxed{12} it is", "12"),
    ("7<|im_end|>\nextra text", "7"),
    ("'ainomma'", "ainomma"),
    ("The answer is 12.\nI hope this helps!", "12"),
    ("Answer: 3\nWait, the final answer is 5.\nThanks", "5"),
    ("first line\nsecond line", "second line"),
    ("", ""),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("The total is 1,234 legs.", "1234"),
    ("-6070", "-6070"),
    ("x = 3.5", "3.5"),
    ("3 apples and 5 pears: 8", "8"),
    ("none", "none"),
    ("The answer is 1,234.\nLet me know if you need more.", "1234"),
])
def test_extract_number(text, expected):
    assert extract_number(text) == expected
