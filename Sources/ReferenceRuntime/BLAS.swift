import CBLAS

/// The two floating-point storages kernels are generic over, with their
/// BLAS matrix product (OpenBLAS sgemm/dgemm) and their `Storage` case.
protocol RuntimeFloat: BinaryFloatingPoint, Sendable {
    /// Row-major `C = alpha · op(A) · op(B) + beta · C`, `op(A)` m×k, `op(B)`
    /// k×n: one single-threaded BLAS call (kernels call ``parallelGemm``,
    /// which splits the product over the workers).
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Self,
                     a: UnsafePointer<Self>, lda: Int, b: UnsafePointer<Self>, ldb: Int,
                     beta: Self, c: UnsafeMutablePointer<Self>, ldc: Int)
    static func wrap(_ values: [Self]) -> RuntimeTensor.Storage
}

extension Float: RuntimeFloat {
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
                     a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                     beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
        guard m > 0, n > 0 else { return }
        _ = Parallelism.blasConfigured
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    blasint(m), blasint(n), blasint(k), alpha, a, blasint(max(lda, 1)), b, blasint(max(ldb, 1)),
                    beta, c, blasint(max(ldc, 1)))
    }
    static func wrap(_ values: [Float]) -> RuntimeTensor.Storage { .float(values) }
}

extension Double: RuntimeFloat {
    static func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Double,
                     a: UnsafePointer<Double>, lda: Int, b: UnsafePointer<Double>, ldb: Int,
                     beta: Double, c: UnsafeMutablePointer<Double>, ldc: Int) {
        guard m > 0, n > 0 else { return }
        _ = Parallelism.blasConfigured
        cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    blasint(m), blasint(n), blasint(k), alpha, a, blasint(max(lda, 1)), b, blasint(max(ldb, 1)),
                    beta, c, blasint(max(ldc, 1)))
    }
    static func wrap(_ values: [Double]) -> RuntimeTensor.Storage { .double(values) }
}

/// Calls `body` with the float or double arrays of tensors that must all
/// share one floating-point storage; anything else is an error.
func withFloats<R>(_ tensors: [RuntimeTensor], _ op: String,
                   float: ([[Float]]) throws -> R, double: ([[Double]]) throws -> R) throws -> R {
    var fs: [[Float]] = [], ds: [[Double]] = []
    for t in tensors {
        switch t.storage {
        case .float(let v): fs.append(v)
        case .double(let v): ds.append(v)
        case .int: throw KernelError("\(op) needs floating-point inputs, got \(t.elementType)")
        }
    }
    if fs.count == tensors.count { return try float(fs) }
    if ds.count == tensors.count { return try double(ds) }
    throw KernelError("\(op) inputs mix element types \(tensors.map(\.elementType.name).joined(separator: ", "))")
}

/// Checks that every element count fits BLAS's 32-bit integers.
func checkBLASSize(_ counts: Int...) throws {
    for c in counts where c > Int(Int32.max) {
        throw KernelError("a matrix of \(c) elements is too large for the BLAS interface")
    }
}
