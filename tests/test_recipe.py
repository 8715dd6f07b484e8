import pytest

from ensembler.compose.recipe import Term, parse_recipe
from ensembler.data.labels import Task
from ensembler.errors import EnsError

M, G, A = Task.MASK, Task.GENDER, Task.AGE


def test_one_source_per_task():
    r = parse_recipe(["age:peter", "mask:polar", "gender:polar"])
    assert r.tasks == {M: (Term("polar"),), G: (Term("polar"),), A: (Term("peter"),)}
    assert r.sources == ("polar", "peter")
    assert str(r) == "mask,gender:polar age:peter"
    assert not r.uniform


def test_weights_several_tasks_and_default():
    r = parse_recipe("age:peter*2+ken mask,gender:polar")
    assert r.tasks[A] == (Term("peter", 2.0), Term("ken", 1.0))
    assert r.tasks[M] == r.tasks[G] == (Term("polar"),)
    r = parse_recipe("*:a+b*0.5 age:c")
    assert r.tasks[M] == r.tasks[G] == (Term("a"), Term("b", 0.5)) and r.tasks[A] == (Term("c"),)


def test_uniform_and_its_text_round_trip():
    r = parse_recipe("*:a+b*2")
    assert r.uniform and str(r) == "*:a+b*2"
    assert parse_recipe(str(r)) == r
    assert parse_recipe("mask,gender,age:b*2+a").uniform  # order of terms does not matter


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty recipe"),
        ("peter", "expected TASK:SOURCE"),
        ("age:", "expected TASK:SOURCE"),
        ("agee:peter *:x", r"unknown task 'agee' \(did you mean: age"),
        ("age:peter mask:polar", r"no source for gender: name it \(gender:peter\) or .* \(\*:peter\)"),
        ("age:a age:b *:c", "task age is given twice"),
        ("*:a *:b", r"'\*' is given twice"),
        ("*:a+", "empty source name"),
        ("*:a*0", "weight '0' must be a positive number"),
        ("*:a*-1", "weight '-1' must be a positive number"),
        ("*:a*x", "weight 'x' must be a positive number"),
        ("*:a*inf", "weight 'inf' must be a positive number"),
        ("*:a*nan", "weight 'nan' must be a positive number"),
        ("*:a+a", "source 'a' appears twice"),
        ("*:a/b", "invalid name"),
    ],
)
def test_recipe_errors(text, match):
    with pytest.raises(EnsError, match=match):
        parse_recipe(text)
