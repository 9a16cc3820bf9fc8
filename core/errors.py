"""User-facing errors: one clear line and a non-zero exit, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or a refused operation; its message is shown to the user as is."""
