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

    measure.py runtime --model A --bnfold BIN --refrun BIN --scratch DIR [--infer-runs N] [--runs N]
        The reference-runtime section (ResNet-50-shaped A, bench/make_resnet50.py):
        folds A into B with bnfold, then (1) ms per inference (median of N after
        one warm-up, same fixed input) of RefRun against onnxruntime, each with
        nproc threads and with 1; (2) whole-process wall time (median) and peak
        RSS of `bnfold check A B` against bench/check_ort.py A B.

    measure.py ort-time MODEL --runs N --threads T
        onnxruntime's ms per inference the way RefRun --time measures it
        (default session options but intra_op_num_threads = T); one JSON line.

    measure.py chains --small 4K --large 64K --identity ID --bnfold B --scratch DIR
        The graph-core figures (issue 13) on bench/make_chain.py's models:
        64k vs 4k verified fold, --no-verify / verified / inspect vs
        --passes none on 64k, 4k against onnxruntime's optimizer, the
        Identity chain against its --passes none, README's example pass
        on the Identity chain (--example-pass BIN); medians of --runs.

    measure.py many --model M --bnfold B --scratch DIR [--runs N]
        Issue 13's many-initializers target on bench/make_many_initializers.py's
        model (1,000,000 tiny initializers): peak RSS of `bnfold --passes none`
        against the file size (target <= 10x), the default fold's, and beside
        them `cat M > /dev/null` and Python's `onnx.load(M)` measured in the
        same run; medians of --runs.

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
import threading
import time

TIME_TARGET = 3.0  # bnfold fold+write wall time <= 3x cat's
RSS_TARGET = 1.25  # bnfold peak RSS <= 1.25x the model file
MIB = 1024 * 1024


# ---------------------------------------------------------------- wrap



def measured_runs(spec, scratch, count):
    """`count` measurements of one command, printed as they come; its output is removed after."""
    runs = []
    for _ in range(count):
        r = measure_once(spec, scratch)
        runs.append(r)
        print(f", {r['wall']:.2f}s", end="", flush=True)
    print(flush=True)
    clean([spec["out"]])
    return runs


def verdict(spec, t_ratio, m_ratio, rss_target, missed):
    """The "target met" cell of a row; appends missed targets to `missed`."""
    if spec["kind"] == "ref":
        return "(reference)"
    if spec["kind"] != "target":
        return "(extra reference)"
    miss = []
    if t_ratio > TIME_TARGET:
        miss.append("time")
    if m_ratio > rss_target:
        miss.append("RSS")
    missed += [f"{spec['label']}: {m}" for m in miss]
    return "yes" if not miss else "MISSED (" + ", ".join(miss) + ")"

def maxrss_kib(usage):
    # Linux and the BSDs report KiB, macOS bytes.
    return usage.ru_maxrss // 1024 if sys.platform == "darwin" else usage.ru_maxrss


class RssSampler:
    """Largest RssAnon / RssFile of a running child, sampled from /proc (Linux).

    ru_maxrss gives only the total; the split says whether a peak is memory
    the process allocated (anon) or pages of files it mapped (file: clean
    page-cache pages, which the kernel can drop). Samples every ~5 ms, so a
    short spike can be missed: the figures are lower bounds.
    """

    def __init__(self, pid):
        self.path = f"/proc/{pid}/status"
        self.anon_kib = self.file_kib = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def sample(self):
        try:
            with open(self.path) as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        self.anon_kib = max(self.anon_kib, int(line.split()[1]))
                    elif line.startswith("RssFile:"):
                        self.file_kib = max(self.file_kib, int(line.split()[1]))
        except (OSError, ValueError, IndexError):
            pass

    def run(self):
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(0.005)

    def finish(self):
        self.stop.set()
        self.thread.join()


def cmd_wrap(args):
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    out = open(args.stdout, "wb") if args.stdout else subprocess.DEVNULL
    err = open(args.stderr, "wb") if args.stderr else None
    sampler = None
    try:
        t0 = time.perf_counter()
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        if args.sample_rss and os.path.exists(f"/proc/{child.pid}/status"):
            sampler = RssSampler(child.pid)
        rc = child.wait()
        if sampler:
            sampler.finish()
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
    result = {"wall": wall, "maxrss_kib": maxrss_kib(usage), "rc": rc}
    if sampler:
        result.update(anon_kib=sampler.anon_kib, file_kib=sampler.file_kib)
    print(json.dumps(result))


# ---------------------------------------------------------------- chains


def cmd_chains(args):
    """Issue 13's graph-core targets: how the passes, the verifier and
    `inspect` cost grows with the graph, each figure beside its reference
    (`--passes none` on the same file, the 4k run, onnxruntime's optimizer)."""
    py = sys.executable
    scratch = args.scratch
    out = os.path.join(scratch, "chain.onnx")

    def median_wall(label, cmd, output=out):
        spec = {"label": label, "cmd": cmd, "out": output}
        print(f"  {label}", end="", flush=True)
        runs = measured_runs(spec, scratch, args.runs)
        return statistics.median(r["wall"] for r in runs)

    def fold(model, *extra):
        return [args.bnfold, model, "-o", out, *extra]

    rows, missed = [], []

    def row(what, value, reference, ref_label, target):
        ratio = value / reference if reference > 0 else float("inf")
        ok = ratio <= target
        if not ok:
            missed.append(what)
        rows.append([what, f"{value:.2f} s", f"{reference:.2f} s ({ref_label})", f"{ratio:.2f}x",
                     f"<= {target:g}x", "yes" if ok else "MISSED"])

    small, large, ident = args.small, args.large, args.identity
    print(f"chains: medians of {args.runs} runs")
    f4 = median_wall("4k verified fold", fold(small))
    o4 = None
    if not args.no_ort:
        o4 = median_wall("4k onnxruntime optimizer", [py, os.path.abspath(__file__), "ort-optimize", small,
                                                       os.path.join(scratch, "ort.onnx")],
                         output=os.path.join(scratch, "ort.onnx"))
    none64 = median_wall("64k --passes none", fold(large, "--passes", "none"))
    nov64 = median_wall("64k --no-verify", fold(large, "--no-verify"))
    f64 = median_wall("64k verified fold", fold(large))
    ins64 = median_wall("64k inspect", [args.bnfold, "inspect", large], output=os.path.join(scratch, "none"))
    idnone = median_wall("identity --passes none", fold(ident, "--passes", "none"))
    idfold = median_wall("identity verified fold", fold(ident))

    row("64k verified fold", f64, f4, "4k verified fold", 24)
    row("64k --no-verify", nov64, none64, "64k --passes none", 1.5)
    row("64k verified fold", f64, none64, "64k --passes none", 4)
    row("64k inspect", ins64, none64, "64k --passes none", 2)
    if o4 is not None:
        row("4k verified fold", f4, o4, "onnxruntime optimizer", 0.25)
    row("10k Identity chain fold", idfold, idnone, "its --passes none", 2)
    if args.example_pass:
        # README's example pass alone (in-process time, median of --runs),
        # beside the whole read+write of the same file; target: well under 1 s.
        times = []
        for _ in range(args.runs):
            res = subprocess.run([args.example_pass, ident], capture_output=True, text=True, check=True)
            times.append(json.loads(res.stdout.strip().splitlines()[-1])["pass_seconds"])
        t = statistics.median(times)
        ok = t < 0.25
        if not ok:
            missed.append("README pass")
        rows.append(["README pass, 10k Identity", f"{t:.3f} s", f"{idnone:.2f} s (--passes none)", "-",
                     "< 0.25 s", "yes" if ok else "MISSED"])
    print()
    print(fmt_table(["figure", "bnfold", "reference", "ratio", "target", "met"], rows,
                    [False, True, True, True, True, False]))
    print("chains: " + ("all targets met" if not missed else "MISSED: " + "; ".join(missed)))
    return 0


# ---------------------------------------------------------------- many


MANY_RSS_TARGET = 10.0  # bnfold --passes none peak RSS <= 10x the file


def cmd_many(args):
    """Issue 13: per-tensor overhead. A file of a million tiny initializers is
    almost all per-tensor structure, so what reading and writing it costs
    beyond the bytes shows here and nowhere else."""
    model = os.path.abspath(args.model)
    scratch = os.path.abspath(args.scratch)
    os.makedirs(scratch, exist_ok=True)
    size = os.path.getsize(model)
    out = os.path.join(scratch, "many.onnx")
    dummy = os.path.join(scratch, "many-none")
    py = sys.executable
    print(f"many-initializers: {model}")
    print(f"  file {size:,} bytes ({size / MIB:.1f} MiB); medians of {args.runs} runs after one warm-up")
    specs = [
        ("cat M > /dev/null", "ref", {"cmd": ["cat", model], "stdout_to": os.devnull, "out": dummy}),
        ("python onnx.load(M)", "ref",
         {"cmd": [py, "-c", "import onnx, sys; onnx.load(sys.argv[1])", model], "out": dummy}),
        ("bnfold M -o OUT --passes none", "target",
         {"cmd": [args.bnfold, model, "-o", out, "--passes", "none"], "out": out}),
        ("bnfold M -o OUT (default fold)", "extra", {"cmd": [args.bnfold, model, "-o", out], "out": out}),
    ]
    rows, missed = [], []
    for label, kind, spec in specs:
        spec = dict(spec, label=label)
        print(f"  {label}: warm-up", end="", flush=True)
        measure_once(spec, scratch)
        runs = measured_runs(spec, scratch, args.runs)
        wall = statistics.median(r["wall"] for r in runs)
        rss = statistics.median(r["maxrss_kib"] for r in runs) * 1024
        ratio = rss / size
        if kind == "target":
            met = "yes" if ratio <= MANY_RSS_TARGET else "MISSED"
            if met != "yes":
                missed.append(label)
            target = f"<= {MANY_RSS_TARGET:g}x"
        else:
            met, target = ("(reference)" if kind == "ref" else "(extra)"), "-"
        rows.append([label, f"{wall:.2f}", f"{rss / MIB:.0f}", f"{ratio:.2f}x", target, met])
    print()
    print(fmt_table(["command", "wall s", "peak RSS MiB", "RSS / file", "target", "met"], rows,
                    [False, True, True, True, True, False]))
    print("many-initializers: " + ("all targets met" if not missed else "MISSED: " + "; ".join(missed)))
    return 0


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


# ---------------------------------------------------------------- runtime

RUNTIME_TIME_TARGET = 3.0   # RefRun ms/inference <= 3x onnxruntime's
CHECK_TIME_TARGET = 1.0     # `bnfold check` wall <= the Python/onnxruntime script's
CHECK_RSS_TARGET = 2.5      # `bnfold check` peak RSS <= 2.5x the two models' files


def cmd_ort_time(args):
    import numpy as np
    import onnxruntime as ort

    t0 = time.perf_counter()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    s = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3
    rng = np.random.default_rng(20240611)
    feeds = {i.name: rng.standard_normal([d if isinstance(d, int) and d >= 0 else 1 for d in i.shape])
             .astype(np.float32) for i in s.get_inputs()}
    s.run(None, feeds)  # warm-up
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        s.run(None, feeds)
        times.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({"runs": args.runs, "median_ms": statistics.median(times), "min_ms": min(times),
                      "max_ms": max(times), "load_ms": load_ms, "threads": args.threads}))


def json_of(cmd, env=None, label=""):
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"{label or cmd[0]} exited with {res.returncode}:\n{res.stderr.strip()}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def cmd_runtime(args):
    model = os.path.abspath(args.model)
    scratch = os.path.abspath(args.scratch)
    os.makedirs(scratch, exist_ok=True)
    bnfold, refrun = os.path.abspath(args.bnfold), os.path.abspath(args.refrun)
    here = os.path.abspath(__file__)
    _, ncpu, _ = machine()
    folded = os.path.join(scratch, "resnet50-folded.onnx")
    res = subprocess.run([bnfold, model, "-o", folded], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"bnfold A -o B exited with {res.returncode}:\n{res.stderr.strip()}")
    size_a, size_b = os.path.getsize(model), os.path.getsize(folded)

    print_machine(bnfold)
    print(f"model A : {model} ({size_a / MIB:.1f} MiB; ResNet-50 shape, random weights, 53 Conv+BN, batch 1, 224x224)")
    print(f"model B : A folded by `bnfold A -o B` ({size_b / MIB:.1f} MiB)")
    print(f"(1) ms per inference: 1 warm-up + median of {args.infer_runs} runs, one fixed seeded input, model loaded once")
    print(flush=True)

    env1 = dict(os.environ, BNFOLD_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    envn = {k: v for k, v in os.environ.items() if k not in ("BNFOLD_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    n = str(args.infer_runs)
    ort = lambda path, t: [sys.executable, here, "ort-time", path, "--runs", n, "--threads", str(t)]
    measured = {}
    for key, label, cmd, env in [
        ("ort_n", f"onnxruntime, A, {ncpu} intra-op threads", ort(model, ncpu), envn),
        ("ort_1", "onnxruntime, A, 1 thread", ort(model, 1), envn),
        ("ref_n", "RefRun --time, A (default threads)", [refrun, "--time", n, model], envn),
        ("ref_1", "RefRun --time, A, BNFOLD_THREADS=1", [refrun, "--time", n, model], env1),
        ("ref_b", "RefRun --time, B (folded)", [refrun, "--time", n, folded], envn),
        ("ref_64", "RefRun --time --float64, A (check's reference run)", [refrun, "--time", n, "--float64", model], envn),
    ]:
        print(f"  {label} ...", end="", flush=True)
        measured[key] = r = json_of(cmd, env, label)
        print(f" {r['median_ms']:.1f} ms", flush=True)
    threads = measured["ref_n"].get("threads", -1)

    header = ["runtime", "ms / inference", "x onnxruntime (same threads)", "target met"]
    right = [False, True, True, False]
    rows, missed = [], []
    rows.append([f"onnxruntime, {ncpu} intra-op threads", f"{measured['ort_n']['median_ms']:.1f}", "1.00", "(reference)"])
    rows.append(["onnxruntime, 1 intra-op thread", f"{measured['ort_1']['median_ms']:.1f}", "1.00", "(reference)"])
    for key, ref, label in [("ref_n", "ort_n", f"ReferenceRuntime, {threads} threads"),
                            ("ref_1", "ort_1", "ReferenceRuntime, 1 thread"),
                            ("ref_b", "ort_n", f"ReferenceRuntime on B (folded), {threads} threads"),
                            ("ref_64", "ort_n", f"ReferenceRuntime in float64, {threads} threads")]:
        ratio = measured[key]["median_ms"] / measured[ref]["median_ms"]
        if key in ("ref_b", "ref_64"):
            met = "(extra)"
        else:
            met = "yes" if ratio <= RUNTIME_TIME_TARGET else "MISSED"
            if ratio > RUNTIME_TIME_TARGET:
                missed.append(f"{label}: {ratio:.2f}x onnxruntime")
        rows.append([label, f"{measured[key]['median_ms']:.1f}", f"{ratio:.2f}", met])
    print()
    print(fmt_table(header, rows, right))
    print()
    print(f"target: ReferenceRuntime <= {RUNTIME_TIME_TARGET:g}x onnxruntime's ms per inference. ReferenceRuntime")
    print(f"  runs node by node, each kernel split over {threads} worker threads (gemm by rows or columns, each part")
    print("  a single-threaded OpenBLAS call). The float64 row is the reference run `bnfold check` adds (not a target).")
    print(f"  Load times (not in the figures): RefRun {measured['ref_n']['load_ms']:.0f} ms, "
          f"onnxruntime session {measured['ort_n']['load_ms']:.0f} ms.")

    # (2) whole-process check
    print()
    print(f"(2) comparing A and B, whole process: 1 warm-up + {args.runs} measured runs; wall = median, RSS = max")
    print(flush=True)
    specs = [
        {"label": "python bench/check_ort.py A B (onnxruntime, 1 input, np.allclose)", "kind": "ref",
         "cmd": [sys.executable, os.path.join(os.path.dirname(here), "check_ort.py"), model, folded]},
        {"label": "bnfold check A B (defaults: 1 sample, float64 reference run of A)", "kind": "target",
         "cmd": [bnfold, "check", model, folded]},
        {"label": "bnfold check --samples 3 A B", "kind": "extra",
         "cmd": [bnfold, "check", "--samples", "3", model, folded]},
    ]
    results = []
    for spec in specs:
        spec["out"] = os.path.join(scratch, "none")
        print(f"  {spec['label']}: warm-up", end="", flush=True)
        measure_once(spec, scratch)
        runs = []
        for _ in range(args.runs):
            r = measure_once(spec, scratch, keep_stdout=True)
            runs.append(r)
            print(f", {r['wall']:.2f}s", end="", flush=True)
        print(flush=True)
        results.append((spec, statistics.median(r["wall"] for r in runs), max(r["maxrss_kib"] for r in runs) * 1024,
                        runs[-1].get("stdout", "")))
    both = size_a + size_b
    ref_wall = results[0][1]
    header = ["command", "wall s", "x script", "peak RSS MiB", "RSS / (A+B)", "target met"]
    right = [False, True, True, True, True, False]
    rows = []
    for spec, wall, rss, _ in results:
        t_ratio, m_ratio = wall / ref_wall, rss / both
        if spec["kind"] == "ref":
            met = "(reference)"
        elif spec["kind"] == "extra":
            met = "(extra)"
        else:
            miss = (["time"] if t_ratio > CHECK_TIME_TARGET else []) + (["RSS"] if m_ratio > CHECK_RSS_TARGET else [])
            missed += [f"bnfold check: {m}" for m in miss]
            met = "yes" if not miss else "MISSED (" + ", ".join(miss) + ")"
        rows.append([spec["label"], f"{wall:.3f}", f"{t_ratio:.2f}", f"{rss / MIB:.0f}", f"{m_ratio:.2f}", met])
    print()
    print(fmt_table(header, rows, right))
    print()
    print(f"targets: bnfold check wall <= {CHECK_TIME_TARGET:g}x the script's; peak RSS <= {CHECK_RSS_TARGET:g}x "
          f"the two files ({CHECK_RSS_TARGET * both / MIB:.0f} MiB)")
    script_out = results[0][3].strip().splitlines()
    check_out = [l.strip() for l in results[1][3].strip().splitlines()]
    if script_out:
        print(f"script says: {script_out[-1]}")
    if check_out:
        print(f"bnfold check says: {check_out[-1]}" + (f" ({check_out[-2]})" if len(check_out) > 1 else ""))
    print()
    print("MISSED: " + "; ".join(missed) if missed else "all targets met")
    clean([folded])
    return 0


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
    if spec.get("sample_rss"):
        wrap += ["--sample-rss"]
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


def print_machine(bnfold):
    cpu, ncpu, mem = machine()
    version = subprocess.run([bnfold, "--version"], capture_output=True, text=True).stdout.strip()
    load = ""
    if hasattr(os, "getloadavg"):
        load = ", load average %.2f %.2f %.2f" % os.getloadavg()
    print(f"machine : {cpu}, nproc {ncpu}" + (f", {mem / 2**30:.1f} GiB RAM" if mem else "") + load)
    print(f"system  : {platform.system()} {platform.release()}, Python {platform.python_version()}")
    print(f"bnfold  : {bnfold} ({version})")


def cmd_bench(args):
    model = os.path.abspath(args.model)
    scratch = os.path.abspath(args.scratch)
    os.makedirs(scratch, exist_ok=True)
    size = os.path.getsize(model)
    bnfold = os.path.abspath(args.bnfold)
    py = sys.executable
    here = os.path.abspath(__file__)

    print_machine(bnfold)
    print(f"model   : {model}")
    print(f"size    : {size:,} bytes ({size / MIB:.1f} MiB)" + ("" if size >= 500e6 else "  (under the 500 MB the benchmark is meant for)"))
    print(f"runs    : 1 warm-up + {args.runs} measured per command; wall = median, RSS = max over measured runs")
    print(flush=True)

    copy = os.path.join(scratch, "copy.onnx")
    specs = [
        {"label": "cat IN > copy", "kind": "ref", "cmd": ["cat", model], "stdout_to": copy, "out": copy},
        {"label": "cat IN > copy; fsync copy", "kind": "extra", "cmd": ["cat", model], "stdout_to": copy,
         "out": copy, "fsync": copy},
        # The issue's target is fold + write; verification (on by default)
        # is measured separately below.
        {"label": "bnfold IN -o OUT --no-verify", "kind": "target",
         "cmd": [bnfold, model, "-o", os.path.join(scratch, "folded.onnx"), "--no-verify"],
         "out": os.path.join(scratch, "folded.onnx"), "folds": True},
        {"label": "bnfold IN -o OUT (verifies)", "kind": "extra",
         "cmd": [bnfold, model, "-o", os.path.join(scratch, "verified.onnx")],
         "out": os.path.join(scratch, "verified.onnx"), "folds": True, "report": True},
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
        if spec.get("report") and warm.get("stdout"):
            notes.append("bnfold report (warm-up run):\n" + "\n".join("    " + l for l in warm["stdout"].rstrip().splitlines()))
        runs = measured_runs(spec, scratch, args.runs)
        results.append((spec, statistics.median(r["wall"] for r in runs), max(r["maxrss_kib"] for r in runs) * 1024))

    cat_wall = results[0][1]
    header = ["command", "wall s", "peak RSS MiB", "x cat time", "RSS / file", "target met"]
    right = [False, True, True, True, True, False]
    rows, missed = [], []
    for spec, wall, rss in results:
        t_ratio, m_ratio = wall / cat_wall, rss / size
        met = verdict(spec, t_ratio, m_ratio, RSS_TARGET, missed)
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


# ---------------------------------------------------------------- huge


HUGE_RSS_TARGET = 0.25  # bnfold peak RSS <= 0.25x the weights (external data) size
HUGE_ONNX_LIMIT = MIB  # the .onnx part of an output: graph and tensor headers only
FLOAT_SIZES = {1: 4, 10: 2, 11: 8, 16: 2}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16


class Headers:
    """A model read without its external data: nodes, and where each initializer's bytes are."""

    def __init__(self, path):
        import onnx

        self.path = path
        self.dir = os.path.dirname(os.path.abspath(path))
        self.model = onnx.load_model(path, load_external_data=False)
        self.nodes = list(self.model.graph.node)
        self.inits = {t.name: t for t in self.model.graph.initializer}

    def external(self, t):
        """{'location', 'offset', 'length'} of an external tensor, None for an inline one."""
        if t.data_location != 1:  # TensorProto.EXTERNAL
            return None
        e = {kv.key: kv.value for kv in t.external_data}
        return {"location": e.get("location"), "offset": int(e.get("offset", 0)),
                "length": int(e["length"]) if "length" in e else None}

    def external_total(self):
        return sum((self.external(t) or {}).get("length") or 0 for t in self.inits.values())

    def read(self, name, start, count):
        """count float32 values from element `start` of initializer `name`, read from its file."""
        import numpy as np

        t = self.inits[name]
        ext = self.external(t)
        if ext is None:
            return np.frombuffer(t.raw_data, dtype="<f4")[start:start + count].copy() if t.raw_data \
                else np.array(t.float_data[start:start + count], dtype=np.float32)
        return np.fromfile(os.path.join(self.dir, ext["location"]), dtype="<f4", count=count,
                           offset=ext["offset"] + 4 * start)

    def conv_bn_pairs(self):
        """(conv node, BN node) for every BatchNormalization fed by a Conv."""
        producer = {o: n for n in self.nodes for o in n.output}
        pairs = []
        for n in self.nodes:
            if n.op_type == "BatchNormalization":
                p = producer.get(n.input[0])
                if p is not None and p.op_type == "Conv":
                    pairs.append((p, n))
        return pairs


def check_external_output(out, expect_batchnorm):
    """Structure of a written external-data model, read cheaply. Returns (problems, facts)."""
    problems, facts = [], []
    onnx_size = os.path.getsize(out)
    facts.append(f".onnx part {onnx_size / 1024:.1f} KiB")
    if onnx_size > HUGE_ONNX_LIMIT:
        problems.append(f"the .onnx part is {onnx_size / MIB:.1f} MiB (over {HUGE_ONNX_LIMIT / MIB:.0f} MiB: "
                        "tensor data went into the protobuf)")
    h = Headers(out)
    bn = sum(n.op_type == "BatchNormalization" for n in h.nodes)
    facts.append(f"{bn} BatchNormalization")
    if bn != expect_batchnorm:
        problems.append(f"{bn} BatchNormalization node(s) in the output, expected {expect_batchnorm}")

    files, inline_big = {}, 0
    for t in h.inits.values():
        ext = h.external(t)
        if ext is None:
            inline_big += len(t.raw_data) >= 1024
            continue
        loc = ext["location"]
        if not loc or os.path.isabs(loc) or ".." in loc.replace("\\", "/").split("/"):
            problems.append(f"{t.name}: bad location {loc!r}")
            continue
        if ext["length"] is None:
            problems.append(f"{t.name}: external_data has no length")
            continue
        n = 1
        for d in t.dims:
            n *= d
        size = FLOAT_SIZES.get(t.data_type)
        if size and n * size != ext["length"]:
            problems.append(f"{t.name}: length {ext['length']} but dims {list(t.dims)} need {n * size}")
        files.setdefault(loc, []).append((ext["offset"], ext["length"], t.name))
    if inline_big:
        problems.append(f"{inline_big} tensor(s) of 1 KiB or more are inline")
    expected_name = os.path.basename(out) + ".data"
    if set(files) != {expected_name}:
        problems.append(f"external data files {sorted(files)}, expected [{expected_name!r}]")
    for loc, spans in sorted(files.items()):
        path = os.path.join(h.dir, loc)
        if not os.path.isfile(path):
            problems.append(f"{loc}: referenced by {len(spans)} tensor(s) but missing")
            continue
        size = os.path.getsize(path)
        spans.sort()
        total = sum(length for _, length, _ in spans)
        end = 0
        for off, length, name in spans:
            if off < end:
                problems.append(f"{loc}: {name} at {off} overlaps the previous tensor (ends at {end})")
            end = max(end, off + length)
        if end > size:
            problems.append(f"{loc}: tensors reach byte {end:,}, the file has {size:,}")
        if total != size:
            problems.append(f"{loc}: {size:,} bytes but the tensors' lengths sum to {total:,}")
        facts.append(f"{loc}: {len(spans)} tensors, lengths sum {total:,} B = file size {size:,} B"
                     if total == size else f"{loc}: {len(spans)} tensors, {total:,} B of {size:,} B")
    # bnfold writes through temporaries; none may be left next to the output.
    d, base = os.path.split(out)
    stray = sorted(f for f in os.listdir(d) if f.startswith(base) or f.startswith("." + base))
    stray = [f for f in stray if f not in (base, expected_name)]
    if stray:
        problems.append(f"unexpected files next to the output: {stray}")
    return problems, facts, h


def check_values(inp, out, folded, channels_per_block=3, blocks=3):
    """Reads a few output channels and compares them with the input (numpy fold, or equal bytes)."""
    import numpy as np

    problems = []
    pairs = inp.conv_bn_pairs()
    if not pairs:
        return ["no Conv -> BatchNormalization pair in the input"], ""
    picks = sorted({0, len(pairs) // 2, len(pairs) - 1})[:blocks]
    out_nodes = {n.name: n for n in out.nodes if n.op_type == "Conv"}
    worst, checked = 0.0, 0
    for i in picks:
        conv, bn = pairs[i]
        o = out_nodes.get(conv.name)
        if o is None:
            problems.append(f"Conv {conv.name!r} not found in the output")
            continue
        w_in = inp.inits[conv.input[1]]
        m = w_in.dims[0]
        per = 1
        for d in w_in.dims[1:]:
            per *= d
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        for k in sorted({0, m // 2 + 1, m - 1})[:channels_per_block]:
            w = inp.read(conv.input[1], k * per, per)
            got_w = out.read(o.input[1], k * per, per)
            b = inp.read(conv.input[2], k, 1)[0] if len(conv.input) > 2 and conv.input[2] else 0.0
            got_b = out.read(o.input[2], k, 1)[0] if len(o.input) > 2 and o.input[2] else None
            if not folded:
                if not (np.array_equal(w.view("<u4"), got_w.view("<u4")) and got_b is not None
                        and np.float32(b).view("<u4") == np.float32(got_b).view("<u4")):
                    problems.append(f"{conv.name} channel {k}: bytes differ from the input")
                checked += 1
                continue
            gamma, beta, mean, var = (float(inp.read(name, k, 1)[0]) for name in bn.input[1:5])
            scale = gamma / np.sqrt(var + float(np.float32(eps)))
            exp_w = (w.astype(np.float64) * scale).astype(np.float32)
            exp_b = np.float32((float(b) - mean) * scale + beta)
            if got_b is None:
                problems.append(f"{conv.name}: no bias after folding")
                continue
            # A few float32 ulps: bnfold may round the scale to float32 before multiplying.
            tol = 4 * np.finfo(np.float32).eps
            err_w = np.abs(got_w.astype(np.float64) - exp_w) / np.maximum(np.abs(exp_w.astype(np.float64)), 1e-30)
            err_b = abs(float(got_b) - float(exp_b)) / max(abs(float(exp_b)), 1e-6)
            worst = max(worst, float(err_w.max()), err_b)
            if err_w.max() > tol or err_b > tol:
                problems.append(f"{conv.name} channel {k}: largest relative error {max(err_w.max(), err_b):.2e}")
            checked += 1
    if folded:
        summary = (f"{checked} output channels (W' = W*g/sqrt(v+eps), b' = (b-m)*g/sqrt(v+eps)+beta) of Conv "
                   f"{', '.join(pairs[i][0].name for i in picks)} match numpy; largest relative error {worst:.1e}"
                   + (" (bit-identical)" if worst == 0 else ""))
    else:
        summary = f"{checked} channels of Conv {', '.join(pairs[i][0].name for i in picks)} are byte-identical to the input"
    return problems, summary


def cmd_huge(args):
    import shutil

    model = os.path.abspath(args.model)
    scratch = os.path.abspath(args.scratch)
    os.makedirs(scratch, exist_ok=True)
    bnfold = os.path.abspath(args.bnfold)
    inp = Headers(model)
    locations = sorted({inp.external(t)["location"] for t in inp.inits.values() if inp.external(t)})
    data_files = [os.path.join(inp.dir, loc) for loc in locations]
    weights = inp.external_total()
    onnx_size = os.path.getsize(model)
    data_size = sum(os.path.getsize(f) for f in data_files)
    found_bn = sum(n.op_type == "BatchNormalization" for n in inp.nodes)

    print_machine(bnfold)
    print(f"model   : {model} ({onnx_size / 1024:.0f} KiB) + {', '.join(locations)} ({data_size:,} bytes)")
    print(f"weights : {weights:,} bytes = {weights / 2**30:.2f} GiB in external data "
          f"({len(inp.inits)} initializers, {found_bn} Conv+BatchNormalization blocks)")
    print(f"runs    : 1 warm-up + {args.runs} measured per command; wall = median, RSS = max over measured runs")
    free = shutil.disk_usage(scratch).free
    need = int(data_size * 1.1) + 256 * MIB
    if free < need:
        raise RuntimeError(f"{scratch}: {free / 2**30:.1f} GiB free, the outputs need {need / 2**30:.1f} GiB "
                           "(set BENCH_HUGE=0 to skip this case)")
    print(flush=True)

    copy = os.path.join(scratch, "huge-copy")
    folded = os.path.join(scratch, "huge-folded.onnx")
    none = os.path.join(scratch, "huge-none.onnx")
    cat = ["cat", model] + data_files
    specs = [
        {"label": "cat IN IN.data > copy", "kind": "ref", "cmd": cat, "stdout_to": copy, "out": copy},
        {"label": "cat IN IN.data > copy; fsync copy", "kind": "extra", "cmd": cat, "stdout_to": copy,
         "out": copy, "fsync": copy},
        {"label": "bnfold IN -o OUT --no-verify", "kind": "target", "cmd": [bnfold, model, "-o", folded, "--no-verify"],
         "out": folded, "check": "fold"},
        {"label": "bnfold IN -o OUT (verifies)", "kind": "extra", "cmd": [bnfold, model, "-o", folded], "out": folded,
         "check": "fold"},
        {"label": "bnfold IN -o OUT --passes none", "kind": "target",
         "cmd": [bnfold, model, "-o", none, "--passes", "none"], "out": none, "check": "none"},
    ]
    for spec in specs:
        spec["sample_rss"] = True

    floor = measure_once({"label": "true", "cmd": ["true"], "out": os.path.join(scratch, "true.out")}, scratch)
    floor = floor["maxrss_kib"] * 1024

    results, notes, failed = [], [], []
    for spec in specs:
        print(f"  {spec['label']}: warm-up", end="", flush=True)
        warm = measure_once(spec, scratch, keep_stdout=True)
        if spec.get("check"):
            t0 = time.perf_counter()
            problems, facts, out = check_external_output(spec["out"], 0 if spec["check"] == "fold" else found_bn)
            more, summary = check_values(inp, out, spec["check"] == "fold")
            problems += more
            dt = time.perf_counter() - t0
            if problems:
                failed += [f"{spec['label']}: {p}" for p in problems]
            notes.append(f"{spec['label']} (warm-up output, checked in {dt * 1000:.0f} ms without loading the data): "
                         + ("OK" if not problems else "FAILED") + "\n    " + "; ".join(facts)
                         + "\n    " + summary)
            if spec["check"] == "fold" and warm.get("stdout"):
                notes.append("bnfold report (warm-up run):\n"
                             + "\n".join("    " + l for l in warm["stdout"].rstrip().splitlines()))
        runs = measured_runs(spec, scratch, args.runs)
        results.append((spec, statistics.median(r["wall"] for r in runs),
                        max(r["maxrss_kib"] for r in runs) * 1024,
                        max(r.get("anon_kib", 0) for r in runs) * 1024,
                        max(r.get("file_kib", 0) for r in runs) * 1024))

    cat_wall = results[0][1]
    header = ["command", "wall s", "peak RSS MiB", "anon+file MiB", "x cat time", "RSS / weights", "target met"]
    right = [False, True, True, True, True, True, False]
    rows, missed = [], []
    for spec, wall, rss, anon, filed in results:
        t_ratio, m_ratio = wall / cat_wall, rss / weights
        met = verdict(spec, t_ratio, m_ratio, HUGE_RSS_TARGET, missed)
        split = f"{anon / MIB:.0f}+{filed / MIB:.0f}" if anon or filed else "-"
        rows.append([spec["label"], f"{wall:.3f}", f"{rss / MIB:.0f}", split, f"{t_ratio:.2f}",
                     f"{m_ratio:.3f}", met])

    print()
    print(fmt_table(header, rows, right))
    print()
    print(f"targets (bnfold rows): the output checks pass; wall <= {TIME_TARGET:g}x cat's time; peak RSS <= "
          f"{HUGE_RSS_TARGET:g}x the weights ({HUGE_RSS_TARGET * weights / MIB:.0f} MiB)")
    print("anon+file: largest RssAnon and RssFile (mapped file pages, clean and reclaimable) sampled every ~5 ms;")
    print(f"  peak RSS is ru_maxrss. RSS floor (measuring wrapper until exec): `true` measures {floor / MIB:.0f} MiB.")
    for n in notes:
        print(n)
    print()
    if failed:
        print("CHECK FAILED: " + "; ".join(failed))
    if missed:
        print("MISSED: " + "; ".join(missed))
    if not failed and not missed:
        print("all targets met")
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    b = sub.add_parser("bench")
    b.add_argument("--model", required=True)
    b.add_argument("--bnfold", required=True)
    b.add_argument("--scratch", required=True, help="directory for the outputs (emptied of them afterwards)")
    b.add_argument("--runs", type=int, default=3)
    b.add_argument("--no-ort", action="store_true", help="skip the onnxruntime reference")

    h = sub.add_parser("huge")
    h.add_argument("--model", required=True, help="a model whose initializers are in external data")
    h.add_argument("--bnfold", required=True)
    h.add_argument("--scratch", required=True, help="directory for the outputs (emptied of them afterwards)")
    h.add_argument("--runs", type=int, default=3)

    w = sub.add_parser("wrap")
    w.add_argument("--stdout")
    w.add_argument("--stderr")
    w.add_argument("--fsync")
    w.add_argument("--sample-rss", action="store_true", help="also report sampled peak RssAnon / RssFile (Linux)")
    w.add_argument("cmd", nargs=argparse.REMAINDER)

    r = sub.add_parser("runtime")
    r.add_argument("--model", required=True, help="the ResNet-50-shaped model (bench/make_resnet50.py)")
    r.add_argument("--bnfold", required=True)
    r.add_argument("--refrun", required=True)
    r.add_argument("--scratch", required=True, help="directory for the folded model (removed afterwards)")
    r.add_argument("--infer-runs", type=int, default=10, help="timed inferences per runtime (default 10)")
    r.add_argument("--runs", type=int, default=3, help="measured whole-process runs of each check (default 3)")

    t = sub.add_parser("ort-time")
    t.add_argument("model")
    t.add_argument("--runs", type=int, default=10)
    t.add_argument("--threads", type=int, default=0)

    c = sub.add_parser("chains")
    c.add_argument("--small", required=True, help="the 4,000-block Conv-BN chain (bench/make_chain.py)")
    c.add_argument("--large", required=True, help="the 64,000-block Conv-BN chain")
    c.add_argument("--identity", required=True, help="the 10,000-deep Identity chain")
    c.add_argument("--bnfold", required=True)
    c.add_argument("--scratch", required=True)
    c.add_argument("--runs", type=int, default=3)
    c.add_argument("--no-ort", action="store_true")
    c.add_argument("--example-pass", help="bench/ExamplePass binary: also time README's pass on the Identity chain")

    y = sub.add_parser("many")
    y.add_argument("--model", required=True, help="bench/make_many_initializers.py's model")
    y.add_argument("--bnfold", required=True)
    y.add_argument("--scratch", required=True)
    y.add_argument("--runs", type=int, default=3)

    o = sub.add_parser("ort-optimize")
    o.add_argument("input")
    o.add_argument("output")

    args = ap.parse_args()
    if args.command == "wrap":
        cmd_wrap(args)
    elif args.command == "ort-optimize":
        cmd_ort_optimize(args)
    elif args.command == "ort-time":
        cmd_ort_time(args)
    else:
        commands = {"huge": cmd_huge, "bench": cmd_bench, "runtime": cmd_runtime, "chains": cmd_chains,
                    "many": cmd_many}
        try:
            sys.exit(commands[args.command](args))
        except RuntimeError as e:
            print(f"\nbench: error: {e}", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
