import hashlib

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
    first, second = _set(), _set(seed=1)
    store.write(first)
    csv_before = (tmp_path / "m" / "val.csv").read_bytes()
    with pytest.raises(EnsError, match="already has val predictions"):
        store.write(second)
    assert (tmp_path / "m" / "val.csv").read_bytes() == csv_before  # the refused write left the set as it was
    assert np.array_equal(store.read("m", Split.VAL).joint, first.joint)
    meta = store.write(second, overwrite=True)
    assert np.array_equal(Store(tmp_path).read("m", Split.VAL).joint, second.joint)  # the new set, not the old sidecar
    assert meta["csv_sha256"] == hashlib.sha256((tmp_path / "m" / "val.csv").read_bytes()).hexdigest() == store.read_meta("m", Split.VAL)["csv_sha256"]
    assert not np.array_equal(first.joint, second.joint)


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


def test_the_csv_alone_round_trips_float32_exactly(tmp_path):
    """Without the sidecar, the CSV (nine-digit decimals, parsed by pandas) gives back every float32."""
    rng = np.random.default_rng(3)
    joint = rng.dirichlet(np.full(18, 0.2), size=400).astype(np.float32)
    joint[0, :3] = [0.0, 1.0, np.float32(1e-30)]  # zero, one, and tiny values keep their digits too
    joint[1, :2] = [np.nextafter(np.float32(1), np.float32(0)), np.float32(1.4e-45)]  # the largest below 1, a subnormal
    store = Store(tmp_path)
    store.write(PredictionSet("m", Split.EVAL, [f"{i}.jpg" for i in range(400)], joint=joint, meta={"kind": "proba"}))
    (tmp_path / "m" / "eval.npz").unlink()
    back = store.read("m", Split.EVAL)
    assert np.array_equal(back.joint, joint)
    assert (tmp_path / "m" / "eval.npz").is_file()  # rebuilt by the read


def test_format_float32_reads_back_exactly_over_random_bit_patterns():
    import pandas as pd

    from ensembler.data.io import format_float32

    bits = np.random.default_rng(0).integers(0, 0x3F800001, size=200_000, dtype=np.uint32)  # every float32 in [0, 1]
    values = bits.view(np.float32)
    text = format_float32(values).view("S14").ravel()
    parsed = pd.read_csv(__import__("io").BytesIO(b"v\n" + b"\n".join(text)), dtype={"v": np.float64})["v"].to_numpy()
    assert np.array_equal(parsed.astype(np.float32), values)
    assert text[np.argmax(values == values.max())].startswith(b"9.99") or values.max() == 1


def test_the_sidecar_serves_reads_only_while_it_matches_the_csv(tmp_path):
    store = Store(tmp_path)
    store.write(_set(20))
    sidecar = tmp_path / "m" / "val.npz"
    assert sidecar.is_file()
    sidecar.write_bytes(b"not an npz")  # unreadable: the CSV decides, and the sidecar is rebuilt
    assert np.array_equal(store.read("m", Split.VAL).joint, _set(20).joint)
    assert np.load(sidecar)["joint"].shape == (20, 18)
    store.write(_set(20, seed=5), overwrite=True)  # a replaced set: its own sidecar
    assert np.array_equal(store.read("m", Split.VAL).joint, _set(20, seed=5).joint)
    csv = tmp_path / "m" / "val.csv"
    csv.write_bytes(csv.read_bytes().replace(b"p/1.jpg", b"p/7.jpg"))  # a hand edit: the stamp differs
    with pytest.raises(EnsError, match="does not match val.json"):
        store.read("m", Split.VAL)


def test_ids_that_need_quoting_go_through_pandas(tmp_path):
    store = Store(tmp_path)
    joint = np.full((2, 18), 1 / 18, dtype=np.float32)
    store.write(PredictionSet("q", Split.EVAL, ["a,b.jpg", 'say "hi".jpg'], joint=joint, meta={"kind": "proba"}))
    (tmp_path / "q" / "eval.npz").unlink()
    assert store.read("q", Split.EVAL).image_ids.tolist() == ["a,b.jpg", 'say "hi".jpg']
