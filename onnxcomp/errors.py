"""Errors that the CLI turns into one line on stderr and an exit code."""

from __future__ import annotations


class OnnxcompError(Exception):
    """Bad input or usage: the CLI prints the message alone and exits 2."""

    exit_code = 2


class BudgetExceeded(OnnxcompError):
    """A check or an accuracy budget failed: exit 1."""

    exit_code = 1
