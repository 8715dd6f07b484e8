"""The command line: exit codes, one-line errors, --help everywhere, the seed case end to end."""

import re
import subprocess
import sys

import pandas as pd

import pytest
from conftest import hard_csv
from typer.main import get_command
from typer.testing import CliRunner

from ensembler.cli import app
from ensembler.data.labels import Task, decode, encode

runner = CliRunner()


def ens(*args, cwd=None):
    return runner.invoke(app, [str(a) for a in args])


def commands(group, path=()):
    for name, cmd in group.commands.items():
        yield (*path, name)
        if hasattr(cmd, "commands"):
            yield from commands(cmd, (*path, name))


@pytest.mark.parametrize("path", [(), *commands(get_command(app))], ids=lambda p: " ".join(p) or "ens")
def test_every_command_has_help(path):
    result = ens(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and len(result.output) > 120
    assert not re.search(r"<(str|list\[|int range|float range)|x<=|<=x|x>=", result.output), result.output  # no typer leftovers: choices or a name
    group = get_command(app)
    for name in path:
        group = group.commands[name]
    if hasattr(group, "commands"):  # the command list: each line whole, never cut with "..."
        assert "..." not in result.output.split("Commands:")[1]
    else:  # a command: one example line that names it
        assert re.search(rf"Example:\n  ens {' '.join(path)}( |\n)", result.output)


def test_the_commands_of_the_design_exist():
    names = set(get_command(app).commands)
    assert {"split", "zoo", "import", "compose", "report", "demo"} <= names


def test_no_arguments_prints_help():
    result = ens()
    assert result.exit_code == 0 and "compose" in result.output


@pytest.fixture
def team(tmp_path, toy):
    """The seed case's two hard-label submissions, A (mask, gender right) and B (age right)."""
    truth = pd.concat([toy.eval, toy.train])
    t = decode(truth["label"].to_numpy())
    a = encode(t[Task.MASK], t[Task.GENDER], (t[Task.AGE] + 2) % 3)
    b = encode((t[Task.MASK] + 2) % 3, 1 - t[Task.GENDER], t[Task.AGE])
    zoo = tmp_path / "team" / "model_zoo.yaml"
    base = ("--zoo", zoo, "--data", toy.data)
    for name, labels in (("A", a), ("B", b)):
        result = ens(*base, "import", hard_csv(tmp_path / f"{name}.csv", truth, labels), "--name", name)
        assert result.exit_code == 0, result.output
        assert f"source '{name}': {len(toy.eval)} eval rows" in result.output
    return base, zoo.parent


def test_seed_case_from_the_command_line(team, toy):
    base, root = team
    result = ens(*base, "split", "--folds", "4")
    assert result.exit_code == 0, result.output
    assert "40 people in 4 folds" in result.output
    result = ens(*base, "compose", "--recipe", "age:B", "mask:A", "gender:A", "--name", "seed")
    assert result.exit_code == 0, result.output
    written = pd.read_csv(root / "submissions" / "seed.csv")
    assert written["ImageID"].tolist() == toy.eval["ImageID"].tolist()
    assert written["ans"].tolist() == toy.eval["label"].tolist()
    assert "accuracy 1.0000" in result.output and "per-task probabilities" in result.output
    report = ens(*base, "report", "--recipe", "age:B *:A", "--method", "hard")
    assert report.exit_code == 0, report.output
    lines = [line.strip() for line in report.output.splitlines() if line.strip().startswith(("mask,gender:A", "A ", "B ", "seed"))]
    assert lines[0].startswith(("mask,gender:A", "seed"))  # best first
    assert "+" in report.output  # the recipe's gain over the best single source
    listing = ens(*base, "zoo", "list")
    assert listing.exit_code == 0 and "seed" in listing.output and "ensemble" in listing.output


@pytest.mark.parametrize(
    "args, message",
    [
        (("compose", "--recipe", "*:Z", "--name", "x"), "unknown source 'Z'"),
        (("compose", "--recipe", "*:A*0", "--name", "x"), "weight '0' must be a positive number"),
        (("compose", "--recipe", "*:A", "--method", "vote"), "'vote' is not one of 'soft', 'geo', 'hard'"),
        (("compose", "--recipe", "*:A", "--name", "a b"), "invalid name 'a b'"),
        (("compose", "--bogus"), "No such option: --bogus"),
        (("import", "missing.csv", "--name", "C"), "missing.csv: file not found"),
        (("import", "missing.csv", "--name", "C", "--kind", "probs"), "'probs' is not one of 'hard', 'proba', 'logits', 'task'"),
        (("import", "missing.csv", "--name", "A"), "source 'A' exists"),
        (("report", "--model", "Q"), "unknown source 'Q'"),
        (("report", "--recipe", "*:A", "--recipe", "*:B", "age:A"), "quote each one"),
        (("split", "--val-fold", "9"), "--val-fold must lie in 0..4"),
        (("compose", "--recipe", "*:A+B", "--tie", "first", "--name", "x"), "--tie breaks the ties of a hard vote; --method soft has none"),
        (("report", "--recipe", "*:A+B", "--tie", "lower"), "--tie breaks the ties of a hard vote; add --method hard"),
        (("compose", "--recipe", "*:A+B", "--method", "hard", "--tie", "best"), "'best' is not one of 'mass', 'lower', 'first'"),
    ],
)
def test_errors_are_one_line_and_exit_1(team, args, message):
    base, root = team
    result = ens(*base, *args)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert not (root / "submissions" / "x.csv").exists()


def test_compose_with_prior_correction_prints_the_priors(team, toy, tmp_path):
    from conftest import write_csv

    from ensembler.data.toy import teammate_csv

    base, root = team
    probs = teammate_csv(toy.eval, {Task.MASK: 2.0, Task.GENDER: 2.0, Task.AGE: 1.0}, seed=0)
    assert ens(*base, "import", write_csv(tmp_path / "p.csv", probs), "--name", "p").exit_code == 0
    result = ens(*base, "compose", "--recipe", "*:p", "--prior", "em", "--name", "em")
    assert result.exit_code == 0, result.output
    assert "age priors (em): train [" in result.output and "-> eval [" in result.output


def test_compose_never_overwrites_from_the_cli(team):
    base, root = team
    assert ens(*base, "compose", "--recipe", "*:A", "--name", "x").exit_code == 0
    result = ens(*base, "compose", "--recipe", "*:B", "--name", "x")
    assert result.exit_code == 1 and "x.csv exists" in result.stderr


def run_the_next_command_printed(output: str, monkeypatch) -> None:
    """The demo's closing line, ``next: cd DIR && ens …  (…)``, runs as printed."""
    import shlex

    folder, command = re.search(r"[Nn]ext: cd (\S+) && (ens .*?) \(", " ".join(output.split())).groups()
    monkeypatch.chdir(folder)
    result = ens(*shlex.split(command)[1:])
    assert result.exit_code == 0, (command, result.output)


def test_demo_runs_the_whole_flow_at_a_tiny_size(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    args = ("demo", "--dir", tmp_path / "d", "--people", 40, "--eval-people", 6, "--image-size", "48x64", "--epochs", 1)
    result = ens(*args)
    assert result.exit_code == 0, result.output
    root = tmp_path / "d"
    for name in ("per-task", "per-task-vote", "soft-vote", "select", "stack", "auto", "soft-vote-em", "per-task-vote-em", "select-em", "stack-em", "auto-em"):
        assert (root / "submissions" / f"{name}.csv").is_file()
    page = (root / "report.html").read_text()
    assert 'id="confusion"' in page and "data:image/png;base64," in page
    assert (root / "answers.csv").is_file() and (root / "models" / "ben-heads" / "fold1.pth").is_file()
    assert "hidden eval answers" in result.output and "ana-eff" in result.output
    assert "gender: not named; from dan-mg, the recipe's only source with gender" in result.output  # the card's form
    steps = [tuple(map(int, m)) for m in re.findall(r"step (\d+)/(\d+):", result.output)]
    assert [done for done, _ in steps] == list(range(1, len(steps) + 1)) and {total for _, total in steps} == {len(steps)}  # every step counted, the total right
    again = ens(*args)
    assert again.exit_code == 1 and "not empty" in again.stderr
    run_the_next_command_printed(result.output, monkeypatch)
    run_every_help_example(root, monkeypatch)


# the one command whose --help example is not run as printed: the full-size demo takes minutes;
# the two tiny demo tests run it with the example's options and size flags
EXAMPLES_NOT_RUN = {("demo",): "the full-size demo takes 150 s; the tiny demo tests run it"}


def run_every_help_example(root, monkeypatch) -> None:
    """Each command's --help example runs as printed in the demo's project folder (`root`), given
    the files an example names: a teammate's CSV (ana-eff's validation probabilities written
    out) and a baseline run folder; `ens split` in a copy without its fold file (the demo's
    models were trained against it)."""
    import shlex
    import shutil

    from ensembler.data.project import load_project

    monkeypatch.chdir(root)
    project = load_project(root / "model_zoo.yaml")
    held = project.store.read("ana-eff", "val")
    pd.DataFrame(held.joint, columns=[str(c) for c in range(18)]).assign(ImageID=held.image_ids).iloc[:, [18, *range(18)]].to_csv("ken_val.csv", index=False)
    (root / "model" / "exp3").mkdir(parents=True)
    (root / "model.py").write_text("class BaseModel:\n    def __init__(self, num_classes):\n        pass\n")
    (root / "model" / "exp3" / "best.pth").write_bytes(b"x")
    (root / "model" / "exp3" / "config.json").write_text('{"model": "BaseModel", "resize": [128, 96]}')
    fresh = root.parent / "fresh"
    shutil.copytree(root, fresh, ignore=shutil.ignore_patterns("predictions*", "submissions", "models"))
    (fresh / "folds.csv").unlink()
    ran = set()
    for path in commands(get_command(app)):
        cmd = get_command(app)
        for name in path:
            cmd = cmd.commands[name]
        if hasattr(cmd, "commands") or path in EXAMPLES_NOT_RUN:
            continue
        example = shlex.split(cmd.epilog)
        assert example[: 1 + len(path)] == ["ens", *path], example
        monkeypatch.chdir(fresh if path == ("split",) else root)
        result = ens(*example[1:])
        assert result.exit_code == 0, (cmd.epilog, result.output)
        ran.add(path)
    assert ("import",) in ran and ("zoo", "add-baseline") in ran and len(ran) >= 10


def test_demo_of_a_declared_competition_at_a_tiny_size(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    args = ("demo", "--competition", "leaves", "--dir", tmp_path / "d", "--people", 40, "--eval-people", 4, "--image-size", "48x48", "--epochs", 1)
    result = ens(*args)
    assert result.exit_code == 0, result.output
    root = tmp_path / "d"
    assert "competition:" in (root / "model_zoo.yaml").read_text() and (root / "folds.csv").read_text().startswith("group,fold")
    sample = (root / "data" / "sample_submission.csv").read_text().splitlines()
    for method in ("soft", "geo", "select", "stack", "auto"):
        written = (root / "submissions" / f"{method}.csv").read_text().splitlines()
        assert written[0] == "image_id,label" and len(written) == len(sample) == 13  # the sample's rows, 12 eval images
        assert {line.split(",")[0] for line in written[1:]} == {line.split(",")[0] for line in sample[1:]}
        assert {line.split(",")[1] for line in written[1:]} <= {"healthy", "rust", "spot", "blight"}  # class names, as declared (as: name)
    out = " ".join(result.output.split())
    assert "hidden eval answers (never read by ens): accuracy" in out and "ana-r10" in out and "chose " in out
    run_the_next_command_printed(result.output, monkeypatch)


def test_compose_and_report_do_not_import_torch(team, tmp_path):
    base, root = team
    code = (
        "import sys\n"
        "from ensembler.cli import app\n"
        "for args in (sys.argv[1:] + ['compose', '--recipe', '*:A+B', '--name', 'nt'], sys.argv[1:] + ['report']):\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, exc.code\n"
        "print('torch' in sys.modules, 'matplotlib' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *map(str, base)], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False False"  # nor matplotlib, which only --html needs
    assert (root / "submissions" / "nt.csv").is_file()


def test_a_vote_of_eval_predictions_does_not_import_pandas(toy, tmp_path):
    """pandas costs a third of a second to import; a plain vote of eval sets never needs it."""
    base = ("--zoo", tmp_path / "model_zoo.yaml", "--data", toy.data)
    for name, shift in (("E1", 0), ("E2", 1)):
        labels = (toy.eval["label"].to_numpy() + shift) % 18
        assert ens(*base, "import", hard_csv(tmp_path / f"{name}.csv", toy.eval, labels), "--name", name).exit_code == 0
    code = (
        "import sys\n"
        "from ensembler.cli import app\n"
        "try:\n    app(sys.argv[1:])\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "print('pandas' in sys.modules)\n"
    )
    args = [*map(str, base), "compose", "--recipe", "*:E1+E2", "--method", "hard", "--name", "np"]
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
    written = pd.read_csv(tmp_path / "submissions" / "np.csv")
    assert written["ImageID"].tolist() == toy.eval["ImageID"].tolist()  # ties: the lower class, E1's or E2's
    assert written["ans"].tolist() == [min(a, (a + 1) % 18) for a in toy.eval["label"]]


def test_the_card_command_names_two_tasks_and_says_where_the_third_came_from(team, toy, tmp_path):
    base, root = team
    ages = decode(toy.eval["label"].to_numpy())[Task.AGE]
    path = tmp_path / "age.csv"
    pd.DataFrame({"ImageID": toy.eval["ImageID"], "ans": ages}).to_csv(path, index=False)
    assert ens(*base, "import", path, "--name", "chloe-age", "--kind", "task", "--task", "age").exit_code == 0
    result = ens(*base, "compose", "--recipe", "age:chloe-age", "mask:A", "--name", "card")
    assert result.exit_code == 0, result.output
    assert "gender: not named; from A, the recipe's only source with gender" in result.output
    refused = ens(*base, "compose", "--recipe", "age:chloe-age", "--name", "no")
    assert refused.exit_code == 1 and "sources that do: 'A', 'B'" in refused.stderr and "chloe-age)" not in refused.stderr
    report = ens(*base, "report", "--recipe", "age:B mask:A")
    assert report.exit_code == 0 and "gender: not named; from A+B" in report.output


def test_hard_vote_tie_rules_from_the_command_line(team, toy, tmp_path):
    """"Our best submission wins ties": F answers x, two files y, two files z (y, z != x)."""
    import json

    base, root = team
    truth = pd.concat([toy.eval, toy.train])  # eval rows first
    rng = pd.Series(range(len(truth)))
    x, y, z = (rng % 18).to_numpy(), ((rng + 5) % 18).to_numpy(), ((rng + 11) % 18).to_numpy()
    for name, labels in (("F", x), ("y1", y), ("y2", y), ("z1", z), ("z2", z)):
        assert ens(*base, "import", hard_csv(tmp_path / f"{name}.csv", truth, labels), "--name", name).exit_code == 0
    n = len(toy.eval)
    x, y, z = x[:n], y[:n], z[:n]
    recipe = "*:F+y1+y2+z1+z2"
    first = ens(*base, "compose", "--recipe", recipe, "--method", "hard", "--tie", "first", "--name", "first")
    assert first.exit_code == 0, first.output
    assert "hard vote on the 18-way joint, ties by first" in first.output
    assert pd.read_csv(root / "submissions" / "first.csv")["ans"].tolist() == x.tolist()
    assert json.loads((root / "submissions" / "first.json").read_text())["steps"][0]["tie"] == "first"
    lower = ens(*base, "compose", "--recipe", recipe, "--method", "hard", "--tie", "lower", "--name", "lower")
    assert lower.exit_code == 0, lower.output
    assert pd.read_csv(root / "submissions" / "lower.csv")["ans"].tolist() == [min(a, b) for a, b in zip(y, z)]
    report = ens(*base, "report", "--recipe", recipe, "--method", "hard", "--tie", "first")
    assert report.exit_code == 0 and "hard votes break ties by first" in report.output


def test_import_reads_prefixed_probability_columns_and_says_so(team, toy, tmp_path):
    from conftest import write_csv

    from ensembler.data.toy import teammate_csv

    base, root = team
    probs = teammate_csv(toy.eval, {Task.MASK: 2.0, Task.GENDER: 2.0, Task.AGE: 1.0}, seed=0)
    probs = probs.rename(columns={str(k): f"ans{k}" for k in range(18)})
    result = ens(*base, "import", write_csv(tmp_path / "p.csv", probs), "--name", "p")
    assert result.exit_code == 0, result.output
    assert "read ans0..ans17 (18 classes)" in result.output
    odd = probs.rename(columns={f"ans{k}": f"score[{k}]" for k in range(18)})
    refused = ens(*base, "import", write_csv(tmp_path / "q.csv", odd), "--name", "q")
    assert refused.exit_code == 1 and "--columns" in refused.stderr
    taken = ens(*base, "import", tmp_path / "q.csv", "--name", "q", "--columns", "score[{}]")
    assert taken.exit_code == 0, taken.output
    assert "read score[0]..score[17] (18 classes)" in taken.output


@pytest.mark.parametrize("width", [80, 132])
def test_tables_fit_the_terminal(team, width):
    """Columns fit 80 characters (titles and captions are prose the terminal wraps); nothing is cut."""
    from rich.console import Console

    from ensembler.cli.output import report_table, sources_table
    from ensembler.data.project import load_project
    from ensembler.evaluate.report import build_report
    from ensembler.pipeline.recipe import parse_recipe
    from ensembler.pipeline.steps import Method

    base, root = team
    project = load_project(root / "model_zoo.yaml", base[3])
    long_name = "a-long-name-from-a-teammate"
    rows = [(long_name, "import", ["mask", "gender", "age"], "yes", "eval, val", "420 / 1680"), ("age-only", "model", ["age"], "no", "eval", "420")]
    report = build_report(project, recipes=[parse_recipe("age:B *:A")], methods=[Method.SOFT, Method.STACK])
    console = Console(width=width, highlight=False, soft_wrap=True)
    listing = sources_table(rows, width)
    legend = listing.caption
    for table in (listing, report_table(report, width=width)):
        table.title = table.caption = None
        with console.capture() as captured:
            console.print(table)
        text = captured.get()
        assert max(len(line.rstrip()) for line in text.splitlines()) <= width, text
        assert "…" not in text  # nothing cut
    with console.capture() as captured:
        console.print(sources_table(rows, width))
    shown = captured.get()
    assert long_name in shown and "stack, CV" in text
    if width == 80:
        assert "m,g,a" in shown and legend == "tasks: m mask, g gender, a age"
    else:
        assert "mask,gender,age" in shown and legend is None


def test_the_demo_hint_names_the_ens_that_ran_as_it_runs_from_the_demo_folder(tmp_path, monkeypatch):
    from ensembler.cli import _ens_from

    venv_ens = tmp_path / ".venv" / "bin" / "ens"
    venv_ens.parent.mkdir(parents=True)
    venv_ens.write_text("#!/bin/sh\n")
    venv_ens.chmod(0o755)
    monkeypatch.setattr(sys, "argv", [str(venv_ens), "demo"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the venv not activated: another ens, or none, on PATH
    assert _ens_from(tmp_path / "ens-demo") == "../.venv/bin/ens"
    monkeypatch.setenv("PATH", f"{venv_ens.parent}:/usr/bin:/bin")  # activated: its ens is the one found
    assert _ens_from(tmp_path / "ens-demo") == "ens"


def test_a_learnt_rate_of_label_errors_reads_per_given_class_and_names_the_worst_past_six():
    from ensembler.cli.output import learnt_rate

    assert learnt_rate("finding0", 0.015, {"no": 0.017, "yes": 0.009}) == "finding0 1.5% (no 1.7%, yes 0.9%)"
    assert learnt_rate("label", 0.02, {}) == "label 2.0%"
    many = {f"c{i}": 0.01 + 0.001 * (i == 4) for i in range(50)}
    assert learnt_rate("label", 0.01, many) == "label 1.0% (most often c4 1.1%)"
