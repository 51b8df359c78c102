/// MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool (spatial rank 1–3;
/// sums in Double, rounded once into the element type).

/// What a pooling window computes.
private enum PoolReduction {
    /// The largest value inside the input (NaN if any is NaN; −∞ for a
    /// window entirely in the padding).
    case max
    /// The Double sum of the values inside the input divided by their count,
    /// or by the number of window positions inside the explicitly padded
    /// input when `includePad` (NaN when that count is 0).
    case average(includePad: Bool)
}

/// One pooling pass over every (batch, channel) plane, split over the
/// workers by plane. Float storage stays float (max is exact; averages are
/// summed in Double and rounded once).
private func pool(_ x: RuntimeTensor, geo: Geometry3, rank: Int, _ reduction: PoolReduction) throws -> RuntimeTensor {
    let n = x.shape[0], c = x.shape[1]
    let outShape = [n, c] + spatial(geo.output, rank: rank)
    _ = try allocationCount(outShape)
    func run<T: RuntimeFloat>(_ values: [T]) -> [T] {
        let iCount = geo.inputCount, oCount = geo.outputCount, planes = n * c
        var out = [T](repeating: 0, count: planes * oCount)
        values.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                let (input, output) = (Shared(src.baseAddress!), Shared(dst.baseAddress!))
                parallelChunks(planes, grain: max(1, 16_384 / max(oCount * geo.kernelCount, 1))) { range in
                    for plane in range {
                        let base = input.value + plane * iCount
                        var o = output.value + plane * oCount
                        for od in 0..<geo.output[0] { for oh in 0..<geo.output[1] { for ow in 0..<geo.output[2] {
                            var top = -T.infinity, sawNaN = false
                            var sum = 0.0, inside = 0, padded = 0
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
                                        guard id >= 0, id < geo.input[0], ih >= 0, ih < geo.input[1], iw >= 0, iw < geo.input[2] else { continue }
                                        let v = base[(id * geo.input[1] + ih) * geo.input[2] + iw]
                                        inside += 1
                                        sum += Double(v)
                                        if v.isNaN { sawNaN = true } else if v > top { top = v }
                                    }
                                }
                            }
                            switch reduction {
                            case .max:
                                o.pointee = sawNaN ? .nan : top
                            case .average(let includePad):
                                let divisor = includePad ? padded : inside
                                o.pointee = divisor == 0 ? .nan : T(sum / Double(divisor))
                            }
                            o += 1
                        }}}
                    }
                }
            }
        }
        return out
    }
    switch x.storage {
    case .float(let v): return RuntimeTensor(shape: outShape, elementType: x.elementType, storage: .float(run(v)))
    case .double(let v): return RuntimeTensor(shape: outShape, elementType: x.elementType, storage: .double(run(v)))
    case .int(let v): return try RuntimeTensor(shape: outShape, values: run(v.map(Double.init)), elementType: x.elementType)
    }
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
        return [try pool(x, geo: geo, rank: x.rank - 2, .max)]
    },
    "AveragePool": { ctx in
        let (x, kernel) = try poolInput(ctx)
        let includePad = try ctx.int("count_include_pad", 0) != 0
        let geo = try windowGeometry(ctx, inputSpatial: Array(x.shape[2...]), kernel: kernel, ceilMode: try ctx.int("ceil_mode", 0) != 0)
        return [try pool(x, geo: geo, rank: x.rank - 2, .average(includePad: includePad))]
    },
    "GlobalAveragePool": { ctx in try globalPool(ctx) { $0.isEmpty ? .nan : $0.reduce(0, +) / Double($0.count) } },
    "GlobalMaxPool": { ctx in try globalPool(ctx) { $0.contains { $0.isNaN } ? .nan : ($0.max() ?? -.infinity) } },
]
