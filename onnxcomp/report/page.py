"""The page shell every HTML report shares: one file, Plotly's script inlined once, no
network. Figures get stable ids so the same result gives the same bytes."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from onnxcomp.errors import OnnxcompError
from onnxcomp.io.jsonio import write_text_atomic

INSTALL_HINT = "--html needs plotly: pip install 'onnxcomp[report]'"

# Colours shared by every page: the original model, the compressed one, and warnings.
ORIGINAL = "#4C78A8"
COMPRESSED = "#F58518"
BAD = "#D62728"
NEUTRAL = "#9D9D9D"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto;
       max-width: 1150px; color: #222; padding: 0 16px; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
p.sub { color: #555; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.9em; margin: 8px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f6f6f6; }
td:first-child, th:first-child { text-align: left; }
td:first-child { word-break: break-all; max-width: 520px; }
tr.bad td { background: #fde7e7; }
.pass { color: #1a7f37; font-weight: 600; } .fail { color: #D62728; font-weight: 600; }
ul.hints li { margin: 4px 0; font-family: ui-monospace, monospace; font-size: 0.88em; }
.figure { margin: 8px 0 4px; }
"""

# Script errors mark the page (data-js-errors), so a browser test can read them from the DOM.
_ERROR_HOOK = (
    "window.addEventListener('error', function () { var e = document.documentElement;"
    " e.dataset.jsErrors = String(Number(e.dataset.jsErrors || 0) + 1); });"
)


def require_plotly() -> None:
    """Fail early, before any long work, when the report extra is missing."""
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise OnnxcompError(INSTALL_HINT) from None


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


class Page:
    """Sections appended in order; ``write`` renders the whole page atomically."""

    def __init__(self, title: str, subtitle: str = "") -> None:
        require_plotly()
        self.title = title
        self.parts: list[str] = [f"<h1>{esc(title)}</h1>"]
        if subtitle:
            self.parts.append(f'<p class="sub">{esc(subtitle)}</p>')
        self._figures = 0

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{esc(text)}</h2>")

    def text(self, text: str, css: str = "") -> None:
        cls = f' class="{css}"' if css else ""
        self.parts.append(f"<p{cls}>{esc(text)}</p>")

    def bullets(self, items: list[str], css: str = "") -> None:
        cls = f' class="{css}"' if css else ""
        self.parts.append(f"<ul{cls}>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>")

    def table(self, header: list[str], rows: list[list[Any]], bad: set[int] | None = None) -> None:
        """A plain table; rows whose index is in ``bad`` are shaded."""
        bad = bad or set()
        out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
        for i, row in enumerate(rows):
            cls = ' class="bad"' if i in bad else ""
            out.append(f"<tr{cls}>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
        self.parts.append("".join(out) + "</table>")

    def figure(self, fig: Any, height: int = 420) -> None:
        """A Plotly figure, drawn by the page's one inlined copy of plotly.js."""
        self._figures += 1
        fig.update_layout(
            height=height, template="plotly_white", margin={"l": 60, "r": 30, "t": 50, "b": 50}
        )
        div = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"figure-{self._figures}",
            config={"displaylogo": False, "responsive": True},
        )
        self.parts.append(f'<div class="figure">{div}</div>')

    def render(self) -> str:
        from plotly.offline import get_plotlyjs

        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{esc(self.title)}</title>\n<style>{_CSS}</style>\n"
            f"<script>{_ERROR_HOOK}</script>\n"
            f'<script type="text/javascript">{get_plotlyjs()}</script>\n</head>\n<body>\n'
            + "\n".join(self.parts)
            + "\n</body>\n</html>\n"
        )

    def write(self, path: str | os.PathLike) -> Path:
        p = Path(path)
        if not p.parent.exists():
            raise OnnxcompError(f"{p.parent}: folder for --html does not exist")
        return write_text_atomic(p, self.render())


def pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}%}"
