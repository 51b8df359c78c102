#!/usr/bin/env python3
"""Run the ONNX backend node suite through bnfold's reference runtime.

Usage (from the repository root, in the cross-check venv, after
`swift build -c release --product RefRun`):

    .venv-crosscheck/bin/python Tests/Conformance/conformance.py --refrun .build/release/RefRun

The node test cases come from the installed onnx wheel
(`onnx.backend.test.case.node.collect_testcases()`); only cases whose every
node is in the default (ai.onnx) domain count. Each case's model, with its
inputs stored as initializers of the same names, is written to a scratch
directory and run with `RefRun IN OUT`; the outputs are compared with the
expected ones at the suite's tolerances (rtol 1e-3, atol 1e-7, as
numpy.testing.assert_allclose; NaN equals NaN; integer and bool outputs
exactly; the element type and shape must match).

Each case is one of:
  pass         the outputs match;
  wrong        RefRun ran it but an output differs;
  unsupported  RefRun refused it (an operator, attribute value or element
               type it does not support), or the case needs something the
               runtime has no notion of (sequences, optionals, strings);
  error        RefRun failed otherwise (crash, timeout, other error).

Prints one line per operator (pass/wrong/unsupported/error), then a total
with the pass percentage. Exit code 1 when a case listed in
Tests/Conformance/expected-pass.txt no longer passes, or when a case is
wrong and not listed (with a reason) in Tests/Conformance/known-wrong.txt.
`--write-baseline` rewrites expected-pass.txt with the cases that pass now.
`--verbose` prints every case that does not pass, with the reason.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.case import node as node_cases

HERE = Path(__file__).resolve().parent
BASELINE = HERE / "expected-pass.txt"
KNOWN_WRONG = HERE / "known-wrong.txt"
DEFAULT_DOMAINS = ("", "ai.onnx")
UNSUPPORTED = re.compile(r"not supported|does not support|unsupported|only inference", re.IGNORECASE)


def read_list(path: Path) -> dict[str, str]:
    """Case name -> the rest of the line (a reason), skipping blank lines and # comments."""
    entries: dict[str, str] = {}
    if not path.exists():
        return entries
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, reason = line.partition(" ")
        entries[name] = reason.strip()
    return entries


def operator_of(case, base_ops: dict[str, str]) -> str:
    """The operator a case tests: its node's, or for an expanded function the function's."""
    nodes = case.model.graph.node
    base = re.sub(r"_expanded(_ver\d+)?$", "", case.name)
    if base != case.name and base in base_ops:
        return base_ops[base]
    return nodes[0].op_type if len(nodes) == 1 else base_ops.get(base, "(graph)")


def is_default_domain(model: onnx.ModelProto) -> bool:
    def nodes_ok(graph) -> bool:
        for n in graph.node:
            if n.domain not in DEFAULT_DOMAINS:
                return False
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH and not nodes_ok(a.g):
                    return False
                if a.type == onnx.AttributeProto.GRAPHS and not all(nodes_ok(g) for g in a.graphs):
                    return False
        return True
    return not model.functions and nodes_ok(model.graph)


def as_tensor(value, name: str):
    """A TensorProto for an input, or None when it is not a plain tensor."""
    if isinstance(value, onnx.TensorProto):
        t = onnx.TensorProto()
        t.CopyFrom(value)
        t.name = name
        return t
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        if array.dtype.kind in "OSUc":
            return None
        try:
            return numpy_helper.from_array(array, name)
        except Exception:  # noqa: BLE001 - a dtype onnx cannot store: not a plain tensor
            return None
    return None


def compare(want, have, rtol: float, atol: float) -> str:
    """Empty when `have` matches `want`, else why not."""
    if isinstance(want, onnx.TensorProto):
        want = numpy_helper.to_array(want)
    if isinstance(want, np.generic):
        want = np.asarray(want)
    if not isinstance(want, np.ndarray) or want.dtype.kind in "OSU":
        return "expected output is not a tensor"
    if have.dtype != want.dtype:
        return f"element type {have.dtype}, expected {want.dtype}"
    if have.shape != want.shape:
        return f"shape {list(have.shape)}, expected {list(want.shape)}"
    if want.dtype.kind in "biu":
        if not np.array_equal(have, want):
            bad = int(np.sum(have != want))
            return f"{bad} of {want.size} values differ"
        return ""
    a, b = have.astype(np.float64), want.astype(np.float64)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if not np.array_equal(nan_a, nan_b):
        return "NaN in different places"
    a, b = np.where(nan_a, 0, a), np.where(nan_b, 0, b)
    with np.errstate(invalid="ignore"):
        same_inf = (a == b)
        err = np.abs(a - b)
        bound = atol + rtol * np.abs(b)
        bad = ~(same_inf | (err <= bound))
    if np.any(bad):
        i = int(np.argmax(bad.ravel()))
        return f"{int(np.sum(bad))} of {want.size} values differ (e.g. {a.ravel()[i]!r} vs expected {b.ravel()[i]!r})"
    return ""


def run_case(case, refrun: str, scratch: Path, timeout: float) -> tuple[str, str]:
    """(status, reason) for one case."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    inputs, outputs = case.data_sets[0]
    present = [n for n in model.graph.input]
    if len(present) < len(inputs):
        return "unsupported", "inputs without a declared graph input"
    for value, info in zip(inputs, present):
        t = as_tensor(value, info.name)
        if t is None or not info.type.HasField("tensor_type"):
            return "unsupported", f"input '{info.name}' is not a plain numeric tensor"
        if t.data_type == onnx.TensorProto.STRING:
            return "unsupported", "string tensors"
        model.graph.initializer.append(t)
    for info in model.graph.output:
        if not info.type.HasField("tensor_type"):
            return "unsupported", f"output '{info.name}' is not a tensor"
    directory = scratch / case.name
    directory.mkdir(parents=True, exist_ok=True)
    src, dst = directory / "model.onnx", directory / "outputs.onnx"
    onnx.save(model, src)
    try:
        proc = subprocess.run([refrun, str(src), str(dst)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "error", f"timeout after {timeout:g} s"
    if proc.returncode != 0:
        message = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        if proc.returncode < 0:
            return "error", f"killed by signal {-proc.returncode} {message}".strip()
        if UNSUPPORTED.search(message):
            return "unsupported", message
        return "error", f"exit {proc.returncode}: {message}"
    got = {t.name: t for t in onnx.load(str(dst)).graph.initializer}
    for info, want in zip(model.graph.output, outputs):
        if info.name not in got:
            return "wrong", f"output '{info.name}' missing"
        try:
            have = numpy_helper.to_array(got[info.name])
        except Exception as error:  # noqa: BLE001 - report the case, go on
            return "error", f"output '{info.name}' unreadable: {error}"
        why = compare(want, have, case.rtol, case.atol)
        if why:
            return "wrong", f"output '{info.name}': {why}"
    return "pass", ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refrun", required=True, help="the RefRun executable (swift build -c release --product RefRun)")
    parser.add_argument("--filter", default="", help="only cases whose name contains this")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per case")
    parser.add_argument("--verbose", action="store_true", help="print every case that does not pass, with the reason")
    parser.add_argument("--write-baseline", action="store_true", help="rewrite expected-pass.txt with the passing cases")
    parser.add_argument("--scratch", help="keep the written models here (default: a temporary directory)")
    args = parser.parse_args()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators' own overflow warnings
        cases = node_cases.collect_testcases()
    base_ops = {c.name: c.model.graph.node[0].op_type for c in cases if len(c.model.graph.node) == 1}
    cases = [c for c in cases if is_default_domain(c.model) and args.filter in c.name]
    cases.sort(key=lambda c: c.name)

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(args.scratch) if args.scratch else Path(tmp)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            def one(c):
                try:
                    return run_case(c, args.refrun, scratch, args.timeout)
                except Exception as error:  # noqa: BLE001 - report the case, go on
                    return "error", f"{type(error).__name__}: {error}"
            results = list(pool.map(one, cases))

    kinds = ("pass", "wrong", "unsupported", "error")
    per_op: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    status: dict[str, tuple[str, str]] = {}
    for c, (s, why) in zip(cases, results):
        per_op[operator_of(c, base_ops)][s] += 1
        status[c.name] = (s, why)

    width = max((len(op) for op in per_op), default=8)
    print(f"{'operator':<{width}}  {'pass':>5} {'wrong':>5} {'unsup':>5} {'error':>5}")
    for op in sorted(per_op):
        n = per_op[op]
        print(f"{op:<{width}}  {n['pass']:>5} {n['wrong']:>5} {n['unsupported']:>5} {n['error']:>5}")
    totals = collections.Counter(s for s, _ in status.values())
    total = len(status)
    percent = 100.0 * totals["pass"] / total if total else 0.0
    print(f"total: {total} cases, " + ", ".join(f"{totals[k]} {k}" for k in kinds)
          + f" ({percent:.1f}% pass)")

    if args.verbose:
        for name, (s, why) in sorted(status.items()):
            if s != "pass":
                print(f"{s:<11} {name}: {why}")

    if args.write_baseline:
        if args.filter:
            print("--write-baseline needs the whole suite (no --filter)", file=sys.stderr)
            return 2
        passing = sorted(n for n, (s, _) in status.items() if s == "pass")
        BASELINE.write_text("# Node-suite cases the reference runtime passes (Tests/Conformance/conformance.py\n"
                            "# --write-baseline); a case listed here that stops passing fails `make conformance`.\n"
                            + "".join(f"{n}\n" for n in passing))
        print(f"wrote {len(passing)} cases to {BASELINE.relative_to(Path.cwd()) if BASELINE.is_relative_to(Path.cwd()) else BASELINE}")

    failures = []
    for name in read_list(BASELINE):
        if name in status and status[name][0] != "pass":
            failures.append(f"regressed: {name} ({status[name][0]}: {status[name][1]})")
    known_wrong = read_list(KNOWN_WRONG)
    for name, (s, why) in sorted(status.items()):
        if s == "wrong" and not known_wrong.get(name):
            failures.append(f"wrong and not in known-wrong.txt: {name} ({why})")
    for line in failures:
        print(line)
    # For make test's summary: the cases this suite asserts (each listed
    # case still passes, no unlisted wrong result).
    held = sum(1 for name in read_list(BASELINE) if name in status and status[name][0] == "pass")
    print(f"conformance: {held} passed, {len(failures)} failed (of the expected-pass list; "
          f"{totals['pass']} of {total} cases pass)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
