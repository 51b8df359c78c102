#!/usr/bin/env python3
"""Cross-check bnfold against onnx and onnxruntime on the fixtures in Fixtures/.

Usage (from the repository root, in a venv with Tests/CrossCheck/requirements.txt):

    python Tests/CrossCheck/crosscheck.py --bnfold .build/release/bnfold --fixtures Fixtures

For every entry of Fixtures/manifest.json:

* good fixtures
  - fold:     `bnfold IN -o OUT --json`; the JSON counts (found/folded/kept) and the
              reason ids of the "missed" remarks of fold-batchnorm/fold-batchnorm-forward
              (one verdict per BN) must match the manifest; so must other passes' missed
              reason ids when the entry has "missed_other" (e.g. fold-mul-add's).
  - checker:  onnx.checker.check_model(OUT path, full_check=False).
  - graph:    the output's main graph has exactly bn_total - folded BatchNormalization
              nodes (so none when all were folded), and the op counts of "ops_after".
  - ort:      if the manifest says onnxruntime can run the model, both models are run on
              the same seeded random inputs and every output must agree (tolerances below).
              If onnxruntime cannot run it but "ort_compat" is set, both models are first
              rewritten the same way (double/bfloat16 -> float32, BN-6 -> BN-7) and compared.
  - fidelity: `bnfold IN -o RT --passes none` must give a model equal to IN as a protobuf
              message (external data compared by reference after normalising `location`,
              and by content after loading it); byte-level differences are only reported.
* bad fixtures: `bnfold IN -o OUT` must exit 2, print exactly one non-empty line on stderr
  and leave nothing in the temporary directory.

One line is printed per check, then a final "N passed, N failed"; the exit code is 1 if any
check failed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

TIMEOUT = 300  # seconds per bnfold run
RTOL_FLOAT = 1e-5  # float32/float64: max|a-b| <= 1e-5 * max|a|

# float16: the folded weights/bias are rounded to fp16 once (relative error <= 2^-11 each),
# and the unfused model rounds the conv output to fp16 before the BN (error <= 2^-11 relative,
# then multiplied by |gamma/sigma|, which is at most ~2 for the fixtures) and rounds again after
# it. Summed over a 3x3xC_in dot product with partial cancellation the difference between the
# two stays a few fp16 epsilons (2^-10) of the output scale; we allow 8 epsilons:
# max|a-b| <= 8 * 2^-10 * max|a| (~0.8 %). A fold that uses the wrong epsilon, mean, sign or
# channel is off by far more than that (tens of percent) on these fixtures.
FP16_EPS = 2.0 ** -10
# bfloat16 (only checked via the float32 rewrite): folded weights are rounded to bf16 (8-bit
# mantissa, epsilon 2^-7) while the rewritten original applies the BN exactly in float32, so
# the same argument gives max|a-b| <= 8 * 2^-7 * max|a|.
BF16_EPS = 2.0 ** -7
ULP_FACTOR = 8


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, check, file, detail=""):
        self.passed += 1
        print(f"PASS {check} {file}" + (f": {detail}" if detail else ""), flush=True)

    def fail(self, check, file, detail):
        self.failed += 1
        print(f"FAIL {check} {file}: {detail}", flush=True)

    def note(self, check, file, detail):
        print(f"NOTE {check} {file}: {detail}", flush=True)


def run_bnfold(bnfold, args):
    return subprocess.run([bnfold, *args], capture_output=True, text=True, timeout=TIMEOUT)


def stderr_tail(p):
    lines = [x for x in p.stderr.strip().splitlines() if x.strip()]
    return lines[-1][:300] if lines else "(empty stderr)"


# ---------------------------------------------------------------------------------------------
# protobuf helpers
# ---------------------------------------------------------------------------------------------


def _is_repeated(field):
    # protobuf >= 6 has FieldDescriptor.is_repeated; `label` was removed in protobuf 7
    if hasattr(field, "is_repeated"):
        return field.is_repeated
    return field.label == field.LABEL_REPEATED


def walk_tensors(msg):
    """Every TensorProto inside msg (initializers, Constant attributes, sparse tensors,
    subgraphs, functions, ...), depth first."""
    if isinstance(msg, TensorProto):
        yield msg
        return
    for field, value in msg.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if _is_repeated(field):
            if field.message_type.GetOptions().map_entry:
                continue
            for v in value:
                yield from walk_tensors(v)
        else:
            yield from walk_tensors(value)


def normalise_external_locations(model):
    n = 0
    for t in walk_tensors(model):
        for e in t.external_data:
            if e.key == "location":
                e.value = "<external-data-file>"
                n += 1
    return n


def first_difference(a, b):
    from google.protobuf import text_format

    la = text_format.MessageToString(a).splitlines()
    lb = text_format.MessageToString(b).splitlines()
    for i, (x, y) in enumerate(zip(la, lb)):
        if x != y:
            return f"line {i + 1}: input {x.strip()[:120]!r} vs output {y.strip()[:120]!r}"
    if len(la) != len(lb):
        return f"text forms have {len(la)} vs {len(lb)} lines"
    return "messages differ only in unknown fields or field presence"


def main_graph_bn_count(path):
    m = onnx.load(str(path), load_external_data=False)
    return sum(n.op_type == "BatchNormalization" for n in m.graph.node)


# ---------------------------------------------------------------------------------------------
# onnxruntime comparison
# ---------------------------------------------------------------------------------------------

_ELEM_F32_COMPAT = {TensorProto.DOUBLE, TensorProto.BFLOAT16}


def ort_compat_rewrite(src: Path, dst: Path):
    """Rewrite a model so that onnxruntime's CPU provider can run it: double and bfloat16
    tensors/types become float32, and a default-domain opset < 7 is raised to 7 (BN-6 with
    is_test=1 has the BN-7 semantics; `is_test`/`consumed_inputs` are dropped). The same
    rewrite is applied to the input fixture and to bnfold's output, so comparing the two
    still checks the fold."""
    m = onnx.load(str(src))  # loads external data, the rewrite is saved inline

    def fix_tensor(t):
        if t.data_type in _ELEM_F32_COMPAT:
            arr = numpy_helper.to_array(t).astype(np.float32)
            name = t.name
            t.CopyFrom(numpy_helper.from_array(arr, name))

    def fix_type(tp):
        if tp.HasField("tensor_type") and tp.tensor_type.elem_type in _ELEM_F32_COMPAT:
            tp.tensor_type.elem_type = TensorProto.FLOAT

    def fix_graph(g):
        for t in g.initializer:
            fix_tensor(t)
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            fix_type(vi.type)
        for node in g.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    fix_tensor(a.t)
                elif a.type == onnx.AttributeProto.GRAPH:
                    fix_graph(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sg in a.graphs:
                        fix_graph(sg)
            if node.op_type == "Cast":
                for a in node.attribute:
                    if a.name == "to" and a.i in _ELEM_F32_COMPAT:
                        a.i = TensorProto.FLOAT
            if node.op_type == "BatchNormalization" and node.domain in ("", "ai.onnx"):
                keep = [a for a in node.attribute if a.name not in ("is_test", "consumed_inputs")]
                if len(keep) != len(node.attribute):
                    del node.attribute[:]
                    node.attribute.extend(keep)

    fix_graph(m.graph)
    for op in m.opset_import:
        if op.domain in ("", "ai.onnx") and op.version < 7:
            op.version = 7
    m.ir_version = max(m.ir_version, 3)
    onnx.save_model(m, str(dst))
    return dst


def random_feeds(sess, seed, bool_value):
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]  # symbolic dims = 1
        ty = i.type
        if ty == "tensor(bool)":
            feeds[i.name] = np.full(shape, bool_value, dtype=bool)
        elif ty == "tensor(float16)":
            feeds[i.name] = rng.standard_normal(shape).astype(np.float16)
        elif ty == "tensor(double)":
            feeds[i.name] = rng.standard_normal(shape).astype(np.float64)
        elif ty == "tensor(float)":
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
        else:
            raise RuntimeError(f"no random input for {i.name} of type {ty}")
    return feeds


def compare_outputs(name, a, b, eps_kind):
    """Returns (ok, detail) for one output pair; a from the input model, b from bnfold's."""
    if a.shape != b.shape:
        return False, f"{name}: shape {a.shape} vs {b.shape}"
    if a.dtype != b.dtype:
        return False, f"{name}: dtype {a.dtype} vs {b.dtype}"
    if not np.issubdtype(a.dtype, np.floating):
        if np.array_equal(a, b):
            return True, f"{name}: equal"
        return False, f"{name}: non-float output differs"
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    na, nb = np.isnan(a64), np.isnan(b64)
    if not np.array_equal(na, nb):
        return False, f"{name}: NaN positions differ ({na.sum()} vs {nb.sum()} NaNs)"
    ia, ib = np.isinf(a64), np.isinf(b64)
    if not np.array_equal(ia, ib) or not np.array_equal(a64[ia], b64[ib]):
        return False, f"{name}: infinities differ ({ia.sum()} vs {ib.sum()})"
    fin = np.isfinite(a64)
    if not fin.any():
        return True, f"{name}: no finite values, NaN/inf positions equal"
    scale = float(np.max(np.abs(a64[fin])))
    err = float(np.max(np.abs(a64[fin] - b64[fin])))
    if eps_kind == "fp16":
        tol = ULP_FACTOR * FP16_EPS * scale
    elif eps_kind == "bf16":
        tol = ULP_FACTOR * BF16_EPS * scale
    else:
        tol = RTOL_FLOAT * scale
    extra = f", {int(na.sum())} NaN" if na.any() else ""
    extra += f", {int(ia.sum())} inf" if ia.any() else ""
    detail = f"{name}: max|a-b|={err:.3g} tol={tol:.3g} (max|a|={scale:.3g}{extra})"
    return err <= tol, detail


def model_eps_kind(path):
    m = onnx.load(str(path), load_external_data=False)
    kinds = {vi.type.tensor_type.elem_type for vi in list(m.graph.input) + list(m.graph.output)}
    if TensorProto.BFLOAT16 in kinds:
        return "bf16"
    if TensorProto.FLOAT16 in kinds:
        return "fp16"
    return "float"


def ort_compare(in_path: Path, out_path: Path, eps_kind: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    # keep onnxruntime from rewriting either graph (it has its own Conv+BN fusion)
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sa = ort.InferenceSession(str(in_path), so, providers=["CPUExecutionProvider"])
    sb = ort.InferenceSession(str(out_path), so, providers=["CPUExecutionProvider"])
    names_a = [o.name for o in sa.get_outputs()]
    names_b = [o.name for o in sb.get_outputs()]
    if names_a != names_b:
        return False, [f"output names differ: {names_a} vs {names_b}"]
    inputs_a = {i.name: (i.type, i.shape) for i in sa.get_inputs()}
    inputs_b = {i.name: (i.type, i.shape) for i in sb.get_inputs()}
    if inputs_a != inputs_b:
        return False, [f"inputs differ: {inputs_a} vs {inputs_b}"]
    has_bool = any(i.type == "tensor(bool)" for i in sa.get_inputs())
    ok_all, details = True, []
    for bool_value in ([True, False] if has_bool else [True]):
        feeds = random_feeds(sa, 12345, bool_value)
        ra = sa.run(None, feeds)
        rb = sb.run(None, feeds)
        for name, a, b in zip(names_a, ra, rb):
            ok, d = compare_outputs(name, np.asarray(a), np.asarray(b), eps_kind)
            ok_all &= ok
            details.append((f"[cond={bool_value}] " if has_bool else "") + d)
    return ok_all, details


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------


# The passes that give each BatchNormalization its verdict, and the applied
# reason ids that mean "this BN was folded" (fold-mul-add's applied remarks
# fold Mul/Add nodes, not BNs).
BN_PASSES = {"fold-batchnorm", "fold-batchnorm-forward"}
BN_FOLDED = {"ConvBatchNormFolded", "ConvTransposeBatchNormFolded", "GemmBatchNormFolded", "MatMulBatchNormFolded",
             "BatchNormConvFolded", "BatchNormGemmFolded", "BatchNormMatMulFolded"}


def check_fold(res: Results, bnfold, fixtures: Path, e, tmp: Path):
    f = e["file"]
    src = fixtures / f
    out = tmp / "out.onnx"
    p = run_bnfold(bnfold, [str(src), "-o", str(out), "--json"])
    if p.returncode != 0:
        res.fail("fold", f, f"exit {p.returncode}, stderr: {stderr_tail(p)}")
        return
    try:
        report = json.loads(p.stdout)
        bn = report["batchnorm"]
        found, folded, kept = int(bn["found"]), int(bn["folded"]), int(bn["kept"])
        all_remarks = report.get("remarks", [])
        # One verdict per BatchNormalization, from the two passes that fold BNs.
        remarks = [r for r in all_remarks if r.get("pass") in BN_PASSES]
    except Exception as ex:  # noqa: BLE001
        res.fail("fold", f, f"cannot read --json output ({ex}): {p.stdout[:200]!r}")
        return
    reasons = collections.Counter(r.get("reason") for r in remarks if r.get("kind") == "missed")
    applied = sum(1 for r in remarks if r.get("kind") == "applied" and r.get("reason") in BN_FOLDED)
    other_missed = collections.Counter(r.get("reason") for r in all_remarks
                                       if r.get("kind") == "missed" and r.get("pass") not in BN_PASSES)
    want_kept = collections.Counter(e["kept"])
    problems = []
    sub = int(e.get("subgraph_bn", 0))
    if sub and found == e["bn_total"] + sub:
        # bnfold counts BNs inside subgraphs too: the main-graph verdicts must still hold,
        # the subgraph BNs may be folded or kept.
        if not (e["folded"] <= folded <= e["folded"] + sub):
            problems.append(f"folded {folded}, expected {e['folded']}..{e['folded'] + sub}")
        if any(reasons[k] < v for k, v in want_kept.items()):
            problems.append(f"kept reasons {dict(reasons)} do not include {dict(want_kept)}")
        mode = f" (counts include {sub} subgraph BNs)"
    else:
        if found != e["bn_total"]:
            problems.append(f"found {found}, expected {e['bn_total']}")
        if folded != e["folded"]:
            problems.append(f"folded {folded}, expected {e['folded']}")
        if reasons != want_kept:
            problems.append(f"kept reasons {dict(reasons)}, expected {dict(want_kept)}")
        mode = ""
    if folded + kept != found:
        problems.append(f"folded {folded} + kept {kept} != found {found}")
    if sum(reasons.values()) != kept:
        problems.append(f"{sum(reasons.values())} missed remarks for {kept} kept BNs")
    if applied != folded:
        problems.append(f"{applied} applied remarks for {folded} folded BNs")
    if "missed_other" in e and other_missed != collections.Counter(e["missed_other"]):
        problems.append(f"other passes' missed reasons {dict(other_missed)}, expected {e['missed_other']}")
    if problems:
        res.fail("fold", f, "; ".join(problems))
    else:
        res.ok("fold", f, f"found {found}, folded {folded}, kept {dict(reasons) or 0}{mode}")

    if not out.exists():
        res.fail("checker", f, "no output file written")
        return
    try:
        onnx.checker.check_model(str(out), full_check=False)
        res.ok("checker", f)
    except Exception as ex:  # noqa: BLE001
        res.fail("checker", f, str(ex).splitlines()[0][:300])

    try:
        left = main_graph_bn_count(out)
        want_left = e["bn_total"] - e["folded"]
        ops = collections.Counter(n.op_type for n in onnx.load(str(out), load_external_data=False).graph.node)
        wrong_ops = {op: ops.get(op, 0) for op, n in e.get("ops_after", {}).items() if ops.get(op, 0) != n}
        if left == want_left and not wrong_ops:
            res.ok("graph", f, f"{left} BatchNormalization left in the main graph"
                   + (f"; op counts {e['ops_after']}" if "ops_after" in e else ""))
        else:
            res.fail("graph", f, f"{left} BatchNormalization left in the main graph, expected {want_left}"
                     + (f"; op counts {wrong_ops}, expected {e['ops_after']}" if wrong_ops else ""))
    except Exception as ex:  # noqa: BLE001
        res.fail("graph", f, f"cannot load output: {ex}")
        return

    if e.get("ort") or e.get("ort_compat"):
        check = "ort" if e.get("ort") else "ort-compat"
        try:
            a_path, b_path, kind = src, out, model_eps_kind(src)
            if not e.get("ort"):
                a_path = ort_compat_rewrite(src, tmp / "compat_in.onnx")
                b_path = ort_compat_rewrite(out, tmp / "compat_out.onnx")
            ok, details = ort_compare(a_path, b_path, kind)
            (res.ok if ok else res.fail)(check, f, "; ".join(details))
        except Exception as ex:  # noqa: BLE001
            res.fail(check, f, f"{type(ex).__name__}: {str(ex).splitlines()[0][:300] if str(ex) else ''}")


def check_fidelity(res: Results, bnfold, fixtures: Path, e, tmp: Path):
    f = e["file"]
    src = fixtures / f
    out = tmp / "rt.onnx"
    p = run_bnfold(bnfold, [str(src), "-o", str(out), "--passes", "none"])
    if p.returncode != 0:
        res.fail("fidelity", f, f"exit {p.returncode}, stderr: {stderr_tail(p)}")
        return
    try:
        a = onnx.load(str(src), load_external_data=False)
        b = onnx.load(str(out), load_external_data=False)
    except Exception as ex:  # noqa: BLE001
        res.fail("fidelity", f, f"cannot load round-tripped model: {ex}")
        return
    n_ext_a = normalise_external_locations(a)
    n_ext_b = normalise_external_locations(b)
    if a != b:
        res.fail("fidelity", f, "round trip changed the model: " + first_difference(a, b))
        return
    detail = "equal as protobuf messages"
    if n_ext_a or n_ext_b:
        try:
            fa = onnx.load(str(src))
            fb = onnx.load(str(out))
        except Exception as ex:  # noqa: BLE001
            res.fail("fidelity", f, f"cannot load external data: {ex}")
            return
        if fa != fb:
            res.fail("fidelity", f, "external tensor data differs: " + first_difference(fa, fb))
            return
        detail += f", {n_ext_a} external tensors with equal bytes"
    res.ok("fidelity", f, detail)
    a_bytes = onnx.load(str(src), load_external_data=False).SerializeToString()
    b_bytes = onnx.load(str(out), load_external_data=False).SerializeToString()
    if src.read_bytes() != out.read_bytes():
        why = "external data locations differ" if n_ext_a else (
            "serialized field order differs" if a_bytes != b_bytes else "byte encoding differs")
        res.note("fidelity-bytes", f, f"files are not byte-identical ({why}); messages are equal")


def check_bad(res: Results, bnfold, fixtures: Path, e, tmp: Path):
    f = e["file"]
    out = tmp / "out.onnx"
    p = run_bnfold(bnfold, [str(fixtures / f), "-o", str(out)])
    problems = []
    want = int(e.get("expect_exit", 2))
    if p.returncode != want:
        problems.append(f"exit {p.returncode}, expected {want}")
    lines = p.stderr.splitlines()
    if len(lines) != 1 or not lines[0].strip():
        problems.append(f"stderr has {len(lines)} lines, expected exactly one non-empty line: {p.stderr[:200]!r}")
    left = sorted(x.name for x in tmp.iterdir())
    if left:
        problems.append(f"files left in the output directory: {left}")
    if problems:
        res.fail("bad", f, "; ".join(problems))
    else:
        res.ok("bad", f, f"exit {p.returncode}: {lines[0].strip()[:120]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bnfold", required=True, help="path to the bnfold binary")
    ap.add_argument("--fixtures", default="Fixtures", help="fixtures directory (with manifest.json)")
    ap.add_argument("--only", default=None, help="only fixtures whose file name contains this string")
    args = ap.parse_args()

    bnfold = os.path.abspath(args.bnfold)
    fixtures = Path(args.fixtures).resolve()
    manifest = json.loads((fixtures / "manifest.json").read_text())
    res = Results()
    if not os.access(bnfold, os.X_OK):
        res.fail("setup", bnfold, "bnfold binary not found or not executable")
    else:
        for e in manifest:
            if args.only and args.only not in e["file"]:
                continue
            checks = [check_bad] if "expect_exit" in e else [check_fold, check_fidelity]
            for check in checks:
                with tempfile.TemporaryDirectory(prefix="bnfold-cc-") as d:
                    try:
                        check(res, bnfold, fixtures, e, Path(d))
                    except subprocess.TimeoutExpired:
                        res.fail(check.__name__.removeprefix("check_"), e["file"], f"bnfold timed out after {TIMEOUT}s")
                    except Exception:  # noqa: BLE001
                        res.fail(check.__name__.removeprefix("check_"), e["file"],
                                 "crosscheck error: " + traceback.format_exc().strip().splitlines()[-1])
    print(f"{res.passed} passed, {res.failed} failed")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
