"""`ens report --html`: every section with the right numbers, images embedded, renders in Chromium."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from conftest import console_errors, hard_csv, render, write_csv
from sklearn.metrics import confusion_matrix

from ensembler.data.labels import Task, decode, encode
from ensembler.data.sources import import_source
from ensembler.data.toy import teammate_csv
from ensembler.evaluate import diagnostics
from ensembler.evaluate.htmlreport import write_html_report
from ensembler.evaluate.report import build_report
from ensembler.pipeline.recipe import parse_recipe

SECTIONS = ("scores", "priors", "confusion", "per-class", "agreement", "age", "calibration", "provenance")


class Page(HTMLParser):
    """Section ids, tables by their data-name (rows of cell texts), and image sources."""

    def __init__(self, text: str):
        super().__init__()
        self.sections: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        elif tag == "table":
            self._table = attrs["data-name"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def matrix(table: list[list[str]]) -> np.ndarray:
    return np.array([[int(v) for v in row[1:]] for row in table[1:]])


def wrong_age(labels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    parts = decode(labels)
    parts[Task.AGE] = np.where(rows, (parts[Task.AGE] + 1) % 3, parts[Task.AGE])
    return encode(parts[Task.MASK], parts[Task.GENDER], parts[Task.AGE])


@pytest.fixture
def page(project, toy, tmp_path):
    """Source A is right except for the age of every third image; B is a noisy probability source."""
    truth = pd.concat([toy.eval, toy.train])
    y = truth["label"].to_numpy()
    a = wrong_age(y, np.arange(len(y)) % 3 == 0)
    import_source(project, hard_csv(tmp_path / "A.csv", truth, a), "A")
    import_source(project, write_csv(tmp_path / "B.csv", teammate_csv(truth, {Task.MASK: 2.0, Task.GENDER: 2.0, Task.AGE: 2.0}, seed=3)), "B")
    report = build_report(project, sources=["A"])
    path = write_html_report(report, tmp_path / "out" / "report.html")
    text = path.read_text()
    expected = pd.Series(a, index=truth["ImageID"]).reindex(report.sets["A"].image_ids).to_numpy()
    return Page(text), text, report, expected


def test_every_section_is_there_and_the_images_are_embedded(page):
    parsed, text, _, _ = page
    assert parsed.sections == list(SECTIONS)
    assert len(parsed.images) >= 4
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text)  # nothing fetched from outside
    assert "<script" not in text


def test_confusion_matrices_match_scikit_learn_on_a_known_input(page):
    parsed, _, report, predicted = page
    truth, pred = decode(report.labels), decode(predicted)
    assert np.array_equal(matrix(parsed.tables["confusion-age"]), confusion_matrix(truth[Task.AGE], pred[Task.AGE], labels=[0, 1, 2]))
    assert np.array_equal(matrix(parsed.tables["confusion-mask"]), np.diag(np.bincount(truth[Task.MASK], minlength=3)))
    assert np.array_equal(matrix(parsed.tables["confusion-18"]), confusion_matrix(report.labels, predicted, labels=range(18)))


def test_scores_per_class_age_and_calibration_numbers(page):
    parsed, _, report, predicted = page
    scores = {row[0]: row for row in parsed.tables["scores"][1:]}
    assert scores["A"][5] == f"{report.rows[0].scores.f1_18:.4f}"
    low, high = report.rows[0].interval
    assert scores["A"][6] == f"{low:.4f} to {high:.4f}" and low <= report.rows[0].scores.f1_18 <= high  # its person-bootstrap interval
    assert scores["A"][2] == "1.0000" and scores["A"][3] == "1.0000"  # mask and gender are right
    per_class = parsed.tables["per-class-f1"]
    assert [row[1] for row in per_class[1:]] == [f"{v:.4f}" for v in diagnostics.per_class_f1(confusion_matrix(report.labels, predicted, labels=range(18)))]
    # error by age: every third image has a wrong age, so per age the error rate is the share of such images
    years = diagnostics.age_years(report.sets["A"].image_ids)
    wrong = decode(predicted)[Task.AGE] != decode(report.labels)[Task.AGE]
    rows = {int(r[0]): r for r in parsed.tables["error-by-age"][1:]}
    age = int(years[0])
    assert rows[age][1] == str(int((years == age).sum())) and rows[age][2] == f"{wrong[years == age].mean():.3f}"
    # a hard source is sure of everything: its calibration error is its error rate
    calibration = {r[0]: r for r in parsed.tables["calibration"][1:]}
    before_after = lambda cell: [float(v) for v in cell.split(" → ")]  # noqa: E731
    assert calibration["A"][3].startswith(f"{wrong.mean():.3f} → ") and calibration["A"][1].startswith("0.000 → ")
    age_ece, age_loss = before_after(calibration["A"][3]), before_after(calibration["A"][6])
    assert age_ece[1] < age_ece[0] and age_loss[1] < age_loss[0]  # temperature scaling tempers a sure-of-everything source
    assert float(calibration["A"][7].split(" / ")[2]) > 1


def test_provenance_and_priors_name_every_source(page):
    parsed, _, _, _ = page
    provenance = {r[0]: r for r in parsed.tables["provenance"][1:]}
    assert set(provenance) == {"A"} and provenance["A"][2] == "import" and "A.csv (hard)" in provenance["A"][4]
    assert parsed.tables["priors"][1][0] == "truth (scored images)"


def test_provenance_of_a_model_names_its_checkpoint_device_and_precision():
    from types import SimpleNamespace

    from ensembler.data.store import PredictionSet, Split
    from ensembler.evaluate.htmlreport import _provenance

    key = {"architecture": "resnet18", "layout": "classes18", "checkpoints": {"None": "ab" * 32}}
    origin = {"type": "model", "cache_key": key, "tta": "hflip", "device": "cpu", "precision": "bfloat16"}
    pset = PredictionSet("m", Split.EVAL, np.array(["a.jpg"]), joint=np.full((1, 18), 1 / 18, dtype=np.float32), meta={"kind": "proba", "origin": origin})
    [row] = _provenance(SimpleNamespace(sets={"m": pset})).rows
    assert row[4] == "resnet18 classes18; cpu bfloat16" and row[5] == "ab" * 6 and row[6] == "hflip"


def test_a_recipe_becomes_the_chosen_composition_and_pairs_are_compared(project, toy, tmp_path):
    truth = pd.concat([toy.eval, toy.train])
    for i, name in enumerate("ABC"):
        import_source(project, write_csv(tmp_path / f"{name}.csv", teammate_csv(truth, {Task.MASK: 2.0, Task.GENDER: 2.0, Task.AGE: 1.5}, seed=i)), name)
    report = build_report(project, recipes=[parse_recipe("*:A+B+C")])
    parsed = Page(write_html_report(report, tmp_path / "r.html").read_text())
    agreement = parsed.tables["agreement-age"]
    assert agreement[0][1:] == ["A", "B", "C"] and [agreement[i][i] for i in (1, 2, 3)] == ["1.000"] * 3
    a, b = (report.sets[n].probs[Task.AGE].argmax(1) for n in "AB")
    assert agreement[1][2] == f"{(a == b).mean():.3f}"
    corr = parsed.tables["error-correlation-mask"]
    truth = decode(report.labels)[Task.MASK]
    wrong = {n: (report.sets[n].probs[Task.MASK].argmax(1) != truth).astype(float) for n in "ABC"}
    for i, j in ((1, 2), (1, 3), (2, 3)):  # the phi coefficient of two sources' mask errors: numpy's Pearson r
        reference = np.corrcoef(wrong["ABC"[i - 1]], wrong["ABC"[j - 1]])[0, 1]
        assert corr[i][j] == corr[j][i] == f"{reference:.3f}"
    assert [corr[i][i] for i in (1, 2, 3)] == ["1.000"] * 3
    assert "*:A+B+C (soft)" in parsed.tables["per-class-f1"][0]


def test_cli_writes_the_page_and_refuses_a_folder(project, toy, tmp_path):
    from typer.testing import CliRunner

    from ensembler.cli import app

    truth = pd.concat([toy.eval, toy.train])
    import_source(project, hard_csv(tmp_path / "A.csv", truth, truth["label"].to_numpy()), "A")
    runner = CliRunner()
    result = runner.invoke(app, ["--zoo", str(project.zoo), "report", "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and (tmp_path / "r.html").stat().st_size > 10_000
    result = runner.invoke(app, ["--zoo", str(project.zoo), "report", "--html", str(tmp_path)])
    assert result.exit_code == 1 and "is a folder" in result.output


def test_the_page_renders_in_headless_chromium_without_console_errors(chromium, project, toy, tmp_path):
    # the check can fail: a page with a script error and a broken image is caught
    broken = tmp_path / "broken.html"
    broken.write_text('<html><body><img src="data:image/png;base64,AAAA"><script>console.error("boom"); undefined_call();</script></body></html>')
    done = render(chromium, broken, tmp_path, "--dump-dom")
    assert console_errors(done.stderr), done.stderr[-2000:]

    truth = pd.concat([toy.eval, toy.train])
    import_source(project, write_csv(tmp_path / "A.csv", teammate_csv(truth, {Task.MASK: 2.0, Task.GENDER: 2.0, Task.AGE: 2.0}, seed=0)), "A")
    import_source(project, write_csv(tmp_path / "B.csv", teammate_csv(truth, {Task.MASK: 1.0, Task.GENDER: 2.0, Task.AGE: 3.0}, seed=1)), "B")
    page = write_html_report(build_report(project, recipes=[parse_recipe("*:A+B")]), tmp_path / "report.html")
    done = render(chromium, page, tmp_path, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    assert not console_errors(done.stderr), console_errors(done.stderr)
    dom = done.stdout
    assert all(f'id="{s}"' in dom for s in SECTIONS)
    shot = tmp_path / "shot.png"
    done = render(chromium, page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    assert done.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
