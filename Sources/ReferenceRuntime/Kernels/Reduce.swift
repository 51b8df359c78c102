import Foundation

/// ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceSumSquare,
/// ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp (accumulated in Double,
/// rounded once into the element type).

private func reduceKernel(_ name: String, axesInputSince: Int64, _ reduce: @escaping @Sendable ([Double]) -> Double) -> Kernel {
    { ctx in
        let x = try ctx.input(0)
        let keepDims = try ctx.int("keepdims", 1) != 0
        let noopWithEmptyAxes = try ctx.int("noop_with_empty_axes", 0) != 0
        let axesArg = try axesArgument(ctx, inputSince: axesInputSince, index: 1)
        var axes = try normalizedAxes(axesArg ?? [], rank: x.rank, ctx)
        if axes.isEmpty {
            if noopWithEmptyAxes { return [x] }
            axes = Array(0..<x.rank)
        }
        let reduced = Set(axes)
        var outShape: [Int] = []
        for (i, d) in x.shape.enumerated() {
            if reduced.contains(i) { if keepDims { outShape.append(1) } } else { outShape.append(d) }
        }
        let keptShape = x.shape.enumerated().map { reduced.contains($0.offset) ? 1 : $0.element }
        // Group the input's elements by the output element they reduce into.
        let outCount = keptShape.reduce(1, *)
        var groups = [[Double]](repeating: [], count: outCount)
        let v = x.doubles()
        let keptStrides = rowMajorStrides(keptShape)
        var index = [Int](repeating: 0, count: x.rank)
        for i in 0..<v.count {
            var o = 0
            for a in 0..<x.rank where !reduced.contains(a) { o += index[a] * keptStrides[a] }
            groups[o].append(v[i])
            var a = x.rank - 1
            while a >= 0 { index[a] += 1; if index[a] < x.shape[a] { break }; index[a] = 0; a -= 1 }
        }
        let out = groups.map(reduce)
        if case .int = x.storage {
            return [RuntimeTensor(shape: outShape, ints: out.map(saturatingInt64), elementType: x.elementType)]
        }
        return [try RuntimeTensor(shape: outShape, values: out, elementType: x.elementType)]
    }
}

let reduceKernels: [String: Kernel] = [
    "ReduceSum": reduceKernel("ReduceSum", axesInputSince: 13) { $0.reduce(0, +) },
    "ReduceMean": reduceKernel("ReduceMean", axesInputSince: 18) { $0.isEmpty ? .nan : $0.reduce(0, +) / Double($0.count) },
    "ReduceMax": reduceKernel("ReduceMax", axesInputSince: 18) { $0.contains { $0.isNaN } ? .nan : ($0.max() ?? -.infinity) },
    "ReduceMin": reduceKernel("ReduceMin", axesInputSince: 18) { $0.contains { $0.isNaN } ? .nan : ($0.min() ?? .infinity) },
    "ReduceProd": reduceKernel("ReduceProd", axesInputSince: 18) { $0.reduce(1, *) },
    "ReduceSumSquare": reduceKernel("ReduceSumSquare", axesInputSince: 18) { $0.reduce(0) { $0 + $1 * $1 } },
    "ReduceL1": reduceKernel("ReduceL1", axesInputSince: 18) { $0.reduce(0) { $0 + abs($1) } },
    "ReduceL2": reduceKernel("ReduceL2", axesInputSince: 18) { $0.reduce(0) { $0 + $1 * $1 }.squareRoot() },
    "ReduceLogSum": reduceKernel("ReduceLogSum", axesInputSince: 18) { Foundation.log($0.reduce(0, +)) },
    // log Σ eˣ, shifted by the largest value so that eˣ cannot overflow.
    "ReduceLogSumExp": reduceKernel("ReduceLogSumExp", axesInputSince: 18) { v in
        guard let top = v.max(), top.isFinite else { return Foundation.log(v.reduce(0) { $0 + Foundation.exp($1) }) }
        return top + Foundation.log(v.reduce(0) { $0 + Foundation.exp($1 - top) })
    },
]
