"""The synthetic line-clearance dataset: five machine views, camera shifts, leftover products.

Public API: :func:`generate` (see :mod:`lineclear.synth.generate` for the files it writes),
``VIEWS`` and ``KINDS``.
"""

from lineclear.synth.generate import generate, parse_size
from lineclear.synth.products import KINDS
from lineclear.synth.scene import VIEWS

__all__ = ["KINDS", "VIEWS", "generate", "parse_size"]
