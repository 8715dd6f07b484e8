import numpy as np
import pytest

from ensembler.data.labels import Task, marginals
from ensembler.data.store import PredictionSet, Split, Store, check_name
from ensembler.errors import EnsError


def _set(n=4, seed=0, labels=True, split=Split.VAL):
    rng = np.random.default_rng(seed)
    joint = rng.dirichlet(np.ones(18), size=n).astype(np.float32)
    return PredictionSet("m", split, [f"p/{i}.jpg" for i in range(n)], joint=joint, labels=np.arange(n) if labels else None, meta={"kind": "proba"})


def test_joint_fills_marginals():
    s = _set()
    assert s.tasks == (Task.MASK, Task.GENDER, Task.AGE)
    np.testing.assert_allclose(s.probs[Task.AGE], marginals(s.joint)[Task.AGE], rtol=1e-6)


def test_write_read_round_trip_is_exact(tmp_path):
    store = Store(tmp_path)
    original = _set(50)
    meta = store.write(original)
    back = store.read("m", Split.VAL)
    assert back.image_ids.tolist() == original.image_ids.tolist()
    assert np.array_equal(back.joint, original.joint)  # %.9g round-trips float32
    for t in original.tasks:
        assert np.array_equal(back.probs[t], original.probs[t])
    assert np.array_equal(back.labels, original.labels)
    assert meta["rows"] == 50 and meta["tasks"] == ["mask", "gender", "age"] and meta["joint"]
    assert store.sources() == ["m"] and store.splits("m") == [Split.VAL]
    assert store.labelled("m") is not None


def test_the_csv_is_loadable_with_pandas_alone(tmp_path):
    import pandas as pd

    Store(tmp_path).write(_set(3))
    frame = pd.read_csv(tmp_path / "m" / "val.csv")
    assert list(frame.columns[:3]) == ["ImageID", "label", "mask_0"]
    assert "joint_17" in frame.columns and "age_2" in frame.columns


def test_a_changed_csv_is_refused(tmp_path):
    store = Store(tmp_path)
    store.write(_set())
    path = tmp_path / "m" / "val.csv"
    path.write_text(path.read_text().replace("p/0.jpg", "p/9.jpg"))
    with pytest.raises(EnsError, match="does not match val.json"):
        store.read("m", Split.VAL)


def test_no_silent_overwrite(tmp_path):
    store = Store(tmp_path)
    store.write(_set())
    with pytest.raises(EnsError, match="already has val predictions"):
        store.write(_set(seed=1))
    store.write(_set(seed=1), overwrite=True)


def test_take_reorders_and_names_missing_ids():
    s = _set(4)
    t = s.take(np.array(["p/2.jpg", "p/0.jpg"], dtype=object))
    assert t.labels.tolist() == [2, 0]
    np.testing.assert_array_equal(t.joint[0], s.joint[2])
    with pytest.raises(EnsError, match="lacks 1 image.*p/7.jpg"):
        s.take(np.array(["p/7.jpg"], dtype=object))


def test_require_suggests_close_names(tmp_path):
    store = Store(tmp_path)
    store.write(_set(split=Split.EVAL, labels=False))
    with pytest.raises(EnsError, match="unknown source 'n'"):
        store.require("n", Split.EVAL)
    with pytest.raises(EnsError, match="has no val predictions \\(it has: eval\\)"):
        store.require("m", Split.VAL)


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a*2", "x:y", "a,b", ".hidden", "a/b"])
def test_names_usable_in_recipes_only(name):
    with pytest.raises(EnsError, match="invalid name"):
        check_name(name)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="age probabilities must be"):
        PredictionSet("m", Split.EVAL, ["a"], {Task.AGE: np.ones((1, 2))})


def test_written_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    import os

    from ensembler.data.io import write_bytes

    old = os.umask(0o022)
    try:
        write_bytes(tmp_path / "f.csv", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.csv").stat().st_mode & 0o777 == 0o644
