"""Where the bnfold executable is.

The wheel carries the static binary at ``bnfold/_bin/bnfold``; the
BNFOLD_BINARY environment variable overrides it, so the API can be run
against a development build (``BNFOLD_BINARY=.build/release/bnfold``).
"""

from __future__ import annotations

import os

_BUNDLED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bin", "bnfold")


def binary_path() -> str:
    """The bnfold executable this package runs (BNFOLD_BINARY, else the bundled one)."""
    override = os.environ.get("BNFOLD_BINARY")
    if override:
        return override
    if not os.access(_BUNDLED, os.X_OK) and os.path.isfile(_BUNDLED):
        # Some unpackers drop the executable bit; restore it if we may.
        try:
            os.chmod(_BUNDLED, 0o755)
        except OSError:
            pass
    return _BUNDLED
