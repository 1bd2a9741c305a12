"""Self-contained HTML reports (Plotly, inlined so a page opens offline) for check, debug
and auto. Plotly is the optional extra ``onnxcomp[report]``: the core never imports it."""

from __future__ import annotations

from onnxcomp.report.page import require_plotly

__all__ = ["require_plotly"]
