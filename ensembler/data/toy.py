"""A toy competition in the real layout, and toy teammates' CSVs: the core's own example.

`make_toy_competition` writes ``train/train.csv``, ``train/images/<profile>/`` (seven files per
person, mixed .jpg/.jpeg/.png, some ids with a ``-1`` suffix, a dot-folder to skip) and
``eval/info.csv`` + ``eval/images/``, with the competition's imbalance and an eval set shifted
towards older people. With ``image_size`` it draws faces (`draw_face`) whose mask state, gender
and age are visible but not trivial, a person's seven photos sharing one look (`person_look`:
background, place, face, hair, skin; each photo varied a little), as the real ones do; without it the files are empty placeholders, enough for
composing and scoring, which never decode an image. The eval answers go to ``answers.csv``
beside the data folder, which `ens` never reads.

`teammate_csv` simulates what a teammate shares: per-task scores with a given skill (the
margin of the true class's logit over noise), as probabilities or as a hard-label submission.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import EVAL_CSV, EVAL_IMAGES, TRAIN_CSV, TRAIN_IMAGES
from .labels import MASK_STEMS, N_CLASSES, TASKS, Task, decode, encode, joint_from_tasks

# The real train set: 1,042 male / 1,658 female; ages 1,281 / 1,227 / 192.
TRAIN_GENDER = np.array([1042, 1658]) / 2700
TRAIN_AGE = np.array([1281, 1227, 192]) / 2700
EVAL_AGE = np.array([0.40, 0.40, 0.20])  # teams found the hidden test set older than train
AGE_RANGES = ((18, 30), (30, 60), (60, 61))  # the real data's oldest band is all 60


@dataclass(frozen=True)
class ToyCompetition:
    """Where the toy data lies, and its truth: ``train`` (ImageID, label), ``eval`` (ImageID,
    label, person: the eval person's index, which the hashed names hide)."""

    data: Path
    answers: Path
    train: pd.DataFrame
    eval: pd.DataFrame


def _people(rng: np.random.Generator, n: int, age_mix: np.ndarray) -> pd.DataFrame:
    gender = rng.choice(2, size=n, p=TRAIN_GENDER)
    age = rng.choice(3, size=n, p=age_mix)
    years = np.array([rng.integers(*AGE_RANGES[a]) for a in age])
    return pd.DataFrame({"gender": gender, "age": age, "years": years})


@dataclass(frozen=True)
class Look:
    """What one person's seven photos share (background, place in the frame, face shape, hair,
    skin): drawn once per person (`person_look`); each photo varies it a little."""

    top: np.ndarray
    bottom: np.ndarray
    dx: float
    dy: float
    width: float
    height: float
    grey: float
    hair: np.ndarray
    long_hair: bool
    skin: np.ndarray
    hair_length: float


HAIRS = np.array([[30, 20, 15], [70, 45, 25], [20, 20, 20], [110, 80, 40]])
SKINS = np.array([[235, 200, 170], [210, 170, 135], [175, 130, 95], [120, 85, 60]])


def person_look(rng: np.random.Generator, gender: int, years: int) -> Look:
    """One person's look (see `Look`)."""
    return Look(
        rng.integers(40, 220, size=3).astype(float), rng.integers(40, 220, size=3).astype(float),
        float(rng.normal(0, 18)), float(rng.normal(0, 18)), float(rng.uniform(0.9, 1.1)), float(rng.uniform(0.9, 1.1)),
        float(np.clip((years - 18) / 55 + rng.normal(0, 0.12), 0, 1)), HAIRS[rng.integers(len(HAIRS))].astype(float),
        bool(rng.random() < (0.92 if gender == 1 else 0.08)), SKINS[rng.integers(len(SKINS))] + rng.normal(0, 8, 3), float(rng.uniform(0.9, 1.5)),
    )  # fmt: skip


def draw_face(rng: np.random.Generator, mask: int, gender: int, years: int, size: tuple[int, int], look: Look | None = None):
    """A PIL image (width x height = `size`) of a face-like figure.

    Cues, each with noise so that no single pixel gives the label away: the mask (wear: over
    nose and mouth; incorrect: below the nose, or on the chin; not wear: none) in a random
    colour; gender by hair length (long for most women, short for most men) and a little by
    face width; age by the greyness of the hair and the number of lines on the forehead, both
    growing with the age in years, so that 29 and 31 look alike, as in the real data.

    look: the person's (`person_look`): the photo keeps its background, place, face, hair and
    skin, varied a little (light, a small shift); without one, every photo is drawn afresh. The
    random draws are the same either way (the per-photo ones become the small variations), so a
    competition's labels do not depend on it.
    """
    from PIL import Image, ImageDraw, ImageFilter

    w, h = size
    s = min(w / 384, h / 512)
    top, bottom = rng.integers(40, 220, size=3), rng.integers(40, 220, size=3)
    light = 1.0
    if look is not None:  # this photo's light and small shift of the person's background
        light = 1 + (top.mean() - 130) / 900
        top, bottom = look.top * light + (top - 130) * 0.06, look.bottom * light + (bottom - 130) * 0.06
    ramp = np.linspace(0, 1, h)[:, None, None]
    pixels = (1 - ramp) * top + ramp * bottom + rng.normal(0, 12, size=(h, w, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    jitter = (0.25, 0.25) if look is not None else (1.0, 1.0)
    cx = w / 2 + rng.normal(0, 18 * s) * jitter[0] + (look.dx * s if look is not None else 0)
    cy = h * 0.47 + rng.normal(0, 18 * s) * jitter[1] + (look.dy * s if look is not None else 0)
    width_factor, height_factor = rng.uniform(0.9, 1.1), rng.uniform(0.9, 1.1)
    if look is not None:
        width_factor, height_factor = look.width + (width_factor - 1) * 0.1, look.height + (height_factor - 1) * 0.1
    fw = (108 if gender == 0 else 92) * s * width_factor
    fh = 140 * s * height_factor
    grey = np.clip((years - 18) / 55 + rng.normal(0, 0.12), 0, 1)
    base = rng.choice(HAIRS)
    long_hair = rng.random() < (0.92 if gender == 1 else 0.08)
    length = rng.uniform(0.9, 1.5) if long_hair else 0.0  # drawn as before looks existed: the same stream either way
    skin_base = rng.choice(SKINS) + rng.normal(0, 8, 3)
    if look is not None:
        grey, base, long_hair, length, skin_base = look.grey, look.hair * light, look.long_hair, look.hair_length, look.skin * light
    hair = tuple(int(v) for v in (1 - grey) * base + grey * np.array([215, 215, 215]))
    if long_hair:
        draw.rectangle([cx - fw * 1.15, cy - fh * 0.6, cx + fw * 1.15, cy + fh * length], fill=hair)
    skin = tuple(int(v) for v in skin_base)
    draw.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    draw.chord([cx - fw * 1.05, cy - fh * 1.12, cx + fw * 1.05, cy - fh * 0.05], 180, 360, fill=hair)
    for i in range(int(np.clip(rng.poisson(max(years - 25, 0) / 9), 0, 6))):
        y = cy - fh * 0.42 + i * 7 * s
        draw.line([cx - fw * 0.5, y, cx + fw * 0.5, y + rng.normal(0, 2 * s)], fill=tuple(int(v * 0.7) for v in skin), width=max(1, int(2 * s)))
    eye_y, eye_dx = cy - fh * 0.12, fw * 0.4
    for ex in (cx - eye_dx, cx + eye_dx):
        draw.ellipse([ex - 9 * s, eye_y - 6 * s, ex + 9 * s, eye_y + 6 * s], fill=(40, 30, 30))
    nose_y, mouth_y = cy + fh * 0.18, cy + fh * 0.5
    draw.polygon([(cx, nose_y - 25 * s), (cx - 12 * s, nose_y + 8 * s), (cx + 12 * s, nose_y + 8 * s)], fill=tuple(int(v * 0.85) for v in skin))
    draw.line([cx - 28 * s, mouth_y, cx + 28 * s, mouth_y], fill=(150, 60, 60), width=max(1, int(5 * s)))
    colour = tuple(int(v) for v in rng.choice([[240, 240, 240], [120, 170, 230], [40, 40, 45], [230, 150, 170], [110, 140, 110]]) + rng.normal(0, 10, 3))
    if mask == 0:  # worn: from the bridge of the nose to the chin
        box = [cx - fw * 0.95, nose_y - 30 * s, cx + fw * 0.95, cy + fh * 0.93]
    elif mask == 1:  # incorrect: nose out, or down on the chin
        low = rng.random() < 0.5
        box = [cx - fw * 0.9, (mouth_y + 6 * s) if low else (nose_y + 12 * s), cx + fw * 0.9, cy + fh * (1.0 if low else 0.93)]
    if mask in (0, 1):
        draw.rounded_rectangle(box, radius=int(18 * s), fill=colour)
        draw.line([box[0], box[1] + 8 * s, box[0] - 20 * s, eye_y], fill=colour, width=max(1, int(3 * s)))
        draw.line([box[2], box[1] + 8 * s, box[2] + 20 * s, eye_y], fill=colour, width=max(1, int(3 * s)))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2) * s * 2))


def _write_image(path: Path, rng: np.random.Generator, mask: int, gender: int, years: int, size: tuple[int, int] | None, look: Look | None = None) -> None:
    if size is None:
        path.touch()
        return
    image = draw_face(rng, mask, gender, years, size, look)
    image.save(path, format="PNG" if path.suffix == ".png" else "JPEG", quality=90, compress_level=1)  # PNG: the fastest deflate (the pixels are the same)


def make_toy_competition(
    root: Path,
    n_people: int = 300,
    n_eval_people: int = 200,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
) -> ToyCompetition:
    """Write a toy competition under ``root/data`` (see the module doc); returns its truth.

    image_size: width x height of drawn faces (the real data is 384 x 512); None writes empty
    placeholder files.
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    data = root / "data"
    people = _people(rng, n_people, TRAIN_AGE)
    people["id"] = [f"{i + 1:06d}" + ("-1" if i % 37 == 36 else "") for i in range(n_people)]
    people["profile"] = [
        f"{p.id}_{('male', 'female')[p.gender]}_Asian_{p.years}" for p in people.itertuples()
    ]
    images = data / TRAIN_IMAGES
    (images / ".ipynb_checkpoints").mkdir(parents=True, exist_ok=True)
    looks = np.random.default_rng([seed, 7])  # apart from `rng`: the labels do not depend on the looks
    train_rows = []
    for p in people.itertuples():
        (images / p.profile).mkdir()
        look = person_look(looks, p.gender, p.years) if image_size is not None else None
        for stem, mask in MASK_STEMS.items():
            name = f"{stem}{rng.choice(['.jpg', '.jpeg', '.png'], p=[0.8, 0.1, 0.1])}"
            _write_image(images / p.profile / name, rng, mask, p.gender, p.years, image_size, look)
            train_rows.append((f"{p.profile}/{name}", int(encode(mask, p.gender, p.age))))
    pd.DataFrame(
        {"id": people["id"], "gender": np.where(people["gender"] == 1, "female", "male"),
         "race": "Asian", "age": people["years"], "path": people["profile"]}
    ).to_csv(data / TRAIN_CSV, index=False)

    eval_people = _people(rng, n_eval_people, EVAL_AGE)
    (data / EVAL_IMAGES).mkdir(parents=True)
    eval_rows = []
    for person, p in enumerate(eval_people.itertuples()):
        look = person_look(looks, p.gender, p.years) if image_size is not None else None
        for mask in MASK_STEMS.values():
            image_id = f"{rng.integers(1 << 62):016x}{rng.integers(1 << 62):016x}.jpg"
            _write_image(data / EVAL_IMAGES / image_id, rng, mask, p.gender, p.years, image_size, look)
            eval_rows.append((image_id, int(encode(mask, p.gender, p.age)), person))
    order = rng.permutation(len(eval_rows))
    truth_eval = pd.DataFrame(eval_rows, columns=["ImageID", "label", "person"]).iloc[order].reset_index(drop=True)
    truth_eval[["ImageID"]].assign(ans=0).to_csv(data / EVAL_CSV, index=False)
    answers = root / "answers.csv"
    truth_eval[["ImageID", "label"]].rename(columns={"label": "ans"}).to_csv(answers, index=False)
    truth_train = pd.DataFrame(train_rows, columns=["ImageID", "label"])
    return ToyCompetition(data, answers, truth_train, truth_eval)


def teammate_csv(
    truth: pd.DataFrame,
    skill: Mapping[Task, float],
    seed: int,
    hard: bool = False,
    task: Task | None = None,
) -> pd.DataFrame:
    """A teammate's predictions for the images of `truth` (ImageID, label).

    skill: per task, the logit margin given to the true class before unit Gaussian noise
    (0 is chance, 3 is good). Returns ``ImageID,0..17`` probabilities, ``ImageID,ans`` with
    ``hard``, or with `task` only that task (``ImageID,0..k-1`` or ``ImageID,ans``).
    """
    rng = np.random.default_rng(seed)
    true = decode(truth["label"].to_numpy())
    probs = {}
    for t in TASKS:
        logits = rng.normal(size=(len(truth), N_CLASSES[t]))
        logits[np.arange(len(truth)), true[t]] += skill[t]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs[t] = e / e.sum(axis=1, keepdims=True)
    table = probs[task] if task is not None else joint_from_tasks(probs)
    frame = pd.DataFrame({"ImageID": truth["ImageID"].to_numpy()})
    if hard:
        return frame.assign(ans=table.argmax(axis=1))
    return pd.concat([frame, pd.DataFrame(table, columns=[str(k) for k in range(table.shape[1])])], axis=1)


# --- a second, declared competition: leaves with one disease per plant (issue 24) ----------------

LEAF_CLASSES = ("healthy", "rust", "spot", "blight")
LEAF_MIX = np.array([0.4, 0.25, 0.2, 0.15])  # leaf-disease sets are skewed towards a few classes
LEAVES = {  # the `competition:` section of the leaves demo's model_zoo.yaml
    "name": "leaves",
    "tasks": {"label": list(LEAF_CLASSES)},
    "metric": "accuracy",
    "train": {"csv": "train.csv", "id": "image_id", "images": "train_images", "labels": {"label": "label"}, "group": "plant"},
    "eval": {"csv": "sample_submission.csv", "id": "image_id", "images": "test_images"},
    "submission": {"answer": "label", "as": "name"},
}


def draw_leaf(rng: np.random.Generator, disease: int, size: tuple[int, int], look: np.ndarray):
    """A PIL image (width x height = `size`) of a leaf with `disease` (`LEAF_CLASSES`): rust as
    many small orange dots, spot as a few brown rings, blight as a dry patch from the leaf's
    edge, each faint on some photos. look: the plant's ``(8,)`` numbers (background and leaf
    colour, leaf size and angle), varied a little per photo, as a plant's photos are."""
    from PIL import Image, ImageDraw, ImageFilter

    w, h = size
    jitter = lambda scale: rng.normal(0, scale)  # noqa: E731
    background = tuple(int(np.clip(v + jitter(8), 0, 255)) for v in look[:3])
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    green = tuple(int(np.clip(v + jitter(10), 0, 255)) for v in look[3:6])
    cx, cy = w / 2 + jitter(w * 0.04), h / 2 + jitter(h * 0.04)
    rx, ry = w * look[6] * 0.4, h * look[6] * 0.42
    angle = look[7] + jitter(0.2)
    t = np.linspace(0, 2 * np.pi, 40)
    px, py = rx * np.cos(t) * np.abs(np.sin(t / 2)) ** 0.3, ry * np.sin(t)
    outline = [(cx + x * np.cos(angle) - y * np.sin(angle), cy + x * np.sin(angle) + y * np.cos(angle)) for x, y in zip(px, py)]
    draw.polygon(outline, fill=green)
    draw.line([outline[10], outline[30]], fill=tuple(min(255, c + 40) for c in green), width=max(1, w // 64))
    strength = rng.uniform(0.4, 1.0)  # some photos show the disease faintly
    inside = lambda: (cx + rng.uniform(-0.5, 0.5) * rx, cy + rng.uniform(-0.6, 0.6) * ry)  # noqa: E731
    mix = lambda colour: tuple(int(g + strength * (c - g)) for g, c in zip(green, colour))  # noqa: E731
    if disease == 1:  # rust
        for _ in range(rng.integers(15, 40)):
            x, y = inside()
            r = w * rng.uniform(0.008, 0.02)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=mix((205, 120, 40)))
    elif disease == 2:  # spot
        for _ in range(rng.integers(3, 8)):
            x, y = inside()
            r = w * rng.uniform(0.03, 0.06)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=mix((90, 60, 30)), outline=mix((200, 190, 60)), width=max(1, w // 80))
    elif disease == 3:  # blight
        start = int(rng.integers(0, 40))
        patch = [outline[(start + i) % 40] for i in range(rng.integers(8, 14))]
        draw.polygon([*patch, (cx, cy)], fill=mix((150, 120, 70)))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.0) * w / 192))


def make_toy_leaves(root: Path, n_plants: int = 200, per_plant: int = 3, n_eval: int = 600, seed: int = 0, image_size: tuple[int, int] | None = (128, 128)) -> ToyCompetition:
    """Write a leaf-disease competition under ``root/data`` in a cassava-like layout, the one the
    `LEAVES` declaration reads: ``train.csv`` (``image_id,label,plant``: class names, `per_plant`
    photos of each of `n_plants` plants, one disease per plant), ``train_images/``,
    ``test_images/`` and ``sample_submission.csv`` (``image_id,label``); the eval answers go to
    ``answers.csv`` beside the data folder. None for `image_size` writes empty placeholders."""
    from PIL import Image  # noqa: F401  (drawing needs Pillow, which torchvision brings)

    rng = np.random.default_rng(seed)
    looks = np.random.default_rng([seed, 11])
    data = Path(root) / "data"
    for folder in ("train_images", "test_images"):
        (data / folder).mkdir(parents=True, exist_ok=True)

    def plant_look() -> np.ndarray:
        soil = looks.uniform(60, 160, 3) * np.array([1.0, 0.85, 0.6])
        leaf = np.array([looks.uniform(40, 90), looks.uniform(120, 190), looks.uniform(30, 80)])
        return np.concatenate([soil, leaf, [looks.uniform(0.75, 1.0), looks.uniform(-0.6, 0.6)]])

    def write(path: Path, disease: int, look: np.ndarray) -> None:
        if image_size is None:
            path.touch()
        else:
            draw_leaf(rng, disease, image_size, look).save(path, format="JPEG", quality=90)

    train_rows = []
    for plant in range(n_plants):
        disease, look = int(rng.choice(len(LEAF_CLASSES), p=LEAF_MIX)), plant_look()
        for _ in range(per_plant):
            image_id = f"{rng.integers(1 << 40):012x}.jpg"
            write(data / "train_images" / image_id, disease, look)
            train_rows.append((image_id, disease, f"plant{plant:04d}"))
    train = pd.DataFrame(train_rows, columns=["ImageID", "label", "plant"])
    pd.DataFrame({"image_id": train["ImageID"], "label": [LEAF_CLASSES[c] for c in train["label"]], "plant": train["plant"]}).to_csv(data / "train.csv", index=False)
    eval_rows = []
    for plant in range(int(np.ceil(n_eval / per_plant))):
        disease, look = int(rng.choice(len(LEAF_CLASSES), p=LEAF_MIX)), plant_look()
        for _ in range(per_plant):
            if len(eval_rows) < n_eval:
                image_id = f"{rng.integers(1 << 40):012x}.jpg"
                write(data / "test_images" / image_id, disease, look)
                eval_rows.append((image_id, disease, plant))
    truth = pd.DataFrame(eval_rows, columns=["ImageID", "label", "person"]).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    pd.DataFrame({"image_id": truth["ImageID"], "label": LEAF_CLASSES[0]}).to_csv(data / "sample_submission.csv", index=False)
    answers = Path(root) / "answers.csv"
    truth[["ImageID", "label"]].to_csv(answers, index=False)
    return ToyCompetition(data, answers, train[["ImageID", "label"]], truth)
