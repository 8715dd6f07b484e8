"""A model trained with the public baseline's own code, predicted by ens, composed alone,
reproduces row for row the output.csv of the baseline's argmax inference."""

import json
import textwrap

import pytest

torch = pytest.importorskip("torch")

import pandas as pd  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from ensembler.cli import app  # noqa: E402

# The baseline's model.py (BaseModel as published) and the parts of its dataset.py / inference.py
# that inference runs: Resize(resize, BILINEAR) -> ToTensor -> Normalize, then argmax of 18 logits.
BASELINE_MODEL = textwrap.dedent(
    """
    import torch.nn as nn
    import torch.nn.functional as F


    class BaseModel(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 32, kernel_size=7, stride=1)
            self.conv2 = nn.Conv2d(32, 64, kernel_size=3, stride=1)
            self.conv3 = nn.Conv2d(64, 128, kernel_size=3, stride=1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.25)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(128, num_classes)

        def forward(self, x):
            x = F.relu(self.conv1(x))
            x = F.relu(self.conv2(x))
            x = self.dropout1(F.max_pool2d(x, 2))
            x = F.relu(self.conv3(x))
            x = self.dropout2(F.max_pool2d(x, 2))
            x = self.avgpool(x).view(-1, 128)
            return self.fc(x)
    """
)


def baseline_transform(resize):
    from PIL import Image
    from torchvision.transforms import Compose, Normalize, Resize, ToTensor

    return Compose([Resize(resize, Image.BILINEAR), ToTensor(), Normalize(mean=(0.548, 0.504, 0.479), std=(0.237, 0.247, 0.246))])


def baseline_inference(model, data, resize, out_csv):
    """inference.py: info.csv order, argmax of the 18 logits, written to output.csv."""
    from PIL import Image

    info = pd.read_csv(data / "eval" / "info.csv")
    transform = baseline_transform(resize)
    preds = []
    with torch.no_grad():
        for start in range(0, len(info), 16):
            batch = torch.stack([transform(Image.open(data / "eval" / "images" / i)) for i in info.ImageID[start : start + 16]])
            preds.extend(model(batch).argmax(dim=-1).numpy())
    info["ans"] = preds
    info.to_csv(out_csv, index=False)


def test_baseline_run_is_reproduced_row_for_row(tmp_path, faces, monkeypatch):
    toy = faces
    import sys

    from PIL import Image

    code = tmp_path / "baseline"
    (code / "model" / "exp3").mkdir(parents=True)
    (code / "model.py").write_text(BASELINE_MODEL)
    sys.path.insert(0, str(code))
    try:
        import model as baseline_model
    finally:
        sys.path.remove(str(code))
        sys.modules.pop("model", None)

    # train.py, briefly: the baseline's own model and transforms on the toy train images
    torch.manual_seed(0)
    net = baseline_model.BaseModel(num_classes=18)
    resize = [40, 30]  # config.json's [height, width]
    transform = baseline_transform(resize)
    images = torch.stack([transform(Image.open(toy.data / "train" / "images" / i)) for i in toy.train.ImageID])
    labels = torch.tensor(toy.train.label.to_numpy())
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(20):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(images), labels).backward()
        optimizer.step()
    net.eval()
    torch.save(net.state_dict(), code / "model" / "exp3" / "best.pth")
    (code / "model" / "exp3" / "config.json").write_text(json.dumps({"model": "BaseModel", "resize": resize, "epochs": 1}))
    baseline_inference(net, toy.data, resize, tmp_path / "output.csv")
    expected = pd.read_csv(tmp_path / "output.csv")
    assert expected["ans"].nunique() >= 3  # a model that says one class for all would prove little

    team = tmp_path / "team"
    team.mkdir()
    monkeypatch.chdir(team)  # no model_zoo.yaml yet: add-baseline creates it
    runner = CliRunner()
    base = ["--data", str(toy.data)]
    added = runner.invoke(app, [*base, "zoo", "add-baseline", str(code / "model" / "exp3"), "--name", "exp3", "--inference-resize", "40", "30"])
    assert added.exit_code == 0, added.output
    assert "resize: 30x40 (width x height)" in added.output
    assert (team / "model_zoo.yaml").is_file()
    assert runner.invoke(app, [*base, "zoo", "check", "exp3"]).exit_code == 0
    predicted = runner.invoke(app, [*base, "predict", "--model", "exp3", "--tta", "none", "--workers", "0", "--device", "cpu"])
    assert predicted.exit_code == 0, predicted.output
    composed = runner.invoke(app, [*base, "compose", "--recipe", "*:exp3", "--name", "exp3-alone"])
    assert composed.exit_code == 0, composed.output
    ours = pd.read_csv(team / "submissions" / "exp3-alone.csv")
    assert ours["ImageID"].tolist() == expected["ImageID"].tolist()
    assert ours["ans"].tolist() == expected["ans"].tolist()


def test_add_baseline_says_when_the_inference_resize_was_transposed(tmp_path, monkeypatch):
    code = tmp_path / "baseline"
    (code / "model" / "exp").mkdir(parents=True)
    (code / "model.py").write_text(BASELINE_MODEL)
    (code / "model" / "exp" / "best.pth").write_bytes(b"x")
    (code / "model" / "exp" / "config.json").write_text(json.dumps({"model": "BaseModel", "resize": [128, 96]}))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["zoo", "add-baseline", str(code / "model" / "exp"), "--name", "b"])
    assert result.exit_code == 0, result.output
    assert "the baseline's inference default (96, 128) differs from the training resize [128, 96]" in result.output
    again = runner.invoke(app, ["zoo", "add-baseline", str(code / "model" / "exp"), "--name", "b"])
    assert again.exit_code == 1 and "name: duplicate of models[0]" in again.stderr
    (code / "model.py").unlink()
    missing = runner.invoke(app, ["zoo", "add-baseline", str(code / "model" / "exp"), "--name", "c"])
    assert missing.exit_code == 1 and "no model.py with class BaseModel (pass --code DIR" in missing.stderr
