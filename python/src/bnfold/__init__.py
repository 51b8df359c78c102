"""bnfold: fold BatchNormalization into neighbouring weights of ONNX models.

A thin, typed wrapper over the bundled ``bnfold`` binary (also on PATH as the
``bnfold`` command)::

    import bnfold

    result = bnfold.fold("model.onnx", "fused.onnx")
    assert bnfold.check("model.onnx", "fused.onnx").equivalent

``fold`` raises ``bnfold.Error`` when nothing trustworthy was written;
``check`` returns ``equivalent=False`` for models that disagree and raises
only when the comparison could not be made.
"""

from __future__ import annotations

from ._api import (
    BatchNormCounts,
    CheckResult,
    Error,
    FoldResult,
    OptionValue,
    OutputComparison,
    PathLike,
    Remark,
    Timings,
    Verification,
    Written,
    check,
    fold,
)
from ._binary import binary_path


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return "unknown"
    try:
        return version("bnfold")
    except PackageNotFoundError:
        return "unknown"


#: The installed distribution's version, which is the bundled binary's ``--version``.
__version__ = _version()

__all__ = [
    "BatchNormCounts",
    "CheckResult",
    "Error",
    "FoldResult",
    "OptionValue",
    "OutputComparison",
    "PathLike",
    "Remark",
    "Timings",
    "Verification",
    "Written",
    "__version__",
    "binary_path",
    "check",
    "fold",
]
