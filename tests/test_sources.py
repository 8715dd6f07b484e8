import numpy as np
import pandas as pd
import pytest
from conftest import hard_csv, write_csv

from ensembler.data.labels import N_CLASSES, TASKS, Task, decode
from ensembler.data.sources import ImportKind, import_source
from ensembler.data.store import Split, Store
from ensembler.data.toy import teammate_csv
from ensembler.errors import EnsError

SKILL = {Task.MASK: 2.0, Task.GENDER: 2.0, Task.AGE: 1.0}


def both(toy):
    return pd.concat([toy.eval, toy.train])


def test_import_hard_submission_with_train_rows(project, toy, tmp_path):
    truth = both(toy)
    path = hard_csv(tmp_path / "a.csv", truth, truth["label"].to_numpy())
    metas = import_source(project, path, "a")
    assert [m["split"] for m in metas] == ["eval", "val"]
    store = Store(project.predictions)
    ev = store.read("a", Split.EVAL)
    assert ev.image_ids.tolist() == toy.eval["ImageID"].tolist()  # info.csv order
    assert np.array_equal(ev.joint.argmax(1), toy.eval["label"].to_numpy())
    assert set(ev.joint.ravel().tolist()) == {0.0, 1.0} and ev.kind == "hard"
    val = store.read("a", Split.VAL)
    assert len(val) == len(toy.train)
    labels = toy.train.set_index("ImageID")["label"].reindex(val.image_ids).to_numpy()
    assert np.array_equal(val.labels, labels)  # labels from the data folder
    assert metas[0]["origin"]["sha256"] and metas[0]["data"]


def test_rows_are_joined_on_image_id_not_position(project, toy, tmp_path):
    truth = toy.eval.sample(frac=1.0, random_state=0)
    import_source(project, hard_csv(tmp_path / "a.csv", truth, truth["label"].to_numpy()), "a")
    ev = Store(project.predictions).read("a", Split.EVAL)
    assert np.array_equal(ev.joint.argmax(1), toy.eval["label"].to_numpy())


def test_import_proba_and_logits_agree(project, toy, tmp_path):
    proba = teammate_csv(toy.eval, SKILL, seed=0)
    logits = proba.copy()
    cols = [str(k) for k in range(18)]
    logits[cols] = np.log(proba[cols].to_numpy()) + 5.0  # softmax(log p + c) == p
    import_source(project, write_csv(tmp_path / "p.csv", proba), "p")
    import_source(project, write_csv(tmp_path / "l.csv", logits), "l", ImportKind.LOGITS)
    store = Store(project.predictions)
    np.testing.assert_allclose(store.read("p", Split.EVAL).joint, store.read("l", Split.EVAL).joint, atol=1e-6)


def test_import_task_labels_and_task_probabilities(project, toy, tmp_path):
    ages = decode(toy.eval["label"].to_numpy())[Task.AGE]
    path = write_csv(tmp_path / "age.csv", pd.DataFrame({"ImageID": toy.eval["ImageID"], "ans": ages}))
    import_source(project, path, "agehard", task=Task.AGE)
    s = Store(project.predictions).read("agehard", Split.EVAL)
    assert s.tasks == (Task.AGE,) and s.joint is None and np.array_equal(s.probs[Task.AGE].argmax(1), ages)
    probs = teammate_csv(toy.eval, SKILL, seed=1, task=Task.GENDER)
    assert list(probs.columns) == ["ImageID", "0", "1"]
    import_source(project, write_csv(tmp_path / "g.csv", probs), "gprob", task=Task.GENDER)
    assert Store(project.predictions).read("gprob", Split.EVAL).tasks == (Task.GENDER,)


def _eval_frame(toy, **columns):
    return pd.DataFrame({"ImageID": toy.eval["ImageID"].to_numpy(), **columns})


def _proba(toy):
    return teammate_csv(toy.eval, SKILL, seed=0)


def _edit(frame, row, col, value):
    frame = frame.copy()
    frame[col] = frame[col].astype(object)
    frame.loc[row, col] = value
    return frame


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        (lambda t: pd.concat([_eval_frame(t, ans=0), _eval_frame(t, ans=0).iloc[[4]]]), {}, r"row \d+: ImageID .* appears twice"),
        (lambda t: _edit(_proba(t), 5, "3", float("nan")), {}, r"row 7: NaN"),
        (lambda t: _edit(_proba(t), 2, "0", -0.1), {}, r"row 4: negative probability"),
        (lambda t: _edit(_proba(t), 0, "0", 5.0), {}, r"row 2: probabilities sum to .*--kind logits"),
        (lambda t: _edit(_proba(t), 0, "0", "abc"), {}, r"row 2: NaN, infinite or non-numeric"),
        (lambda t: _eval_frame(t, ans=18), {}, r"row 2: ans '18' is not a class in 0..17"),
        (lambda t: _eval_frame(t, ans=-1), {}, r"ans '-1' is not a class"),
        (lambda t: _eval_frame(t, ans=1.5), {}, r"ans '1.5' is not a class"),
        (lambda t: _eval_frame(t, ans=3), {"task": Task.AGE}, r"ans '3' is not a class in 0..2"),
        (lambda t: _eval_frame(t, ans=1), {"kind": ImportKind.TASK}, r"--kind task needs --task"),
        (lambda t: _eval_frame(t, ans=0).iloc[3:], {}, r"3 eval image\(s\) missing"),
        (lambda t: pd.concat([_eval_frame(t, ans=0), pd.DataFrame({"ImageID": ["nope.jpg"], "ans": [0]})]), {}, r"1 ImageID\(s\) are neither in info.csv nor under train/images: 'nope.jpg'"),
        (lambda t: _eval_frame(t, label=0), {}, r"no probability columns; expected ImageID and 18 columns 0..17.*; found ImageID,label\. Name the columns with --columns"),
        (lambda t: _proba(t).assign(extra=1), {}, r"unexpected column\(s\) 'extra'.*--columns"),
        (lambda t: _proba(t).drop(columns="17"), {}, r"no probability columns.*--columns 'c\{\}'"),
        (lambda t: _proba(t), {"columns": "c{}"}, r"--columns names 'c0', 'c1', 'c2'.*, not in the file"),
        (lambda t: _proba(t), {"columns": "0,1,2"}, r"--columns names 3 column\(s\); joint has 18 classes"),
        (lambda t: _proba(t).assign(**{f"p{k}": 0.0 for k in range(18)}), {}, r"several 18-column sets \('', 'p'\)"),
        (lambda t: _eval_frame(t, ans=0), {"columns": "c{}", "kind": ImportKind.HARD}, r"--columns names probability columns; a hard file"),
        (lambda t: pd.DataFrame({"id": ["x"], "ans": [0]}), {}, r"missing column\(s\) ImageID"),
        (lambda t: _eval_frame(t, ans=0).iloc[:0], {}, r"no rows"),
    ],
)
def test_bad_files_are_refused_and_nothing_is_written(project, toy, tmp_path, make, kwargs, match):
    path = write_csv(tmp_path / "bad.csv", make(toy))
    with pytest.raises(EnsError, match=match) as info:
        import_source(project, path, "bad", **kwargs)
    assert "\n" not in str(info.value)
    assert not (project.predictions / "bad").exists()


def test_existing_name_is_refused_unless_forced(project, toy, tmp_path):
    truth = both(toy)
    path = hard_csv(tmp_path / "a.csv", truth, truth["label"].to_numpy())
    import_source(project, path, "a")
    with pytest.raises(EnsError, match="source 'a' exists"):
        import_source(project, path, "a")
    only_eval = hard_csv(tmp_path / "b.csv", toy.eval, toy.eval["label"].to_numpy())
    import_source(project, only_eval, "a", force=True)
    assert Store(project.predictions).splits("a") == [Split.EVAL]  # the old val set is gone


def test_missing_file_and_no_data(tmp_path):
    from ensembler.data.project import load_project

    project = load_project(tmp_path / "model_zoo.yaml")
    with pytest.raises(EnsError, match="no data folder"):
        import_source(project, tmp_path / "x.csv", "x")


def _renamed(frame, rename):
    return frame.rename(columns={str(k): rename(k) for k in range(18)})


@pytest.mark.parametrize(
    "transform, kwargs, says",
    [
        (lambda f: _renamed(f, lambda k: f"ans{k}"), {}, "ans0..ans17 (18 classes)"),
        (lambda f: _renamed(f, lambda k: f"prob_{k}"), {}, "prob_0..prob_17 (18 classes)"),
        (lambda f: _renamed(f, lambda k: f"p{k}"), {}, "p0..p17 (18 classes)"),
        (lambda f: _renamed(f, lambda k: f"c{k}x"), {"columns": "c{}x"}, "c0x..c17x (18 classes)"),
        (lambda f: _renamed(f, lambda k: "abcdefghijklmnopqr"[k]), {"columns": ",".join("abcdefghijklmnopqr")}, "a..r (18 classes)"),
        (lambda f: f[["ImageID", *map(str, range(18))]], {}, "0..17 (18 classes)"),
    ],
)
def test_probability_layouts_teams_write(project, toy, tmp_path, transform, kwargs, says):
    proba = _proba(toy)
    path = write_csv(tmp_path / "p.csv", transform(proba))
    metas = import_source(project, path, "p", **kwargs)
    assert metas[0]["origin"]["columns"] == says
    expected = proba[[str(k) for k in range(18)]].to_numpy()
    np.testing.assert_allclose(Store(project.predictions).read("p", Split.EVAL).joint, expected / expected.sum(1, keepdims=True), atol=1e-6)


def test_an_ans_column_beside_probabilities_is_ignored_and_compared(project, toy, tmp_path):
    proba = _proba(toy)
    cols = [str(k) for k in range(18)]
    ans = proba[cols].to_numpy().argmax(1)
    ans[:10] = (ans[:10] + 1) % 18  # 10 rows where the kept argmax disagrees
    frame = pd.concat([proba[["ImageID"]].assign(ans=ans), _renamed(proba[cols], lambda k: f"ans{k}")], axis=1)
    metas = import_source(project, write_csv(tmp_path / "p.csv", frame), "p")
    share = 10 / len(frame)
    assert metas[0]["origin"]["columns"] == f"ans0..ans17 (18 classes); column ans ignored (differs from the probabilities' argmax on {share:.1%} of rows)"
    assert metas[0]["kind"] == "proba"
    np.testing.assert_array_equal(Store(project.predictions).read("p", Split.EVAL).joint.argmax(1), proba[cols].to_numpy().argmax(1))


def _per_task(toy, tasks, prefix="{task}_"):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"ImageID": toy.eval["ImageID"].to_numpy()})
    expected = {}
    for task in tasks:
        p = rng.dirichlet(np.ones(N_CLASSES[task]), size=len(frame))
        expected[task] = p
        for k in range(N_CLASSES[task]):
            frame[prefix.format(task=task) + str(k)] = p[:, k]
    return frame, expected


@pytest.mark.parametrize("tasks", [tuple(TASKS), (Task.AGE,), (Task.MASK, Task.GENDER)])
def test_per_task_probability_columns(project, toy, tmp_path, tasks):
    frame, expected = _per_task(toy, tasks)
    metas = import_source(project, write_csv(tmp_path / "t.csv", frame), "t")
    assert metas[0]["origin"]["columns"] == ", ".join(f"{t}_0..{t}_{N_CLASSES[t] - 1} ({t})" for t in tasks)
    pset = Store(project.predictions).read("t", Split.EVAL)
    assert pset.tasks == tasks and pset.joint is None
    for task in tasks:
        np.testing.assert_allclose(pset.probs[task], expected[task], atol=1e-6)


def test_per_task_logits_are_softmaxed_per_task(project, toy, tmp_path):
    frame, expected = _per_task(toy, TASKS)
    logits = frame.copy()
    logits.iloc[:, 1:] = np.log(frame.iloc[:, 1:].to_numpy()) + 3.0
    import_source(project, write_csv(tmp_path / "l.csv", logits), "l", ImportKind.LOGITS)
    pset = Store(project.predictions).read("l", Split.EVAL)
    for task in TASKS:
        np.testing.assert_allclose(pset.probs[task], expected[task], atol=1e-5)


def test_a_task_model_file_with_task_prefixed_columns(project, toy, tmp_path):
    frame, expected = _per_task(toy, (Task.AGE,))
    metas = import_source(project, write_csv(tmp_path / "a.csv", frame), "a", task=Task.AGE)
    assert metas[0]["origin"]["columns"] == "age_0..age_2 (age)"
    np.testing.assert_allclose(Store(project.predictions).read("a", Split.EVAL).probs[Task.AGE], expected[Task.AGE], atol=1e-6)
