"""`ens audit` and the label-fix file: hand-made people found (and an unsure one not), the fix
file's refusals, the fixes reaching every reader of train labels, the page in Chromium."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import console_errors, render, write_csv
from typer.testing import CliRunner

from ensembler.cli import app
from ensembler.data.dataset import read_people, read_train
from ensembler.data.fixes import append_fixes, apply_fixes, read_fixes
from ensembler.data.labels import Task, decode, encode
from ensembler.data.project import load_project, update_project
from ensembler.data.sources import import_source
from ensembler.data.toy import teammate_csv
from ensembler.errors import EnsError
from ensembler.evaluate.audit import FLAG, audit_labels, write_audit_html
from ensembler.evaluate.report import build_report
from ensembler.pipeline.composition import compose
from ensembler.pipeline.recipe import parse_recipe

runner = CliRunner()
SLOTS = ("mask1.jpg", "mask2.jpg", "mask3.jpg", "mask4.jpg", "mask5.jpg", "incorrect_mask.jpg", "normal.jpg")


def people(n: int = 150, seed: int = 0):
    """`n` hand-made people: ids, true labels ``(7n,)``, and two sources' probabilities drawn
    from the truth (gender sure, mask sure, age fair), with a face per person (its seven photos
    lean the same way)."""
    rng = np.random.default_rng(seed)
    gender, age = rng.integers(0, 2, n), rng.choice(3, n, p=[0.45, 0.45, 0.1])
    person = np.repeat(np.arange(n), 7)
    mask = np.tile([0, 0, 0, 0, 0, 1, 2], n)
    ids = np.array([f"{p:06d}_{'female' if gender[p] else 'male'}_Asian_{[22, 45, 65][age[p]]}/{SLOTS[i % 7]}" for i, p in enumerate(person)], dtype=object)
    labels = encode(mask, gender[person], age[person])
    truth = decode(labels)
    probs = {}
    for s in range(2):
        out = {}
        for task, margin, face in ((Task.MASK, 4.0, 0.2), (Task.GENDER, 3.0, 0.5), (Task.AGE, 1.5, 0.6)):
            k = 3 if task is not Task.GENDER else 2
            z = rng.normal(0, 1, (len(labels), k)) + rng.normal(0, face, (n, k))[person]
            z[np.arange(len(labels)), truth[task]] += margin
            out[task] = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        probs[f"s{s}"] = out
    return ids, labels, probs, person


def with_photos(probs, rows, task, klass, strength):
    """The sources' probabilities of `rows` set to say `klass` of `task` with `strength`."""
    out = {s: {t: p.copy() for t, p in v.items()} for s, v in probs.items()}
    for v in out.values():
        k = v[task].shape[1]
        v[task][rows] = (1 - strength) / (k - 1)
        v[task][rows, klass] = strength
    return out


def test_a_sure_male_labelled_female_is_found_and_an_unsure_one_is_not():
    ids, labels, probs, person = people()
    given = decode(labels)
    sure, unsure = 3, 7  # both labelled female; the photos of one say male for sure, of the other barely
    given[Task.GENDER][person == sure] = 1
    given[Task.GENDER][person == unsure] = 1
    probs = with_photos(probs, person == sure, Task.GENDER, 0, 0.995)
    probs = with_photos(probs, person == unsure, Task.GENDER, 0, 0.55)
    found = audit_labels(probs, given, ids).findings
    gender = found[found["task"] == "gender"].set_index("profile")
    sure_row = gender.loc[ids[person == sure][0].split("/")[0]]
    assert sure_row["p_wrong"] > 0.9 and sure_row["given"] == "female" and sure_row["suggested"] == "male"
    assert sure_row["sources"] == 2 and sure_row["image"] == ""
    unsure_name = ids[person == unsure][0].split("/")[0]
    assert unsure_name not in gender.index or gender.loc[unsure_name, "p_wrong"] < FLAG
    assert found["p_wrong"].is_monotonic_decreasing and found.iloc[0]["profile"] == sure_row.name


def test_a_swapped_pair_of_mask_files_is_found_as_a_swap():
    ids, labels, probs, person = people()
    given = decode(labels)
    rows = np.flatnonzero(person == 11)
    given[Task.MASK][rows[5]], given[Task.MASK][rows[6]] = 2, 1  # incorrect_mask and normal named the other way round
    found = audit_labels(probs, given, ids).findings
    mask = found[(found["task"] == "mask") & (found["p_wrong"] >= FLAG)]
    assert sorted(mask["image"]) == ["incorrect_mask.jpg", "normal.jpg"]
    assert set(zip(mask["given"], mask["suggested"])) == {("not wear", "incorrect"), ("incorrect", "not wear")}
    assert (mask["profile"] == ids[rows[0]].split("/")[0]).all()


def test_an_incorrect_mask_worn_properly_breaks_the_rule_and_is_found():
    ids, labels, probs, person = people()
    rows = np.flatnonzero(person == 20)
    probs = with_photos(probs, rows[5:6], Task.MASK, 0, 0.999)  # its incorrect_mask photo shows the mask worn
    found = audit_labels(probs, decode(labels), ids).findings
    top = found[found["task"] == "mask"].iloc[0]
    assert (top["image"], top["given"], top["suggested"]) == ("incorrect_mask.jpg", "incorrect", "wear") and top["p_wrong"] > FLAG


def test_age_knows_the_folders_years():
    ids, labels, probs, person = people()
    given = decode(labels)
    target = np.flatnonzero((given[Task.AGE] == 1) & (np.arange(len(labels)) % 7 == 0))[:2] // 7
    near, far = target
    probs = with_photos(probs, np.isin(person, target), Task.AGE, 2, 0.6)  # both look 60+, mildly
    years = np.array([45] * len(labels))
    years[person == near], years[person == far] = 59, 31
    found = audit_labels(probs, given, ids, years).findings.set_index("profile")
    name = lambda p: ids[person == p][0].split("/")[0]  # noqa: E731
    p_near = found.loc[name(near)]
    p_far = found.loc[name(far)]["p_wrong"] if name(far) in found.index else 0.0
    p_near = p_near[p_near["task"] == "age"]["p_wrong"].max() if isinstance(p_near, pd.DataFrame) else p_near["p_wrong"]
    assert p_near > p_far  # 59 looking 60+ is likelier mislabelled than 31 looking 60+


def test_data_problems_are_reported():
    ids, labels, probs, person = people(60)
    keep = ~((person == 5) & (np.arange(len(labels)) % 7 == 6))  # one person without its normal.jpg
    ids, labels = ids[keep], labels[keep]
    probs = {s: {t: p[keep] for t, p in v.items()} for s, v in probs.items()}
    twin = ids[person[keep] == 9][0].split("/")[0]
    ids = np.array([i.replace(twin, "000008-1" + twin[6:]) for i in ids], dtype=object)  # person id 000008 used by two folders
    result = audit_labels(probs, decode(labels), ids)
    assert any("1 people without seven labelled images" in p for p in result.problems)
    assert any("used by two folders" in p and "000008" in p for p in result.problems)
    assert result.people == {"gender": 60, "age": 60, "mask": 60}


# --- the fix file ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rows, match",
    [
        ("000001_female_Asian_45,,colour,red", "task 'colour' is not one of"),
        ("000001_female_Asian_45,,gender,robot", "'robot' is not a gender class"),
        ("000001_female_Asian_45,,mask,wear", "a mask fix names the image"),
        ("000001_female_Asian_45,mask1.jpg,age,<30", "an age fix is for the whole person"),
        ("000001_female_Asian_45,,gender,male\n000001_female_Asian_45,,gender,female", "fixed twice with two answers"),
        (",,gender,male", "the profile .* is empty"),
    ],
)
def test_the_fix_file_refuses_bad_rows(tmp_path, rows, match):
    path = tmp_path / "fixes.csv"
    path.write_text(f"profile,image,task,label\n{rows}\n")
    with pytest.raises(EnsError, match=match):
        read_fixes(path)


def test_the_fix_file_reads_names_and_indices_and_one_answer_twice(tmp_path):
    path = tmp_path / "fixes.csv"
    path.write_text("profile,image,task,label\nP_male_A_45,,gender,female\nP_male_A_45,,gender,1\nP_male_A_45,normal.jpg,mask,incorrect\nQ_male_A_58,,age,60+\n")
    fixes = read_fixes(path)
    assert len(fixes) == 3 and fixes.describe()["fixes"] == 3 and len(fixes.sha256) == 64
    ids = np.array(["P_male_A_45/mask1.jpg", "P_male_A_45/normal.jpg", "Q_male_A_58/mask1.jpg", "R_male_A_20/mask1.jpg"], dtype=object)
    before = encode(np.array([0, 2, 0, 0]), np.array([0, 0, 0, 0]), np.array([1, 1, 1, 0]))
    after = decode(apply_fixes(ids, before, fixes))
    assert after[Task.GENDER].tolist() == [1, 1, 0, 0] and after[Task.MASK].tolist() == [0, 1, 0, 0] and after[Task.AGE].tolist() == [1, 1, 2, 0]


def test_append_keeps_the_teams_lines_and_never_adds_a_label_twice(tmp_path):
    path = tmp_path / "fixes.csv"
    own = "profile,image,task,label\n# not sure\nP_male_A_45,,gender,1\n"
    path.write_text("profile,image,task,label\nP_male_A_45,,gender,1\n")
    path.write_text(own.replace("# not sure\n", ""))
    added = append_fixes(path, [("P_male_A_45", "", Task.GENDER, 0), ("Q_male_A_58", "", Task.AGE, 2), ("Q_male_A_58", "", Task.AGE, 2)])
    assert added == 1  # P's gender is the team's: its line wins; Q's age once
    assert path.read_text() == own.replace("# not sure\n", "") + "Q_male_A_58,,age,60+\n"


def test_an_unknown_person_or_image_in_the_fix_file_is_one_error_and_nothing_is_written(project, toy, tmp_path):
    fixes = project.root / "label_fixes.csv"
    first = toy.train["ImageID"].iloc[0].split("/")[0]
    for row, match in (("999999_male_Asian_20,,gender,female", "no such person"), (f"{first},mask9.jpg,mask,wear", "no such image")):
        fixes.write_text(f"profile,image,task,label\n{row}\n")
        update_project(project.zoo, label_fixes="label_fixes.csv")
        result = runner.invoke(app, ["--zoo", str(project.zoo), "split"])
        assert result.exit_code == 1 and match in result.output and result.output.count("Error:") == 1
        assert not project.folds.exists()


# --- the fixes reach every reader -----------------------------------------------------------------


def test_the_fixes_reach_every_reader_of_train_labels(project, toy, tmp_path):
    truth = pd.concat([toy.eval, toy.train])
    import_source(project, write_csv(tmp_path / "A.csv", teammate_csv(truth, {Task.MASK: 3.0, Task.GENDER: 3.0, Task.AGE: 2.0}, seed=0)), "A")
    train = read_train(toy.data)
    profile = train["profile"].iloc[0]
    gender = int(train["gender"].iloc[0])
    image = train[train["profile"] == profile]["ImageID"].iloc[-1].split("/")[1]
    (project.root / "label_fixes.csv").write_text(f"profile,image,task,label\n{profile},,gender,{1 - gender}\n{profile},{image},mask,wear\n")
    update_project(project.zoo, label_fixes="label_fixes.csv")
    fixed_project = load_project(project.zoo)
    fixes = fixed_project.fixes
    assert len(fixes) == 2
    # the one reader of the data folder, and the people behind `ens split`'s stratification
    table = read_train(toy.data, fixes)
    mine = table[table["profile"] == profile]
    assert (mine["gender"] == 1 - gender).all() and mine.iloc[-1]["mask"] == 0
    assert (decode(mine["label"].to_numpy())[Task.GENDER] == 1 - gender).all()
    assert read_people(toy.data, fixes).set_index("profile").loc[profile, "gender"] == 1 - gender
    # scores and fits (the sets carry the labels of when they were made; the fix file is read now)
    plain = build_report(project, sources=["A"], replicates=0)
    fixed = build_report(fixed_project, sources=["A"], replicates=0)
    assert plain.rows[0].scores.f1_18 != fixed.rows[0].scores.f1_18
    assert any(n.startswith("labels: 2 fixes from label_fixes.csv (sha256 ") for n in fixed.notes)
    changed = np.flatnonzero(plain.labels != fixed.labels)
    assert len(changed) == 7 and set(decode(fixed.labels[changed])[Task.GENDER]) == {1 - gender}
    # the manifest names the file, its sha256 and the number of fixes
    done = compose(fixed_project, parse_recipe("*:A"), name="v1")
    assert done.manifest["label_fixes"] == {"file": str(fixes.path), "sha256": fixes.sha256, "fixes": 2}
    assert compose(project, parse_recipe("*:A"), name="v0").manifest["label_fixes"] is None


# --- ens audit ------------------------------------------------------------------------------------


def test_ens_audit_writes_the_findings_prints_the_top_and_accepts(project, toy, tmp_path):
    truth = pd.concat([toy.eval, toy.train])
    labels = truth["label"].to_numpy().copy()
    t = decode(labels)
    train_rows = np.flatnonzero(truth["ImageID"].str.contains("/").to_numpy())
    wrong = truth["ImageID"].iloc[train_rows[0]].split("/")[0]
    flipped = truth.assign(label=labels)
    rows = truth["ImageID"].str.startswith(wrong + "/").to_numpy()
    t[Task.GENDER][rows] = 1 - t[Task.GENDER][rows]  # the photos show the other gender, surely
    flipped["label"] = encode(t[Task.MASK], t[Task.GENDER], t[Task.AGE])
    for seed in (0, 1):
        import_source(project, write_csv(tmp_path / f"S{seed}.csv", teammate_csv(flipped, {Task.MASK: 4.0, Task.GENDER: 6.0, Task.AGE: 2.0}, seed=seed)), f"S{seed}")
    result = runner.invoke(app, ["--zoo", str(project.zoo), "audit", "--top", "5", "--accept", "0.9", "--html", str(tmp_path / "audit.html")])
    assert result.exit_code == 0, result.output
    assert "audited all 280 labelled images" in result.output and "audited 40 people" in result.output
    table = pd.read_csv(project.root / "audit" / "train.csv", keep_default_na=False)
    assert list(table.columns[:7]) == ["profile", "image", "task", "given", "suggested", "p_wrong", "sources"]
    top = table.iloc[0]
    assert (top["profile"], top["task"], top["sources"]) == (wrong, "gender", 2) and top["p_wrong"] > 0.9

    assert wrong in result.output and "1 fix added" in result.output
    page = (tmp_path / "audit.html").read_text()  # the toy's images are empty files: shown as "no image", never a crash
    assert f'id="{wrong}"' in page and page.count("no image") == 7 and "female" in page
    record = json.loads((project.root / "audit" / "train.json").read_text())
    assert record["people"] == {"gender": 40, "age": 40, "mask": 40} and record["sources"]["gender"] == {"S0": 1.0, "S1": 1.0}
    fixes = (project.root / "label_fixes.csv").read_text().splitlines()
    assert fixes[0] == "profile,image,task,label" and fixes[1].startswith(f"{wrong},,gender,")
    assert load_project(project.zoo).label_fixes == project.root / "label_fixes.csv"
    again = runner.invoke(app, ["--zoo", str(project.zoo), "audit", "--accept", "0.9"])
    assert again.exit_code == 0 and "labels: 1 fix from label_fixes.csv" in again.output and "0 fixes added" in again.output
    assert wrong not in pd.read_csv(project.root / "audit" / "train.csv", keep_default_na=False).query("task == 'gender' and p_wrong >= 0.5")["profile"].tolist()
    assert runner.invoke(app, ["--zoo", str(project.zoo), "split"]).exit_code == 0
    held = runner.invoke(app, ["--zoo", str(project.zoo), "audit", "--top", "0"])  # the scope line counts the people once
    assert held.exit_code == 0 and "audited validation fold 0 of folds.csv: " in held.output and held.output.count(" people") == 1, held.output


def test_ens_audit_without_labelled_predictions_is_one_error(project):
    result = runner.invoke(app, ["--zoo", str(project.zoo), "audit"])
    assert result.exit_code == 1 and result.output.count("Error:") == 1 and "no source with labelled predictions" in result.output


def test_the_page_shows_the_flagged_peoples_photos_and_renders_in_chromium(chromium, faces, tmp_path):
    zoo = tmp_path / "team" / "model_zoo.yaml"
    update_project(zoo, data=faces.data)
    project = load_project(zoo)
    truth = pd.concat([faces.eval, faces.train])
    t = decode(truth["label"].to_numpy())
    wrong = faces.train["ImageID"].iloc[0].split("/")[0]
    rows = truth["ImageID"].str.startswith(wrong + "/").to_numpy()
    t[Task.GENDER][rows] = 1 - t[Task.GENDER][rows]
    flipped = truth.assign(label=encode(t[Task.MASK], t[Task.GENDER], t[Task.AGE]))
    for seed in (0, 1):
        import_source(project, write_csv(tmp_path / f"S{seed}.csv", teammate_csv(flipped, {Task.MASK: 4.0, Task.GENDER: 6.0, Task.AGE: 2.0}, seed=seed)), f"S{seed}")
    from ensembler.evaluate.audit import audit

    page = write_audit_html(project, audit(project), tmp_path / "audit.html")
    text = page.read_text()
    assert text.count("data:image/jpeg;base64,") >= 7 and f'id="{wrong}"' in text and "incorrect_mask" in text
    done = render(chromium, page, tmp_path, "--dump-dom")
    assert done.returncode == 0 and not console_errors(done.stderr), done.stderr[-2000:]
    assert wrong in done.stdout


def test_log_density_is_the_weighted_kernel_mixture_with_its_broad_tail():
    # by hand: Silverman's robust bandwidth, each point's own term left out, a share 1/(m+1) of
    # one Gaussian three times as wide; a point far past every kernel keeps the broad part
    from scipy.special import logsumexp
    from scipy.stats import norm

    from ensembler.evaluate.label_errors import log_density

    rng = np.random.default_rng(3)
    sample = rng.normal(0, 2.0, 50)
    weights = rng.uniform(0.5, 1.5, 50)
    at = np.array([sample[4], 0.3, 1e4])
    leave_out = np.array([4, -1, -1])
    w = weights / weights.sum()
    mean = np.sum(w * sample)
    q1, q3 = np.percentile(sample, [25, 75])
    robust = max(min(np.sqrt(np.sum(w * (sample - mean) ** 2)), (q3 - q1) / 1.34), 0.5)
    h = 0.9 * robust * 50**-0.2
    kernel = [logsumexp(norm.logpdf(x, sample, h)[keep], b=w[keep]) for x, own in zip(at, leave_out) for keep in [np.arange(50) != own]]
    tail = norm.logpdf(at, np.median(sample), 3 * robust)
    expected = np.logaddexp(np.log(50 / 51) + np.array(kernel), np.log(1 / 51) + tail)
    got = log_density(at, sample, weights, leave_out)
    np.testing.assert_allclose(got[:2], expected[:2], rtol=1e-12)
    assert np.isfinite(got[2]) and got[2] == pytest.approx(np.log(1 / 51) + tail[2], rel=1e-12)
