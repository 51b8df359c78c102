/// MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool (spatial rank 1–3,
/// computed in Double and rounded once into the element type).

/// One pooling pass: `reduce` gets the window's values inside the input and
/// the number of window positions inside the explicitly padded input (for
/// `count_include_pad`).
private func pool(_ x: RuntimeTensor, geo: Geometry3, rank: Int,
                  reduce: (_ values: [Double], _ paddedCount: Int) -> Double) throws -> RuntimeTensor {
    let n = x.shape[0], c = x.shape[1]
    let values = x.doubles()
    let iCount = geo.inputCount, oCount = geo.outputCount
    var out = [Double](repeating: 0, count: n * c * oCount)
    var window: [Double] = []
    window.reserveCapacity(geo.kernelCount)
    // Per axis, the input coordinates of window position (o, k), and whether
    // it is inside the padded input [−pb, in + pe).
    for plane in 0..<(n * c) {
        let base = plane * iCount
        var o = 0
        for od in 0..<geo.output[0] { for oh in 0..<geo.output[1] { for ow in 0..<geo.output[2] {
            window.removeAll(keepingCapacity: true)
            var padded = 0
            for kd in 0..<geo.kernel[0] {
                let id = od * geo.strides[0] - geo.padBegin[0] + kd * geo.dilations[0]
                guard id < geo.input[0] + geo.padEnd[0] else { continue }
                for kh in 0..<geo.kernel[1] {
                    let ih = oh * geo.strides[1] - geo.padBegin[1] + kh * geo.dilations[1]
                    guard ih < geo.input[1] + geo.padEnd[1] else { continue }
                    for kw in 0..<geo.kernel[2] {
                        let iw = ow * geo.strides[2] - geo.padBegin[2] + kw * geo.dilations[2]
                        guard iw < geo.input[2] + geo.padEnd[2] else { continue }
                        padded += 1
                        if id >= 0, id < geo.input[0], ih >= 0, ih < geo.input[1], iw >= 0, iw < geo.input[2] {
                            window.append(values[base + (id * geo.input[1] + ih) * geo.input[2] + iw])
                        }
                    }
                }
            }
            out[plane * oCount + o] = reduce(window, padded)
            o += 1
        }}}
    }
    return try RuntimeTensor(shape: [n, c] + spatial(geo.output, rank: rank), values: out, elementType: x.elementType)
}

private func poolInput(_ ctx: KernelContext) throws -> (RuntimeTensor, [Int]) {
    let x = try ctx.input(0)
    guard x.rank >= 3, x.rank <= 5 else { throw KernelError("X has shape \(x.shape); 1 to 3 spatial axes are supported") }
    guard let kernel = try ctx.ints("kernel_shape") else { throw KernelError("kernel_shape is required") }
    return (x, kernel)
}

private func globalPool(_ ctx: KernelContext, _ reduce: ([Double]) -> Double) throws -> [RuntimeTensor] {
    let x = try ctx.input(0)
    guard x.rank >= 2 else { throw KernelError("X has shape \(x.shape)") }
    let inner = x.shape[2...].reduce(1, *)
    let v = x.doubles()
    let planes = x.shape[0] * x.shape[1]
    let out = (0..<planes).map { p in reduce(Array(v[(p * inner)..<((p + 1) * inner)])) }
    let shape = Array(x.shape[..<2]) + [Int](repeating: 1, count: x.rank - 2)
    return [try RuntimeTensor(shape: shape, values: out, elementType: x.elementType)]
}

let poolKernels: [String: Kernel] = [
    "MaxPool": { ctx in
        let (x, kernel) = try poolInput(ctx)
        if try ctx.int("storage_order", 0) != 0, ctx.node.outputs.count > 1 { throw KernelError("storage_order = 1 is not supported") }
        let geo = try windowGeometry(ctx, inputSpatial: Array(x.shape[2...]), kernel: kernel, ceilMode: try ctx.int("ceil_mode", 0) != 0)
        return [try pool(x, geo: geo, rank: x.rank - 2) { w, _ in
            // NaN propagates, as in a comparison-based max that starts from the first element.
            w.contains { $0.isNaN } ? .nan : (w.max() ?? -.infinity)
        }]
    },
    "AveragePool": { ctx in
        let (x, kernel) = try poolInput(ctx)
        let includePad = try ctx.int("count_include_pad", 0) != 0
        let geo = try windowGeometry(ctx, inputSpatial: Array(x.shape[2...]), kernel: kernel, ceilMode: try ctx.int("ceil_mode", 0) != 0)
        return [try pool(x, geo: geo, rank: x.rank - 2) { w, padded in
            let divisor = includePad ? padded : w.count
            return divisor == 0 ? .nan : w.reduce(0, +) / Double(divisor)
        }]
    },
    "GlobalAveragePool": { ctx in try globalPool(ctx) { $0.isEmpty ? .nan : $0.reduce(0, +) / Double($0.count) } },
    "GlobalMaxPool": { ctx in try globalPool(ctx) { $0.contains { $0.isNaN } ? .nan : ($0.max() ?? -.infinity) } },
]
