"""``bnfold.fold`` and ``bnfold.check``: the CLI's --json reports as typed objects.

Every call runs the bundled ``bnfold`` binary with ``--json`` and builds the
result from the one JSON object it prints, so the Python API can never fold
or judge differently from the command line: there is one implementation, in
the binary. What this module adds is the translation both ways — keyword
options to flags, JSON to dataclasses, exit codes to results or exceptions —
and nothing else.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

from ._binary import binary_path

#: A file name: a ``str`` or any ``os.PathLike`` (``pathlib.Path``).
PathLike = Union[str, "os.PathLike[str]"]

#: What an option may be given as (see ``fold`` for how each becomes flags).
OptionValue = Union[
    None,
    bool,
    int,
    float,
    str,
    "os.PathLike[str]",
    Sequence[Union[str, int]],
    Mapping[str, Union[str, "os.PathLike[str]", Sequence[int]]],
]

_ERROR_PREFIX = "bnfold: error: "
# Options the API sets itself: the report must be JSON on standard output,
# and the output file is dst.
_RESERVED = {"json", "output", "o", "help", "h", "version"}


class Error(Exception):
    """bnfold refused the input or could not do the work.

    Raised for exit status 2 (an unreadable or invalid model, a bad option, a
    memory budget exceeded, ...) from any command, and for exit status 1 from
    ``fold`` (the folded model failed verification, so nothing was written).
    A non-equivalent ``check`` is not an error: it is a ``CheckResult`` with
    ``equivalent`` False, because that is an answer, not a failure.

    ``message`` is the CLI's one-line message without its ``bnfold: error:``
    prefix (``str(error)`` is the same); ``exit_code`` is the exit status
    (negative: killed by that signal); ``stderr`` is everything the binary
    wrote there and ``command`` the argv it was run with, for logs.
    """

    def __init__(self, message: str, exit_code: int, stderr: str = "", command: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.stderr = stderr
        self.command = list(command)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"bnfold.Error({self.message!r}, exit_code={self.exit_code})"


# MARK: fold


@dataclass(frozen=True)
class Remark:
    """One pass's word on one node: ``kind`` is "applied" (folded) or "missed"
    (kept, and ``reason``/``message`` say why)."""

    kind: str
    pass_name: str
    node: Optional[str]
    reason: str
    message: str


@dataclass(frozen=True)
class BatchNormCounts:
    """BatchNormalization nodes in the main graph: found in the input, folded, kept."""

    found: int
    folded: int
    kept: int


@dataclass(frozen=True)
class Verification:
    """How the folded model was checked against the original before it was written.

    ``whole_model`` is "passed" or "skipped: <why>" (a failure raises
    ``Error`` instead); ``worst_ratio`` is the largest error/bound seen
    (below 1 passes).
    """

    pairs_checked: int
    pairs_failed: int
    pairs_skipped: int
    whole_model: str
    worst_ratio: float

    @property
    def whole_model_passed(self) -> bool:
        """True when the whole folded model ran and agreed with the original."""
        return self.whole_model == "passed"


@dataclass(frozen=True)
class Written:
    """What was written: the model's size and where its external data went, if any."""

    model_bytes: int
    external_data_file: Optional[str]
    external_tensors: int
    external_data_bytes: int
    switched_to_external_data: bool


@dataclass(frozen=True)
class Timings:
    """Wall-clock seconds of each phase."""

    read: float
    passes: float
    verify: float
    write: float
    total: float


@dataclass(frozen=True)
class FoldResult:
    """The report of a successful ``bnfold fold`` (exit status 0).

    ``report`` is the whole JSON object as printed, so fields that a newer
    bnfold adds are reachable before this class names them.
    """

    input: str
    output: str
    version: str
    passes: Tuple[str, ...]
    nodes_before: int
    nodes_after: int
    iterations: int
    batchnorm: BatchNormCounts
    remarks: Tuple[Remark, ...]
    verification: Verification
    written: Written
    seconds: Timings
    notes: Tuple[str, ...]
    report: Dict[str, Any] = field(repr=False, compare=False)

    @property
    def missed(self) -> Tuple[Remark, ...]:
        """The remarks for what was kept, each with its reason."""
        return tuple(r for r in self.remarks if r.kind == "missed")

    @classmethod
    def from_json(cls, report: Dict[str, Any]) -> "FoldResult":
        """Builds the result from the object ``bnfold fold --json`` prints."""
        return _build(
            cls,
            report,
            passes=tuple(report["passes"]),
            batchnorm=_build(BatchNormCounts, report["batchnorm"]),
            remarks=tuple(_build(Remark, r, pass_name=r["pass"]) for r in report["remarks"]),
            verification=_build(Verification, report["verification"]),
            written=_build(Written, report["written"]),
            seconds=_build(Timings, report["seconds"]),
            notes=tuple(report.get("notes", ())),
            report=report,
        )


def fold(src: PathLike, dst: PathLike, **options: OptionValue) -> FoldResult:
    """Folds ``src`` into ``dst`` (``bnfold fold SRC -o DST --json``) and returns the report.

    Options are the command's flags, with ``_`` for ``-``; their values say
    how the flag is given::

        True                      --flag          (False or None: left out)
        "x", 3, 0.5, Path(...)    --flag VALUE
        ["a", "b"]                --flag a,b      (passes=, disable=)
        {"x": [1, 3, 8, 8]}       --flag x=1,3,8,8 for each entry (input_shape=, input=)

    for example ``passes=["fold-batchnorm"]``, ``no_verify=True``,
    ``external_data="inline"``, ``max_memory="4G"``,
    ``assume_constant_inputs=True``. Any flag of the installed binary may be
    given, so options it gains need no new Python.

    Raises ``Error`` when bnfold exits 2 (bad input or option) or 1 (the
    folded model failed verification and was not written): a fold that did
    not produce a trustworthy model must not pass silently in a pipeline.
    """
    dst_name = os.fspath(dst)
    if dst_name == "-":
        raise ValueError("fold() writes a file; dst '-' (standard output) is for the command line")
    args = ["fold", os.fspath(src), "--output", dst_name, "--json", *_flags(options)]
    done = _run(args)
    if done.returncode != 0:
        raise _error(done)
    return FoldResult.from_json(_report(done))


# MARK: check


@dataclass(frozen=True)
class OutputComparison:
    """How one graph output of B compared with A's.

    With the default rule, ``error`` is compared with ``bound`` (``ratio`` =
    error/bound, below 1 passes); with rtol/atol those two are None and
    ``ratio`` is the worst |B − A| / (atol + rtol·|A|).
    """

    name: str
    element_type: str
    shape: Tuple[int, ...]
    equivalent: bool
    ratio: Optional[float]
    max_abs_diff: Optional[float]
    max_rel_diff: Optional[float]
    cosine_similarity: Optional[float]
    error: Optional[float]
    bound: Optional[float]
    reference_noise: Optional[float]
    scale: Optional[float]


@dataclass(frozen=True)
class CheckResult:
    """The verdict of ``bnfold check A B`` (exit status 0 or 1).

    ``rule`` is "derived" (the default bound, with ``k``) or "tolerance"
    (``rtol``/``atol``). ``report`` is the whole JSON object as printed.
    """

    equivalent: bool
    model_a: str
    model_b: str
    rule: str
    samples: int
    seed: int
    outputs: Tuple[OutputComparison, ...]
    version: str
    k: Optional[float]
    rtol: Optional[float]
    atol: Optional[float]
    #: The report's notes: which value each symbolic input dimension took.
    notes: Tuple[str, ...]
    report: Dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, report: Dict[str, Any]) -> "CheckResult":
        """Builds the result from the object ``bnfold check --json`` prints."""
        return _build(
            cls,
            report,
            equivalent=bool(report["equivalent"]),
            notes=tuple(report.get("notes") or ()),
            outputs=tuple(
                _build(OutputComparison, o, shape=tuple(o["shape"]), equivalent=bool(o["equivalent"]))
                for o in report["outputs"]
            ),
            report=report,
        )


def check(a: PathLike, b: PathLike, **options: OptionValue) -> CheckResult:
    """Runs models ``a`` and ``b`` on the same inputs (``bnfold check A B --json``).

    Options map to flags as for ``fold``: ``samples=``, ``seed=``, ``rtol=``,
    ``atol=``, ``max_memory=``, ``input_shape={"x": [1, 3, 224, 224]}``,
    ``input={"x": "x.npy"}``.

    Not equivalent (exit status 1) is a result with ``equivalent`` False, so
    ``assert bnfold.check(a, b).equivalent`` reads as a test and the
    per-output numbers are there to print; ``Error`` is raised only when the
    check could not be done (exit status 2: unreadable models, inputs that do
    not match, an operator the reference runtime lacks, ...), or when
    ``strict=True`` refuses equivalent models because an input dimension
    was left unbound (exit status 1, the message says which).
    """
    args = ["check", os.fspath(a), os.fspath(b), "--json", *_flags(options)]
    done = _run(args)
    if done.returncode not in (0, 1) or not done.stdout.strip():
        raise _error(done)
    result = CheckResult.from_json(_report(done))
    if done.returncode == 1 and result.equivalent:
        raise _error(done)  # --strict: equivalent, but not on shapes the caller chose
    return result


# MARK: running the binary


_T = TypeVar("_T")


def _build(cls: Type[_T], values: Mapping[str, Any], **given: Any) -> _T:
    """A dataclass from the JSON object's keys of the same names (``given`` wins).

    A key the report lacks is None (fields that only one rule or mode
    prints); keys the dataclass does not name stay in ``report``.
    """
    names = (f.name for f in dataclasses.fields(cls) if f.name not in given)  # type: ignore[arg-type]
    return cls(**{name: values.get(name) for name in names}, **given)


def _flags(options: Mapping[str, OptionValue]) -> List[str]:
    """Keyword options to command-line flags (the rules are in ``fold``'s docstring)."""
    args: List[str] = []
    for key, value in options.items():
        if key in _RESERVED:
            raise TypeError(f"option {key!r} is set by the API itself")
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, Mapping):
            for name, item in value.items():
                args += [flag, f"{name}={_scalar_or_list(item)}"]
        elif isinstance(value, (str, int, float)) or isinstance(value, os.PathLike):
            args += [flag, _scalar_or_list(value)]
        elif isinstance(value, Sequence):
            args += [flag, ",".join(str(v) for v in value)]
        else:
            raise TypeError(f"option {key!r}: cannot pass a {type(value).__name__} as {flag}")
    return args


def _scalar_or_list(value: Any) -> str:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, Sequence):
        return ",".join(str(v) for v in value)
    return str(value)


def _run(args: List[str]) -> "subprocess.CompletedProcess[str]":
    command = [binary_path(), *args]
    try:
        return subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
    except OSError as error:
        raise Error(f"cannot run {command[0]}: {error.strerror}", 2, command=command) from error


def _report(done: "subprocess.CompletedProcess[str]") -> Dict[str, Any]:
    try:
        report = json.loads(done.stdout)
    except ValueError as error:
        raise Error(f"bnfold printed no JSON report ({error})", done.returncode, done.stderr, done.args) from error
    if not isinstance(report, dict):
        raise Error("bnfold's JSON report is not an object", done.returncode, done.stderr, done.args)
    return report


def _error(done: "subprocess.CompletedProcess[str]") -> Error:
    """The exception for a failed run: the first "bnfold: error:" line is the message."""
    code = done.returncode
    lines = [line.strip() for line in re.split(r"[\r\n]+", done.stderr) if line.strip()]
    errors = [line[len(_ERROR_PREFIX):] for line in lines if line.startswith(_ERROR_PREFIX)]
    if errors:
        message = errors[0]
    elif code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        message = f"bnfold was killed by signal {name}"
    elif lines:
        message = lines[-1]
    else:
        message = f"bnfold exited with status {code}"
    return Error(message, code, done.stderr, done.args)
