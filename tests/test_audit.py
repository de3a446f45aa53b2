"""Audits of a deployed model (harness/checks/audit.py): a verdict per check and one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.checks.audit import run_audit
from harness.data.shapes import SHAPE_CLASSES, generate_shapes

ROOT = Path(__file__).resolve().parents[1]
RESNET = str(ROOT / "exported_models" / "shapes_resnet.onnx")


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def test_audit_gives_a_verdict_per_check_and_one_html_page(tmp_path):
    images = generate_shapes(4, 64, seed=9)
    for pixels, label, name in zip(images.images, images.labels, images.names):
        folder = tmp_path / "images" / SHAPE_CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(folder / f"{name}.png")
    (tmp_path / "images" / "disc" / "broken.png").write_bytes(b"not an image")
    report, checks = run_audit(RESNET, tmp_path / "images", tmp_path / "audit", count=4)
    verdicts = {c.name: c.verdict for c in checks}
    assert verdicts["model card"] == "PASS" and verdicts["gradient graph"] == "PASS"
    assert verdicts["images"] == "WARN"                      # the broken file is named, not fatal
    assert verdicts["explanation certainty"] == "INFO"
    page = report.read_text()
    assert "broken.png" in page and "gradient graph" in page
    assert page.count("skipped disc/broken.png") == 1        # named once, though the folder is read twice

    bare, bare_checks = run_audit(RESNET, tmp_path / "images", tmp_path / "bare", card_facts={"layout": "NCWH"})
    assert bare_checks[0].verdict == "FAIL" and all(c.verdict == "SKIPPED" for c in bare_checks[1:])
