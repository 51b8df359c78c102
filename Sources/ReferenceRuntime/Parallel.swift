import CBLAS
import Dispatch
import Foundation

/// How the runtime uses the machine's cores.
///
/// The runtime splits work itself — gemm by rows or columns, im2col by input
/// channel, elementwise kernels by contiguous ranges — and calls OpenBLAS
/// single-threaded from each worker. Letting OpenBLAS thread only its own
/// calls would leave every other kernel on one core while OpenBLAS's idle
/// threads spin (measured on ResNet-50 with 2 cores: 152 ms, against 108 ms
/// with the runtime's own split). Results do not depend on the thread count:
/// each output element is computed by exactly one worker with the same
/// arithmetic (gemm's inner products run over k in the same blocks whichever
/// rows or columns a call covers).
public enum Parallelism {
    /// Worker threads: `BNFOLD_THREADS`, else `OPENBLAS_NUM_THREADS`, else the
    /// active processors Foundation reports (at most 64).
    public static let threads: Int = {
        for name in ["BNFOLD_THREADS", "OPENBLAS_NUM_THREADS"] {
            if let text = getenv(name).map({ String(cString: $0) }), let n = Int(text), n >= 1 { return min(n, 64) }
        }
        return max(1, min(ProcessInfo.processInfo.activeProcessorCount, 64))
    }()

    /// Overrides ``threads`` for the current task (tests run the same graph
    /// with different thread counts side by side; a task-local keeps
    /// concurrent tests from seeing each other's setting).
    @TaskLocal public static var threadOverride: Int? = nil

    /// The worker count in effect here.
    public static var current: Int { max(1, threadOverride ?? threads) }

    /// Makes OpenBLAS single-threaded (once, before the runtime's first BLAS
    /// call, whichever kernel makes it): the runtime's workers call it.
    ///
    /// OpenBLAS also starts its own worker threads when it is loaded, and
    /// they spin (`sched_yield`) for about 0.1 s waiting for work that never
    /// comes once it is single-threaded: measured, 9 % of a short fold's CPU
    /// on two cores, taken from the runtime's own workers. They are stopped
    /// here (`blas_thread_shutdown_`, looked up at run time: not every
    /// OpenBLAS build exports it; without it they only spin).
    static let blasConfigured: Bool = {
        openblas_set_num_threads(1)
        if let stop = dlsym(nil, "blas_thread_shutdown_") {
            _ = unsafeBitCast(stop, to: (@convention(c) () -> Int32).self)()
        }
        return true
    }()

    /// Configures OpenBLAS now rather than at the first BLAS call: a
    /// command calls it first thing, so OpenBLAS's idle threads stop
    /// spinning from the start of the process.
    public static func configureBLAS() { _ = blasConfigured }
}

/// A value handed to concurrent workers that the caller guarantees they use
/// on disjoint parts (pointers into one output buffer).
struct Shared<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// Runs `body` on contiguous chunks covering `0..<count`, concurrently when
/// there are at least two chunks of `grain` items; chunks never overlap.
func parallelChunks(_ count: Int, grain: Int, _ body: (Range<Int>) -> Void) {
    let chunks = min(Parallelism.current, count / max(grain, 1))
    if chunks <= 1 {
        if count > 0 { body(0..<count) }
        return
    }
    withoutActuallyEscaping(body) { body in
        let work = Shared(body)
        DispatchQueue.concurrentPerform(iterations: chunks) { i in
            let lower = count * i / chunks, upper = count * (i + 1) / chunks
            work.value(lower..<upper)
        }
    }
}

/// Row-major `C = alpha · op(A) · op(B) + beta · C` split over the workers
/// by rows of C (when M is the larger side) or by columns, each part one
/// single-threaded BLAS call.
func parallelGemm<T: RuntimeFloat>(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: T,
                                   a: UnsafePointer<T>, lda: Int, b: UnsafePointer<T>, ldb: Int,
                                   beta: T, c: UnsafeMutablePointer<T>, ldc: Int) {
    // Below ~2 MFLOP a split costs more than it saves.
    let grainFlops = 1 << 21
    let work = m * n * max(k, 1)
    let (pa, pb, pc) = (Shared(a), Shared(b), Shared(c))
    if m >= n {
        let grain = max(8, grainFlops / max(n * max(k, 1), 1))
        parallelChunks(m, grain: grain) { rows in
            let aStart = transA ? rows.lowerBound : rows.lowerBound * lda
            T.gemm(transA: transA, transB: transB, m: rows.count, n: n, k: k, alpha: alpha,
                   a: pa.value + aStart, lda: lda, b: pb.value, ldb: ldb,
                   beta: beta, c: pc.value + rows.lowerBound * ldc, ldc: ldc)
        }
    } else {
        let grain = max(16, grainFlops / max(m * max(k, 1), 1))
        parallelChunks(work == 0 ? 0 : n, grain: grain) { cols in
            let bStart = transB ? cols.lowerBound * ldb : cols.lowerBound
            T.gemm(transA: transA, transB: transB, m: m, n: cols.count, k: k, alpha: alpha,
                   a: pa.value, lda: lda, b: pb.value + bStart, ldb: ldb,
                   beta: beta, c: pc.value + cols.lowerBound, ldc: ldc)
        }
    }
}
