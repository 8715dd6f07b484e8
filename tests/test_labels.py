import numpy as np
import pytest

from ensembler.data.labels import (
    N_CLASSES,
    N_JOINT,
    TASKS,
    Task,
    age_band,
    decode,
    encode,
    joint_from_tasks,
    marginals,
    one_hot,
    parse_task,
)
from ensembler.errors import EnsError


def test_encode_decode_round_trip_over_all_18_classes():
    classes = np.arange(N_JOINT)
    parts = decode(classes)
    assert np.array_equal(encode(parts[Task.MASK], parts[Task.GENDER], parts[Task.AGE]), classes)


@pytest.mark.parametrize(
    "mask, gender, age, expected",
    [(0, 0, 0, 0), (0, 1, 2, 5), (1, 0, 0, 6), (1, 1, 1, 10), (2, 0, 2, 14), (2, 1, 2, 17)],
)
def test_encode_matches_the_competition_formula(mask, gender, age, expected):
    assert encode([mask], [gender], [age])[0] == expected == 6 * mask + 3 * gender + age


@pytest.mark.parametrize("mask, gender, age", [(3, 0, 0), (0, 2, 0), (0, 0, 3), (-1, 0, 0)])
def test_encode_rejects_out_of_range(mask, gender, age):
    with pytest.raises(EnsError, match="classes must lie in"):
        encode([mask], [gender], [age])


def test_decode_rejects_out_of_range():
    with pytest.raises(EnsError, match="0..17"):
        decode([18])


def test_age_band_boundaries():
    assert age_band(np.array([18, 29, 30, 59, 60, 75])).tolist() == [0, 0, 1, 1, 2, 2]


def test_marginals_hand_computed():
    joint = np.zeros((1, 18))
    joint[0, encode([1], [1], [2])[0]] = 0.75  # incorrect, female, 60+
    joint[0, encode([0], [1], [0])[0]] = 0.25  # wear, female, <30
    m = marginals(joint)
    assert m[Task.MASK].tolist() == [[0.25, 0.75, 0.0]]
    assert m[Task.GENDER].tolist() == [[0.0, 1.0]]
    assert m[Task.AGE].tolist() == [[0.25, 0.0, 0.75]]


def test_joint_from_tasks_is_the_product_and_its_marginals_give_back_the_tasks():
    rng = np.random.default_rng(0)
    probs = {t: rng.dirichlet(np.ones(k), size=5) for t, k in zip(TASKS, (3, 2, 3))}
    joint = joint_from_tasks(probs)
    assert joint.shape == (5, 18)
    assert joint[2, encode([2], [0], [1])[0]] == pytest.approx(probs[Task.MASK][2, 2] * probs[Task.GENDER][2, 0] * probs[Task.AGE][2, 1])
    for task, p in marginals(joint).items():
        np.testing.assert_allclose(p, probs[task], atol=1e-12)


def test_joint_from_tasks_needs_all_tasks():
    with pytest.raises(EnsError, match="missing: gender, age"):
        joint_from_tasks({Task.MASK: np.ones((1, 3)) / 3})


def test_parse_task_suggests_close_names():
    assert parse_task(" Age ") is Task.AGE
    with pytest.raises(EnsError, match="did you mean: gender"):
        parse_task("gendr")


def test_one_hot():
    assert one_hot(np.array([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]


# --- the label space of any competition (issue 24) -------------------------------------------------


def test_the_mask_space_is_the_compiled_in_scheme_bit_for_bit():
    from ensembler.data.competition import MASK
    from ensembler.data.labels import MASK_SPACE

    assert MASK.space is MASK_SPACE and MASK_SPACE.n_joint == N_JOINT and MASK_SPACE.shape == (3, 2, 3)
    joint = np.arange(N_JOINT)
    parts = decode(joint)
    assert np.array_equal(encode(parts[Task.MASK], parts[Task.GENDER], parts[Task.AGE]), joint)
    assert np.array_equal(joint, 6 * parts[Task.MASK] + 3 * parts[Task.GENDER] + parts[Task.AGE])
    rng = np.random.default_rng(3)
    probs = {t: rng.dirichlet(np.ones(N_CLASSES[t]), 50) for t in TASKS}
    reference = np.einsum("ni,nj,nk->nijk", *(probs[t] for t in TASKS)).reshape(50, N_JOINT)
    assert np.array_equal(joint_from_tasks(probs), reference)


@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 3, 4, 2)])
def test_any_label_space_round_trips_and_its_marginals_sum_the_others(shape):
    from ensembler.data.labels import LabelSpace

    tasks = tuple(f"t{i}" for i in range(len(shape)))
    space = LabelSpace(tasks, {t: tuple(f"c{j}" for j in range(k)) for t, k in zip(tasks, shape)})
    joint = np.arange(space.n_joint)
    parts = space.decode(joint)
    assert np.array_equal(space.encode(*(parts[t] for t in tasks)), joint)  # C order: the last task moves fastest
    assert np.array_equal(np.stack([parts[t] for t in tasks], axis=1), np.array(np.unravel_index(joint, shape)).T)
    rng = np.random.default_rng(0)
    probs = {t: rng.dirichlet(np.ones(k), 20) for t, k in zip(tasks, shape)}
    product = space.joint_from_tasks(probs)
    assert product.shape == (20, space.n_joint) and np.allclose(product.sum(axis=1), 1)
    back = space.marginals(product)
    assert all(np.allclose(back[t], probs[t]) for t in tasks)
    table = rng.dirichlet(np.ones(space.n_joint), 20)
    sums = table.reshape(20, *shape)
    for i, t in enumerate(tasks):
        others = tuple(a + 1 for a in range(len(shape)) if a != i)
        assert np.allclose(space.marginals(table)[t], sums.sum(axis=others))
    with pytest.raises(EnsError, match=rf"joint classes must lie in 0..{space.n_joint - 1}"):
        space.decode(np.array([space.n_joint]))
    with pytest.raises(EnsError, match=rf"{tasks[0]} classes must lie in 0..{shape[0] - 1}"):
        space.encode(*(np.array([k]) for k in shape))


def test_the_product_of_mixed_dtypes_is_einsums_bit_for_bit():
    rng = np.random.default_rng(4)
    probs = {Task.MASK: rng.dirichlet(np.ones(3), 40).astype(np.float32), Task.GENDER: rng.dirichlet(np.ones(2), 40), Task.AGE: rng.dirichlet(np.ones(3), 40).astype(np.float32)}
    reference = np.einsum("ni,nj,nk->nijk", *(probs[t] for t in TASKS)).reshape(40, N_JOINT)
    assert joint_from_tasks(probs).dtype == reference.dtype and np.array_equal(joint_from_tasks(probs), reference)
