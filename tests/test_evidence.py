"""Person-bootstrap intervals (ensembler.scoring.evidence) against slow, obvious loops."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from ensembler.data.people import person_codes
from ensembler.scoring.evidence import bootstrap, f1_replicates, person_draws


def _case(n_people=40, rows=3, seed=0, per_person=7):
    rng = np.random.default_rng(seed)
    persons = np.repeat(np.arange(n_people), per_person)
    labels = rng.integers(0, 18, len(persons))
    skill = np.linspace(0.4, 0.8, rows)[:, None]
    predictions = np.where(rng.random((rows, len(persons))) < skill, labels, rng.integers(0, 18, (rows, len(persons))))
    return labels, predictions, persons


def test_replicates_equal_a_slow_loop_over_the_same_people():
    labels, predictions, persons = _case()
    draws = person_draws(40, 25, seed=3)
    fast = f1_replicates(labels, predictions, persons, draws)
    for r in range(25):
        drawn = np.repeat(np.arange(40), draws[r])  # each drawn person, as often as drawn
        images = np.concatenate([np.flatnonzero(persons == p) for p in drawn])
        for k in range(len(predictions)):
            slow = f1_score(labels[images], predictions[k][images], labels=range(18), average="macro", zero_division=0)
            assert fast[r, k] == pytest.approx(slow, abs=1e-12)


def test_draws_are_of_people_with_replacement():
    draws = person_draws(30, 200, seed=1)
    assert draws.shape == (200, 30) and (draws.sum(axis=1) == 30).all()  # 30 people drawn per replicate
    assert (draws == 0).any() and (draws >= 2).any()  # some left out, some drawn twice
    assert abs(draws.mean() - 1.0) < 1e-12


def test_matches_rng_choice_of_people_in_distribution():
    """The obvious implementation (numpy's Generator.choice of people) gives the same interval,
    within the Monte Carlo error of 2,000 replicates."""
    labels, predictions, persons = _case(n_people=60, rows=1, seed=2)
    found = bootstrap(labels, predictions, persons, replicates=2000, seed=0)
    rng = np.random.default_rng(7)
    slow = []
    for _ in range(2000):
        drawn = rng.choice(60, 60, replace=True)
        images = np.concatenate([np.flatnonzero(persons == p) for p in drawn])
        slow.append(f1_score(labels[images], predictions[0][images], labels=range(18), average="macro", zero_division=0))
    low, high = np.percentile(slow, [5, 95])
    assert found.low[0] == pytest.approx(low, abs=0.012) and found.high[0] == pytest.approx(high, abs=0.012)


def test_resampling_is_by_person_not_by_image():
    """When each person's 7 images are all right or all wrong, the errors are not independent:
    the person bootstrap's interval is about sqrt(7) times wider than an image bootstrap's (which
    is what the same code gives when every image is its own person)."""
    rng = np.random.default_rng(4)
    persons = np.repeat(np.arange(200), 7)
    labels = np.repeat(rng.integers(0, 18, 200), 7)
    right = np.repeat(rng.random(200) < 0.6, 7)
    predictions = np.where(right, labels, (labels + 1) % 18)[None, :]
    by_person = bootstrap(labels, predictions, persons, replicates=1000)
    by_image = bootstrap(labels, predictions, np.arange(len(labels)), replicates=1000)
    ratio = (by_person.high - by_person.low)[0] / (by_image.high - by_image.low)[0]
    assert 2.0 < ratio < 3.5  # sqrt(7) = 2.65
    assert by_person.people == 200 and by_image.people == 1400


def test_paired_gain_is_tighter_than_two_intervals_and_says_how_often_it_wins():
    labels, _, persons = _case(n_people=100, rows=1, seed=5)
    rng = np.random.default_rng(5)
    base = np.where(rng.random(len(labels)) < 0.6, labels, rng.integers(0, 18, len(labels)))
    better = np.where(rng.random(len(labels)) < 0.15, labels, base)  # the base, with some errors fixed
    same = base.copy()
    found = bootstrap(labels, np.stack([base, better, same]), persons, reference=0, replicates=500)
    assert found.positive[1] > 0.95 and found.gain_low[1] > 0  # a real gain: outside the noise
    assert found.gain_low[2] == found.gain_high[2] == 0 and found.positive[2] == 0  # a copy gains nothing
    assert found.noise(2) and not found.noise(1)
    assert (found.gain_high[1] - found.gain_low[1]) < (found.high[1] - found.low[1])  # pairing removes the people's shared luck


def test_person_codes_group_a_persons_images():
    ids = np.array(["000001_female_Asian_45/mask1.jpg", "000002_male_Asian_20/normal.jpg", "000001_female_Asian_45/normal.jpg", "000001-1_female_Asian_45/mask2.jpg"], dtype=object)
    codes = person_codes(ids)
    assert codes[0] == codes[2] == codes[3] != codes[1]


def test_image_weights_match_weighted_macro_f1_on_the_drawn_people():
    """With image weights (a labelled set re-weighted to another mix), each replicate equals
    metrics.macro_f1 with the weights times the person's draw count."""
    from ensembler.scoring.metrics import macro_f1

    labels, predictions, persons = _case(n_people=30, rows=2, seed=8)
    weights = np.random.default_rng(8).uniform(0.2, 3.0, len(labels))
    draws = person_draws(30, 15, seed=2)
    fast = f1_replicates(labels, predictions, persons, draws, weights=weights)
    for r in range(15):
        for k in range(2):
            assert fast[r, k] == pytest.approx(macro_f1(labels, predictions[k], 18, weights * draws[r][persons]), abs=1e-12)


def test_pick_two_never_picks_a_row_that_decides_as_the_first():
    """An exact copy of the best row (auto that kept the soft vote) is within the noise and its
    errors correlate 1.0 with the first's: it hedges nothing and is skipped for the runner-up."""
    from ensembler.scoring.evidence import pick_two

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 18, 140)
    persons = np.repeat(np.arange(20), 7)
    best = np.where(rng.random(140) < 0.8, labels, rng.integers(0, 18, 140))
    other = np.where(rng.random(140) < 0.5, labels, rng.integers(0, 18, 140))
    pick = pick_two(labels, np.stack([best, best.copy(), other]), persons, replicates=200)
    assert pick.first == 0 and pick.copies == (1,) and pick.second == 2
    alone = pick_two(labels, np.stack([best, best.copy()]), persons, replicates=200)
    assert alone.second is None and alone.copies == (1,)
