"""Exceptions that the CLI turns into one clear line and an exit code.

Library code raises these with a message that names the file and the problem;
``lineclear.cli.main`` prints ``lineclear: error: <message>`` and exits with
``exit_code`` (1 for a domain error, 2 for a usage error). The traceback is only
shown with ``-v``.
"""

from __future__ import annotations


class LineclearError(Exception):
    """A domain error: bad input file, failed registration under --strict, ..."""

    exit_code = 1


class UsageError(LineclearError):
    """The command line itself is wrong (bad option value, conflicting options)."""

    exit_code = 2


class FormatError(LineclearError):
    """A file is not of the expected lineclear schema, or is corrupt."""


class OutputExistsError(LineclearError):
    """An output exists and --overwrite was not given."""
