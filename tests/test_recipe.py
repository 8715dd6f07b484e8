import pytest

from ensembler.data.labels import Task
from ensembler.errors import EnsError
from ensembler.pipeline.recipe import Term, complete_recipe, parse_recipe

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


ALL = (M, G, A)


def test_an_unnamed_task_takes_the_only_named_source_that_predicts_it():
    # the card's command: age from an age-only model, mask from polar -> gender from polar
    r = complete_recipe(parse_recipe("age:chloe-age mask:polar"), {"chloe-age": (A,), "polar": ALL, "ken": (G,)})
    assert r.tasks == {M: (Term("polar"),), G: (Term("polar"),), A: (Term("chloe-age"),)}
    assert r.filled == {G: "gender: not named; from polar, the recipe's only source with gender"}
    assert str(r) == "mask,gender:polar age:chloe-age"


def test_an_unnamed_task_takes_the_vote_of_several_named_sources():
    r = complete_recipe(parse_recipe("age:peter*2 mask:polar"), {"peter": ALL, "polar": ALL})
    assert r.tasks[G] == (Term("polar"), Term("peter"))  # in the order of the tasks they serve, weight 1
    assert r.filled[G] == "gender: not named; from polar+peter, the recipe's sources with gender"
    assert r.tasks[A] == (Term("peter", 2.0),)


def test_no_named_source_predicts_the_task():
    coverage = {"chloe-age": (A,), "mia-mask": (M,), "polar": ALL, "ken": (G,)}
    with pytest.raises(EnsError, match=r"no source for gender: the recipe's sources mia-mask, chloe-age do not predict it; sources that do: 'polar', 'ken'; name one \(gender:polar\)") as info:
        complete_recipe(parse_recipe("age:chloe-age mask:mia-mask"), coverage)
    assert "chloe-age)" not in str(info.value).split("sources that do")[1]  # never suggests a source lacking the task
    with pytest.raises(EnsError, match="the recipe's source chloe-age does not predict it; no source of the project predicts it"):
        complete_recipe(parse_recipe("age:chloe-age"), {"chloe-age": (A,)})


def test_completion_checks_names_and_leaves_complete_recipes_alone():
    r = parse_recipe("*:a")
    assert complete_recipe(r, {"a": ALL}) is r
    with pytest.raises(EnsError, match=r"unknown source 'polr' \(did you mean: polar\?\)"):
        complete_recipe(parse_recipe("age:polr"), {"polar": ALL})
