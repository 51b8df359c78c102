/// Gemm and MatMul through BLAS gemm (split over the workers, ``parallelGemm``).
let matmulKernels: [String: Kernel] = [
    "Gemm": { ctx in
        let a = try ctx.input(0), b = try ctx.input(1)
        let c = ctx.optionalInput(2)
        guard a.rank == 2, b.rank == 2 else { throw KernelError("A \(a.shape) and B \(b.shape) must be 2-D") }
        let transA = try ctx.int("transA", 0) != 0, transB = try ctx.int("transB", 0) != 0
        let alpha = Double(try ctx.float("alpha", 1)), beta = Double(try ctx.float("beta", 1))
        let m = transA ? a.shape[1] : a.shape[0], k = transA ? a.shape[0] : a.shape[1]
        let kb = transB ? b.shape[1] : b.shape[0], n = transB ? b.shape[0] : b.shape[1]
        guard k == kb else { throw KernelError("op(A) is \(m)×\(k) but op(B) is \(kb)×\(n)") }
        _ = try allocationCount([m, n])
        try checkBLASSize(a.count, b.count, m * n)
        // Y starts as C broadcast to [M, N] (unidirectional), scaled by beta in gemm.
        var initial: RuntimeTensor? = nil
        if let c {
            let shape = try broadcastShape(c.shape, [m, n])
            guard shape == [m, n] else { throw KernelError("C \(c.shape) does not broadcast to [\(m), \(n)]") }
            initial = broadcast(c, to: [m, n])
        }
        let operands = [a, b] + (initial.map { [$0] } ?? [])
        func run<T: RuntimeFloat>(_ v: [[T]]) -> [T] {
            var y = v.count > 2 ? v[2] : [T](repeating: 0, count: m * n)
            v[0].withUnsafeBufferPointer { ap in
                v[1].withUnsafeBufferPointer { bp in
                    y.withUnsafeMutableBufferPointer { yp in
                        parallelGemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: T(alpha),
                               a: ap.baseAddress!, lda: a.shape[1], b: bp.baseAddress!, ldb: b.shape[1],
                               beta: v.count > 2 ? T(beta) : 0, c: yp.baseAddress!, ldc: n)
                    }
                }
            }
            return y
        }
        if m * n == 0 { return [RuntimeTensor(shape: [m, n], elementType: a.elementType, storage: a.storage.gathered([]))] }
        if k == 0 {
            // Empty product: Y = beta·C (BLAS would get null pointers).
            let y = initial.map { $0.doubles().map { beta * $0 } } ?? [Double](repeating: 0, count: m * n)
            return [try RuntimeTensor(shape: [m, n], values: y, elementType: a.elementType)]
        }
        let storage = try withFloats(operands, "Gemm", float: { Float.wrap(run($0)) }, double: { Double.wrap(run($0)) })
        return [RuntimeTensor(shape: [m, n], elementType: a.elementType, storage: storage)]
    },
    "MatMul": { ctx in
        let a = try ctx.input(0), b = try ctx.input(1)
        return [try matmul(a, b)]
    },
]

/// numpy matmul: 1-D operands are promoted (and the added axis removed from
/// the result), leading (batch) axes broadcast.
func matmul(_ a: RuntimeTensor, _ b: RuntimeTensor) throws -> RuntimeTensor {
    guard a.rank >= 1, b.rank >= 1 else { throw KernelError("MatMul operands must have rank ≥ 1, got \(a.shape) and \(b.shape)") }
    let aShape = a.rank == 1 ? [1, a.shape[0]] : a.shape
    let bShape = b.rank == 1 ? [b.shape[0], 1] : b.shape
    let m = aShape[aShape.count - 2], k = aShape[aShape.count - 1]
    let kb = bShape[bShape.count - 2], n = bShape[bShape.count - 1]
    guard k == kb else { throw KernelError("MatMul shapes \(a.shape) and \(b.shape) do not agree on the inner dimension") }
    let aBatch = Array(aShape.dropLast(2)), bBatch = Array(bShape.dropLast(2))
    let batch = try broadcastShape(aBatch, bBatch)
    var outShape = batch
    if a.rank != 1 { outShape.append(m) }
    if b.rank != 1 { outShape.append(n) }
    let batchCount = try checkedCount(batch)
    _ = try allocationCount(batch + [m, n])
    // Which matrix of A and of B each output batch item reads.
    let aIndex = broadcastIndexMap(from: aBatch, to: batch)
    let bIndex = broadcastIndexMap(from: bBatch, to: batch)
    try checkBLASSize(a.count, b.count, m * n)
    func run<T: RuntimeFloat>(_ v: [[T]]) -> [T] {
        var y = [T](repeating: 0, count: batchCount * m * n)
        guard m * n > 0, k > 0 else { return y }
        v[0].withUnsafeBufferPointer { ap in
            v[1].withUnsafeBufferPointer { bp in
                y.withUnsafeMutableBufferPointer { yp in
                    for i in 0..<batchCount {
                        parallelGemm(transA: false, transB: false, m: m, n: n, k: k, alpha: 1,
                               a: ap.baseAddress! + aIndex[i] * m * k, lda: k,
                               b: bp.baseAddress! + bIndex[i] * k * n, ldb: n,
                               beta: 0, c: yp.baseAddress! + i * m * n, ldc: n)
                    }
                }
            }
        }
        return y
    }
    if case .int(let av) = a.storage, case .int(let bv) = b.storage {
        // Integer MatMul (rare; shape arithmetic): plain loops.
        var y = [Int64](repeating: 0, count: batchCount * m * n)
        for i in 0..<batchCount { for r in 0..<m { for col in 0..<n {
            var s: Int64 = 0
            for t in 0..<k { s &+= av[aIndex[i] * m * k + r * k + t] &* bv[bIndex[i] * k * n + t * n + col] }
            y[(i * m + r) * n + col] = s
        }}}
        return RuntimeTensor(shape: outShape, ints: y, elementType: a.elementType)
    }
    let storage = try withFloats([a, b], "MatMul", float: { Float.wrap(run($0)) }, double: { Double.wrap(run($0)) })
    return RuntimeTensor(shape: outShape, elementType: a.elementType, storage: storage)
}
