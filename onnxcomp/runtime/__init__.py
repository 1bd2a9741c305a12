"""onnxruntime, in one place: the session factory (``session.make_session``), tensor
capture (``capture``) and side-by-side latency (``latency``).

Importing this package does not import onnxruntime; ``set_verbosity`` only records the
wanted log level until a session module loads it.
"""

from __future__ import annotations

import sys

# onnxruntime's severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal.
_QUIET = 3
_severity = _QUIET


def set_verbosity(verbose: int) -> None:
    """onnxruntime's log level from the CLI's ``-v`` count: silent below ``-vv``
    (its warnings, such as unused initializers, are noise to a user), warnings at
    ``-vv``, info from ``-vvv``."""
    global _severity
    _severity = _QUIET if verbose < 2 else 2 if verbose == 2 else 1
    if "onnxruntime" in sys.modules:  # already configured at import: update it
        sys.modules["onnxruntime"].set_default_logger_severity(_severity)


def log_severity() -> int:
    return _severity
