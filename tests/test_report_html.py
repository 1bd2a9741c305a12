"""HTML reports (--html): self-contained pages with the plots each command promises.

The browser tests (``pytest -m browser``) load each page in Debian's headless Chromium,
read the DOM after the scripts ran and save a screenshot; they skip without Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from model_builders import robust_fragile_model, write_data

from onnxcomp import compress
from onnxcomp.cli import main
from onnxcomp.debug import debug


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A two-layer model, a 50%-pruned int8-weight copy and data for both."""
    d = tmp_path_factory.mktemp("report")
    src, small, data = d / "model.onnx", d / "small.onnx", d / "data.npz"
    onnx.save(robust_fragile_model(), src)
    write_data(data, n=300)  # auto holds back a third: enough to resolve a 5% budget
    compress(src, small, prune_sparsity=0.5, quantize="weights")
    return src, small, data


def test_without_the_extra_the_cli_says_how_to_install(models, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "plotly", None)  # import plotly -> ImportError
    src, small, data = models
    page = tmp_path / "r.html"
    for argv in (
        ["check", str(src), str(small), "--runs", "0", "--html", str(page)],
        ["debug", str(src), str(small), "--data", str(data), "--html", str(page)],
        ["auto", str(src), "-o", str(tmp_path / "a.onnx"), "--max-drop", "0.1",
         "--html", str(page)],
    ):  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "pip install 'onnxcomp[report]'" in err
    assert not page.exists() and not (tmp_path / "a.onnx").exists()


def test_layers_carry_their_graph_position(models):
    src, small, data = models
    result = debug(src, small, data)
    graph_order = [n.name for n in onnx.load(src).graph.node]
    assert [x.node for x in sorted(result.layers, key=lambda x: x.index)] == graph_order


def test_json_latency_keeps_the_summary_only(models, capsys):
    src, small, data = models
    assert main(["check", str(src), str(small), "--data", str(data), "--runs", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["latency_original"]) == {"median_ms", "p90_ms", "runs"}


# ---- with the report extra ----------------------------------------------------------------


def _pages(models, tmp_path) -> dict[str, Path]:
    """check, debug and auto pages written through the CLI, as a user would."""
    src, small, data = models
    pages = {k: tmp_path / f"{k}.html" for k in ("check", "debug", "auto")}
    argv = ["check", str(src), str(small), "--data", str(data), "--runs", "20"]
    assert main([*argv, "--max-drop", "0.5", "--html", str(pages["check"])]) == 0
    assert main(["debug", str(src), str(small), "--data", str(data), "--html",
                 str(pages["debug"])]) == 0  # fmt: skip
    auto_argv = ["auto", str(src), "-o", str(tmp_path / "auto.onnx"), "--data", str(data),
                 "--max-drop", "0.05", "--max-trials", "14", "--workers", "1"]  # fmt: skip
    assert main([*auto_argv, "--html", str(pages["auto"])]) == 0
    return pages


@pytest.fixture(scope="module")
def pages(models, tmp_path_factory):
    pytest.importorskip("plotly")
    return _pages(models, tmp_path_factory.mktemp("pages"))


FIGURES = {"check": 3, "debug": 1, "auto": 2}


def test_pages_are_self_contained(pages):
    for kind, page in pages.items():
        text = page.read_text()
        assert "<script src" not in text and "<link" not in text, kind  # nothing fetched
        assert "Plotly.newPlot" in text
        assert text.count('class="plotly-graph-div"') == FIGURES[kind], kind


def test_auto_page_marks_the_budget_chosen_and_best_global(pages):
    text = pages["auto"].read_text()
    assert "budget: drop \\u003c= 0.05" in text  # Plotly escapes < inside its JSON
    assert re.search(r"chosen \(#\d+\)", text) and re.search(r"best global setting \(#\d+\)", text)
    assert "Verification on held-back data" in text and "accepted" in text


def test_debug_page_highlights_the_worst_layers_and_hints(pages):
    text = pages["debug"].read_text()
    assert 'class="bad"' in text and "Hints" in text


def test_same_result_gives_the_same_bytes(models):
    pytest.importorskip("plotly")
    from onnxcomp.report.debug_page import debug_page

    src, small, data = models
    result = debug(src, small, data)
    assert debug_page(result).render() == debug_page(result).render()


def test_check_json_and_html_together_keep_stdout_json(models, tmp_path, capsys):
    pytest.importorskip("plotly")
    src, small, _ = models
    page = tmp_path / "c.html"
    argv = ["check", str(src), str(small), "--runs", "3", "--json", "--html", str(page)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)
    assert page.exists() and str(page) in captured.err


# ---- in a real browser (opt-in) -------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--window-size=1200,1400",
        "--virtual-time-budget=5000", *args,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True)


@pytest.mark.browser
@pytest.mark.parametrize("kind", ["check", "debug", "auto"])
def test_page_renders_in_chromium(pages, kind, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip("no Chromium: apt-get install chromium")
    page = pages[kind]
    dom = _chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile").stdout
    assert "data-js-errors" not in dom  # the page shell counts uncaught script errors
    figures = re.split(r'id="figure-\d+"', dom)[1:]
    assert len(figures) == FIGURES[kind]
    for i, fig in enumerate(figures, 1):
        body = fig.split('class="figure"')[0]  # up to the next figure
        assert 'class="main-svg"' in body, f"{kind} figure {i} has no SVG"
        # drawn marks: scatter points and bars are class="point", heatmaps an <image>
        marks = len(re.findall(r'class="point"', body)) + body.count("<image")
        assert marks > 0, f"{kind} figure {i} is empty"
    shot = tmp_path / f"{kind}.png"
    _chromium(f"--screenshot={shot}", page.as_uri(), profile=tmp_path / "profile")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    keep = os.environ.get("ONNXCOMP_SCREENSHOTS")
    if keep:
        shutil.copy(shot, Path(keep) / shot.name)
