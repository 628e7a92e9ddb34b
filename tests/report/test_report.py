"""``ganfuse report``: every section present, every image a real PNG, numbers from the run folders."""

from __future__ import annotations

import base64
import io
import shutil
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from ganfuse.cli import main
from ganfuse.report.build import INTERPOLATION_STEPS, PER_CLASS, SECTION_IDS, build_report
from tests.report.runs import BENCHMARK_ROWS


class ReportParser(HTMLParser):
    """Collects, per top-level section id, the embedded images and the visible text."""

    def __init__(self):
        super().__init__()
        self.section: str | None = None
        self.images: dict[str, list[Image.Image]] = {}
        self.alts: dict[str, list[str]] = {}
        self.text: dict[str, str] = {}
        self.external: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.section = attrs["id"]
            self.images[self.section] = []
            self.alts[self.section] = []
            self.text[self.section] = ""
        if tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            value = attrs.get(key) or ""
            if value.startswith(("http:", "https:", "//")):
                self.external.append(value)
        if tag == "img":
            prefix = "data:image/png;base64,"
            assert attrs["src"].startswith(prefix)
            image = Image.open(io.BytesIO(base64.b64decode(attrs["src"][len(prefix) :])))
            assert image.format == "PNG"
            image.load()
            self.images[self.section].append(image)
            self.alts[self.section].append(attrs.get("alt", ""))

    def handle_endtag(self, tag):
        if tag == "section":
            self.section = None

    def handle_data(self, data):
        if self.section:
            self.text[self.section] += data


def parse(path) -> ReportParser:
    parser = ReportParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def non_trivial(image: Image.Image, min_side: int = 60) -> bool:
    pixels = np.asarray(image.convert("L"))
    return min(image.size) >= min_side and pixels.std() > 1.0


@pytest.fixture(scope="module")
def report(cond_run, bench_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", str(cond_run), str(bench_dir), "--out", str(out)]) == 0
    return parse(out)


def test_every_section_is_present_in_order_and_self_contained(report):
    assert list(report.images) == list(SECTION_IDS)
    assert report.external == [] and report.scripts == 0


def test_every_embedded_image_is_a_non_trivial_png(report):
    images = [im for section in report.images.values() for im in section]
    assert len(images) >= 12
    assert all(non_trivial(im) for im in images), [im.size for im in images]


def test_curves_cover_losses_d_outputs_gradients_and_throughput(report):
    # the fields every run logs, plus augmentation (the fixture turns DiffAugment on); no FD: not tracked
    assert report.alts["curves"] == [
        "Losses",
        "Discriminator outputs",
        "Discriminator accuracy",
        "Gradient norms",
        "Throughput",
        "Augmentation",
    ]
    assert all(im.size == (640, 340) for im in report.images["curves"])


def test_timeline_shows_each_saved_grid_with_its_step(report):
    assert len(report.images["timeline"]) == 3  # grids at steps 2, 4 and 6
    for step in ("step 2", "step 4", "step 6"):
        assert step in report.text["timeline"]


def test_interpolation_strip_and_class_grid_have_the_expected_layout(report):
    (strip,) = report.images["interpolation"]
    # INTERPOLATION_STEPS images of 32 px with 2 px padding, upscaled 3x
    assert strip.size == ((INTERPOLATION_STEPS * 34 + 2) * 3, 36 * 3)
    (grid,) = report.images["grid"]
    assert grid.size == ((PER_CLASS * 34 + 2) * 2, (10 * 34 + 2) * 2)  # one row per digit class


def test_metrics_table_shows_values_n_extractor_and_resize(report):
    text = report.text["metrics"]
    for expected in (
        "FD (digits)",
        "12.3456",
        "KID",
        "± 0.0011",
        "0.6250",
        "500 / 1797",
        "bilinear-antialias",
    ):
        assert expected in text


def test_fusion_section_has_the_benchmark_table_and_chart(report):
    assert len(report.images["fusion"]) == 1
    text = report.text["fusion"]
    for row in BENCHMARK_ROWS:
        assert row["fusion"] in text and f"{row['value']:.4f}" in text


def test_several_runs_share_axes(cond_run, tmp_path):
    from ganfuse.report import plots
    from ganfuse.run_folders import read_metrics

    records = read_metrics(cond_run)
    longer = [{**r, "step": r["step"] * 10} for r in records]
    fig = plots.panel_figure(plots.PANELS[0], {"a": records, "b": longer}, max_step=60)
    (ax,) = fig.axes
    labels = sorted(line.get_label() for line in ax.get_lines())
    assert labels == ["a: D loss", "a: G loss", "b: D loss", "b: G loss"]
    assert ax.get_xlim() == (0.0, 60.0)
    colours = {line.get_label(): line.get_color() for line in ax.get_lines()}
    assert colours["a: D loss"] == colours["a: G loss"] != colours["b: D loss"]


def copy_without_checkpoints(run, dest):
    """A copy of ``run`` as it looks while it trains, before its first checkpoint."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("checkpoints"))
    return dest


def test_two_runs_in_one_report_are_both_shown(cond_run, tmp_path):
    copy = copy_without_checkpoints(cond_run, tmp_path / "again" / cond_run.name)
    parsed = parse(build_report([cond_run, copy], tmp_path / "two.html"))
    assert len(parsed.images["timeline"]) == 6
    assert len(parsed.images["interpolation"]) == 1
    assert "again/tiny-cond: no checkpoint yet" in parsed.text["interpolation"]
    assert "again/tiny-cond" in parsed.text["runs"]
    assert parsed.text["metrics"].count("12.3456") == 2


def test_missing_parts_are_explained_not_fatal(tmp_path, cond_run):
    run = copy_without_checkpoints(cond_run, tmp_path / "bare")
    (run / "eval.json").unlink()
    shutil.rmtree(run / "samples")
    parsed = parse(build_report([run], tmp_path / "r.html"))
    assert len(parsed.images["curves"]) == 6
    assert "ganfuse evaluate" in parsed.text["metrics"]
    assert "no sample grids" in parsed.text["timeline"]
    assert "no checkpoint yet" in parsed.text["grid"]
    assert "ganfuse fuse benchmark" in parsed.text["fusion"]


def test_report_of_a_non_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a ganfuse run" in err and "\n" not in err
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
