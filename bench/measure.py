#!/usr/bin/env python3
"""Times commands on one model and reports wall time and peak RSS (`make bench`).

    measure.py bench --model M --bnfold BIN --scratch DIR [--runs N]
        The report: every command gets one warm-up run (so the page cache is
        warm for everyone) and N measured runs; prints the machine, the file
        size and a table with the median wall time and the peak RSS.

    measure.py wrap [--stdout PATH] [--fsync PATH] -- CMD...
        One measurement, in a fresh process: runs CMD, prints one JSON line
        {"wall": s, "maxrss_kib": n, "rc": n}. RUSAGE_CHILDREN's ru_maxrss is
        the largest RSS of any child ever waited for, so each measurement gets
        its own wrapper. The child is a copy of the wrapper until it execs and
        Linux counts that too, so the wrapper's RSS (~10-15 MiB) is a floor
        under every figure; `bench` measures it with `true` and prints it.

    measure.py ort-optimize IN OUT
        onnxruntime's offline optimizer: ORT_ENABLE_BASIC (which includes
        Conv+BatchNormalization fusion) and optimized_model_filepath=OUT.

Exits 0 when the benchmark ran, whether or not the targets were met; non-zero
only if a command failed.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

TIME_TARGET = 3.0  # bnfold fold+write wall time <= 3x cat's
RSS_TARGET = 1.25  # bnfold peak RSS <= 1.25x the model file
MIB = 1024 * 1024


# ---------------------------------------------------------------- wrap


def maxrss_kib(usage):
    # Linux and the BSDs report KiB, macOS bytes.
    return usage.ru_maxrss // 1024 if sys.platform == "darwin" else usage.ru_maxrss


def cmd_wrap(args):
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    out = open(args.stdout, "wb") if args.stdout else subprocess.DEVNULL
    err = open(args.stderr, "wb") if args.stderr else None
    try:
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err).returncode
        if args.fsync and rc == 0:
            fd = os.open(args.fsync, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        wall = time.perf_counter() - t0
    finally:
        for f in (out, err):
            if f not in (None, subprocess.DEVNULL):
                f.close()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"wall": wall, "maxrss_kib": maxrss_kib(usage), "rc": rc}))


# ---------------------------------------------------------------- ort-optimize


def cmd_ort_optimize(args):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = args.output
    if os.path.getsize(args.input) >= 1800 * MIB:
        # Protobuf cannot hold 2 GiB: have ORT write the initializers externally.
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                    os.path.basename(args.output) + ".data")
        so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    ort.InferenceSession(args.input, so, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- bench


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        try:
            cpu = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                 capture_output=True, text=True).stdout.strip() or cpu
        except OSError:
            pass
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:
        ncpu = os.cpu_count()
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return cpu, ncpu, mem


def output_files(path):
    """OUT and whatever a writer may put next to it (external data, temporaries)."""
    d, base = os.path.split(path)
    return [os.path.join(d, n) for n in os.listdir(d or ".") if n.startswith(base) or n.startswith("." + base)]


def clean(paths):
    for p in paths:
        for f in output_files(p):
            os.remove(f)
    # Let the previous run's dirty pages and metadata reach the disk now, not
    # during the next measurement.
    if hasattr(os, "sync"):
        os.sync()


def measure_once(spec, scratch, keep_stdout=False):
    log_out = os.path.join(scratch, "stdout.log")
    log_err = os.path.join(scratch, "stderr.log")
    clean([spec["out"]])
    wrap = [sys.executable, os.path.abspath(__file__), "wrap",
            "--stdout", spec.get("stdout_to") or log_out, "--stderr", log_err]
    if spec.get("fsync"):
        wrap += ["--fsync", spec["fsync"]]
    res = subprocess.run(wrap + ["--"] + spec["cmd"], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"wrapper failed for {spec['label']}: {res.stderr.strip()}")
    r = json.loads(res.stdout.strip().splitlines()[-1])
    if r["rc"] != 0:
        with open(log_err, errors="replace") as f:
            err = f.read().strip()
        raise RuntimeError(f"{spec['label']} exited with {r['rc']}:\n{err}")
    if keep_stdout and not spec.get("stdout_to"):
        with open(log_out, errors="replace") as f:
            r["stdout"] = f.read()
    return r


def count_batchnorm(path):
    """BatchNormalization nodes left in a written model (None if unreadable)."""
    try:
        import onnx

        m = onnx.load(path, load_external_data=False)
        return sum(n.op_type == "BatchNormalization" for n in m.graph.node)
    except Exception:
        return None


def fmt_table(header, rows, right):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def line(r):
        cells = [(str(c).rjust(w) if right[i] else str(c).ljust(w)) for i, (c, w) in enumerate(zip(r, widths))]
        return " | ".join(cells).rstrip()

    sep = "-+-".join("-" * w for w in widths)
    return "\n".join([line(header), sep] + [line(r) for r in rows])


def cmd_bench(args):
    model = os.path.abspath(args.model)
    scratch = os.path.abspath(args.scratch)
    os.makedirs(scratch, exist_ok=True)
    size = os.path.getsize(model)
    bnfold = os.path.abspath(args.bnfold)
    py = sys.executable
    here = os.path.abspath(__file__)

    cpu, ncpu, mem = machine()
    version = subprocess.run([bnfold, "--version"], capture_output=True, text=True).stdout.strip()
    load = ""
    if hasattr(os, "getloadavg"):
        load = ", load average %.2f %.2f %.2f" % os.getloadavg()
    print(f"machine : {cpu}, nproc {ncpu}" + (f", {mem / 2**30:.1f} GiB RAM" if mem else "") + load)
    print(f"system  : {platform.system()} {platform.release()}, Python {platform.python_version()}")
    print(f"bnfold  : {bnfold} ({version})")
    print(f"model   : {model}")
    print(f"size    : {size:,} bytes ({size / MIB:.1f} MiB)" + ("" if size >= 500e6 else "  (under the 500 MB the benchmark is meant for)"))
    print(f"runs    : 1 warm-up + {args.runs} measured per command; wall = median, RSS = max over measured runs")
    print(flush=True)

    copy = os.path.join(scratch, "copy.onnx")
    specs = [
        {"label": "cat IN > copy", "kind": "ref", "cmd": ["cat", model], "stdout_to": copy, "out": copy},
        {"label": "cat IN > copy; fsync copy", "kind": "extra", "cmd": ["cat", model], "stdout_to": copy,
         "out": copy, "fsync": copy},
        {"label": "bnfold IN -o OUT", "kind": "target", "cmd": [bnfold, model, "-o", os.path.join(scratch, "folded.onnx")],
         "out": os.path.join(scratch, "folded.onnx"), "folds": True},
        {"label": "bnfold IN -o OUT --passes none", "kind": "target",
         "cmd": [bnfold, model, "-o", os.path.join(scratch, "none.onnx"), "--passes", "none"],
         "out": os.path.join(scratch, "none.onnx")},
    ]
    if not args.no_ort:
        specs.append({"label": "onnxruntime ORT_ENABLE_BASIC (python)", "kind": "extra",
                      "cmd": [py, here, "ort-optimize", model, os.path.join(scratch, "ort.onnx")],
                      "out": os.path.join(scratch, "ort.onnx"), "folds": True})

    # What the wrapper itself adds to every RSS figure.
    floor = measure_once({"label": "true", "cmd": ["true"], "out": os.path.join(scratch, "true.out")}, scratch)
    floor = floor["maxrss_kib"] * 1024

    results = []
    notes = []
    for spec in specs:
        print(f"  {spec['label']}: warm-up", end="", flush=True)
        warm = measure_once(spec, scratch, keep_stdout=True)
        if spec.get("folds"):
            left = count_batchnorm(spec["out"])
            if left is not None:
                notes.append(f"{spec['label']}: {left} BatchNormalization node(s) left in the output")
        if spec["label"] == "bnfold IN -o OUT" and warm.get("stdout"):
            notes.append("bnfold report (warm-up run):\n" + "\n".join("    " + l for l in warm["stdout"].rstrip().splitlines()))
        runs = []
        for i in range(args.runs):
            r = measure_once(spec, scratch)
            runs.append(r)
            print(f", {r['wall']:.2f}s", end="", flush=True)
        print(flush=True)
        clean([spec["out"]])
        results.append((spec, statistics.median(r["wall"] for r in runs), max(r["maxrss_kib"] for r in runs) * 1024))

    cat_wall = results[0][1]
    header = ["command", "wall s", "peak RSS MiB", "x cat time", "RSS / file", "target met"]
    right = [False, True, True, True, True, False]
    rows, missed = [], []
    for spec, wall, rss in results:
        t_ratio, m_ratio = wall / cat_wall, rss / size
        if spec["kind"] == "target":
            miss = []
            if t_ratio > TIME_TARGET:
                miss.append("time")
            if m_ratio > RSS_TARGET:
                miss.append("RSS")
            met = "yes" if not miss else "MISSED (" + ", ".join(miss) + ")"
            missed += [f"{spec['label']}: {m}" for m in miss]
        elif spec["kind"] == "ref":
            met = "(reference)"
        else:
            met = "(extra reference)"
        rows.append([spec["label"], f"{wall:.3f}", f"{rss / MIB:.0f}", f"{t_ratio:.2f}", f"{m_ratio:.2f}", met])

    print()
    print(fmt_table(header, rows, right))
    print()
    print(f"targets (bnfold rows): wall <= {TIME_TARGET:g}x cat's time; peak RSS <= {RSS_TARGET:g}x the file size "
          f"({RSS_TARGET * size / MIB:.0f} MiB)")
    print("extra references are not targets: the fsync row shows what making the copy durable costs (bnfold")
    print("  fsyncs its output before renaming it into place); onnxruntime's RSS includes Python and the library.")
    print(f"RSS floor: a child's figure includes the measuring wrapper's RSS until exec; `true` measures "
          f"{floor / MIB:.0f} MiB.")
    for n in notes:
        print(n)
    print()
    if missed:
        print("MISSED: " + "; ".join(missed))
    else:
        print("all targets met")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bench")
    b.add_argument("--model", required=True)
    b.add_argument("--bnfold", required=True)
    b.add_argument("--scratch", required=True, help="directory for the outputs (emptied of them afterwards)")
    b.add_argument("--runs", type=int, default=3)
    b.add_argument("--no-ort", action="store_true", help="skip the onnxruntime reference")

    w = sub.add_parser("wrap")
    w.add_argument("--stdout")
    w.add_argument("--stderr")
    w.add_argument("--fsync")
    w.add_argument("cmd", nargs=argparse.REMAINDER)

    o = sub.add_parser("ort-optimize")
    o.add_argument("input")
    o.add_argument("output")

    args = ap.parse_args()
    if args.command == "wrap":
        cmd_wrap(args)
    elif args.command == "ort-optimize":
        cmd_ort_optimize(args)
    else:
        try:
            sys.exit(cmd_bench(args))
        except RuntimeError as e:
            print(f"\nbench: error: {e}", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
