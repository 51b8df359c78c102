import Foundation
import ONNXGraph

// LogSoftmax, ArgMax/ArgMin, CumSum/CumProd, Hardmax, Trilu, Tile, GatherElements,
// DepthToSpace/SpaceToDepth, LayerNormalization, RMSNormalization,
// InstanceNormalization.
// Index arithmetic on row-major tensors; floating-point values in Double,
// rounded once into the element type.

/// The sizes before, along and after `axis`.
private func split(_ shape: [Int], at axis: Int) -> (outer: Int, length: Int, inner: Int) {
    (shape[..<axis].reduce(1, *), shape.isEmpty ? 1 : shape[axis], shape.isEmpty ? 1 : shape[(axis + 1)...].reduce(1, *))
}

/// A tensor of the same storage as `like` gathered at flat `indices`, with `shape`.
private func gathered(_ like: RuntimeTensor, _ indices: [Int], shape: [Int]) -> RuntimeTensor {
    RuntimeTensor(shape: shape, elementType: like.elementType, storage: like.storage.gathered(indices))
}

private func argKernel(_ name: String, _ better: @escaping @Sendable (Double, Double) -> Bool) -> Kernel {
    { ctx in
        let x = try ctx.input(0)
        guard x.rank >= 1 else { throw KernelError("\(name) needs an input of rank ≥ 1") }
        let axis = try ctx.axis(try ctx.int("axis", 0), rank: x.rank)
        let keepDims = try ctx.int("keepdims", 1) != 0
        let last = try ctx.int("select_last_index", 0) != 0
        let (outer, length, inner) = split(x.shape, at: axis)
        guard length > 0 else { throw KernelError("\(name) over an empty axis") }
        let v = x.doubles()
        var out = [Int64](repeating: 0, count: outer * inner)
        for o in 0..<outer {
            for i in 0..<inner {
                let base = o * length * inner + i
                var best = 0, top = v[base]
                for k in 1..<max(length, 1) {
                    let e = v[base + k * inner]
                    if top.isNaN { break }  // the first NaN wins (numpy)
                    if e.isNaN || better(e, top) || (last && e == top) { best = k; top = e }
                }
                out[o * inner + i] = Int64(best)
            }
        }
        var shape = x.shape
        if keepDims { shape[axis] = 1 } else { shape.remove(at: axis) }
        return [RuntimeTensor(shape: shape, ints: out)]
    }
}

/// Mean and 1/√(variance + ε) over each of `groups` runs of `length`
/// consecutive values.
private func moments(_ v: [Double], groups: Int, length: Int, epsilon: Double) -> (mean: [Double], invStd: [Double]) {
    var mean = [Double](repeating: 0, count: groups), invStd = mean
    for g in 0..<groups {
        let run = v[(g * length)..<((g + 1) * length)]
        let m = run.reduce(0, +) / Double(length)
        let variance = run.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(length)
        mean[g] = m
        invStd[g] = 1 / (variance + epsilon).squareRoot()
    }
    return (mean, invStd)
}

let tensorKernels: [String: Kernel] = [
    "LogSoftmax": { ctx in
        let x = try ctx.input(0)
        guard !(x.elementType == .bool || RuntimeTensor.storageKind(of: x.elementType) == .int) else {
            throw KernelError("X must be floating point")
        }
        // As Softmax: opset ≥ 13 along `axis`, before on the 2-D coercion.
        let (outer, length, inner) = try softmaxLayout(ctx, x)
        var values = x.doubles()
        for o in 0..<outer {
            for i in 0..<inner {
                let base = o * length * inner + i
                var top = -Double.infinity
                for k in 0..<length { top = max(top, values[base + k * inner]) }
                var sum = 0.0
                for k in 0..<length { sum += exp(values[base + k * inner] - top) }
                let shift = top + log(sum)
                for k in 0..<length { values[base + k * inner] -= shift }
            }
        }
        return [try RuntimeTensor(shape: x.shape, values: values, elementType: x.elementType)]
    },
    "ArgMax": argKernel("ArgMax") { $0 > $1 },
    "ArgMin": argKernel("ArgMin") { $0 < $1 },
    "CumSum": cumulativeKernel(product: false),
    "CumProd": cumulativeKernel(product: true),
    // Hardmax: 1 at the first largest value along `axis`, 0 elsewhere.
    "Hardmax": { ctx in
        let x = try ctx.input(0)
        guard !isIntTensor(x) else { throw KernelError("input must be floating point") }
        let axis = try ctx.axis(try ctx.int("axis", ctx.opset >= 13 ? -1 : 1), rank: x.rank)
        let v = x.doubles()
        var out = [Double](repeating: 0, count: v.count)
        // Before opset 13 the input is coerced to 2-D at `axis`.
        let (outer, length, inner) = ctx.opset >= 13 ? split(x.shape, at: axis)
            : (x.shape[..<axis].reduce(1, *), x.shape[axis...].reduce(1, *), 1)
        for o in 0..<outer {
            for i in 0..<inner where length > 0 {
                let base = o * length * inner + i
                var best = 0
                for k in 1..<max(length, 1) where v[base + k * inner] > v[base + best * inner] { best = k }
                out[base + best * inner] = 1
            }
        }
        return [try RuntimeTensor(shape: x.shape, values: out, elementType: x.elementType)]
    },
    // Trilu: keeps the upper (j − i ≥ k) or lower (j − i ≤ k) triangle of the last two axes.
    "Trilu": { ctx in
        let x = try ctx.input(0)
        guard x.rank >= 2 else { throw KernelError("Trilu needs an input of rank ≥ 2") }
        var k: Int64 = 0
        if let kt = ctx.optionalInput(1) {
            guard kt.count == 1, case .int(let v) = kt.storage else { throw KernelError("k must be an integer scalar") }
            k = v[0]
        }
        let upper = try ctx.int("upper", 1) != 0
        let rows = x.shape[x.rank - 2], columns = x.shape[x.rank - 1]
        let plane = rows * columns
        let keep = (0..<x.count).map { flat -> Int in
            let p = plane == 0 ? 0 : flat % plane
            let d = Int64(p % columns) - Int64(p / columns)
            return (upper ? d >= k : d <= k) ? flat : -1
        }
        return [gathered(x, keep, shape: x.shape)]
    },
    "Tile": { ctx in
        let x = try ctx.input(0)
        let repeats = try intValues(ctx.input(1), "repeats")
        guard repeats.count == x.rank, repeats.allSatisfy({ $0 >= 0 }) else {
            throw KernelError("repeats \(repeats) must hold \(x.rank) non-negative values")
        }
        let shape = try zip(x.shape, repeats).map { d, r in
            let (p, overflow) = d.multipliedReportingOverflow(by: r)
            guard !overflow else { throw KernelError("Tile of \(x.shape) by \(repeats) is too large") }
            return p
        }
        let count = try allocationCount(shape, bytesPerElement: 16)
        let outStrides = rowMajorStrides(shape), inStrides = rowMajorStrides(x.shape)
        let map = (0..<count).map { o -> Int in
            var rest = o, flat = 0
            for axis in 0..<shape.count {
                let i = rest / outStrides[axis]
                rest %= outStrides[axis]
                flat += (i % x.shape[axis]) * inStrides[axis]
            }
            return flat
        }
        return [gathered(x, map, shape: shape)]
    },
    "GatherElements": { ctx in
        let data = try ctx.input(0), indices = try ctx.input(1)
        guard data.rank >= 1, indices.rank == data.rank else {
            throw KernelError("data \(data.shape) and indices \(indices.shape) must have the same rank ≥ 1")
        }
        let axis = try ctx.axis(try ctx.int("axis", 0), rank: data.rank)
        let idx = indices.int64s()
        _ = try allocationCount(indices.shape, bytesPerElement: 16)
        let outStrides = rowMajorStrides(indices.shape), inStrides = rowMajorStrides(data.shape)
        let length = Int64(data.shape[axis])
        let map = try (0..<idx.count).map { o -> Int in
            var rest = o, flat = 0
            for a in 0..<indices.rank {
                var i = rest / outStrides[a]
                rest %= outStrides[a]
                if a == axis {
                    let j = idx[o] < 0 ? idx[o] + length : idx[o]
                    guard j >= 0, j < length else { throw KernelError("index \(idx[o]) is out of range for axis \(axis) of size \(length)") }
                    i = Int(j)
                } else if i >= data.shape[a] {
                    throw KernelError("indices shape \(indices.shape) exceeds data shape \(data.shape) on axis \(a)")
                }
                flat += i * inStrides[a]
            }
            return flat
        }
        return [gathered(data, map, shape: indices.shape)]
    },
    // DepthToSpace: [N, C, H, W] → [N, C/b², H·b, W·b]; DCR takes the depth
    // as (b, b, C/b²), CRD as (C/b², b, b).
    // as (b, b, C/b²), CRD as (C/b², b, b).
    "DepthToSpace": { ctx in
        let x = try ctx.input(0)
        let b = try ctx.int("blocksize", 0)
        guard x.rank == 4, b > 0, x.shape[1] % (b * b) == 0 else {
            throw KernelError("DepthToSpace needs a 4-D input whose channels divide by blocksize² (shape \(x.shape), blocksize \(b))")
        }
        let mode = try ctx.string("mode", "DCR")
        guard mode == "DCR" || mode == "CRD" else { throw KernelError("mode '\(mode)' is not supported") }
        let crd = mode == "CRD"
        let (n, c, h, w) = (x.shape[0], x.shape[1] / (b * b), x.shape[2], x.shape[3])
        let shape = [n, c, h * b, w * b]
        let count = try allocationCount(shape, bytesPerElement: 16)
        var map = [Int](repeating: 0, count: count)
        var o = 0
        for i0 in 0..<n { for ch in 0..<c { for y in 0..<(h * b) { for xx in 0..<(w * b) {
            let (by, bx) = (y % b, xx % b)
            let depth = crd ? ch * b * b + by * b + bx : (by * b + bx) * c + ch
            map[o] = ((i0 * x.shape[1] + depth) * h + y / b) * w + xx / b
            o += 1
        } } } }
        return [gathered(x, map, shape: shape)]
    },
    "SpaceToDepth": { ctx in
        let x = try ctx.input(0)
        let b = try ctx.int("blocksize", 0)
        guard x.rank == 4, b > 0, x.shape[2] % b == 0, x.shape[3] % b == 0 else {
            throw KernelError("SpaceToDepth needs a 4-D input whose height and width divide by blocksize (shape \(x.shape), blocksize \(b))")
        }
        let mode = try ctx.string("mode", "DCR")
        guard mode == "DCR" || mode == "CRD" else { throw KernelError("mode '\(mode)' is not supported") }
        let crd = mode == "CRD"
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2] / b, x.shape[3] / b)
        let shape = [n, c * b * b, h, w]
        let count = try allocationCount(shape, bytesPerElement: 16)
        var map = [Int](repeating: 0, count: count)
        var o = 0
        for i0 in 0..<n { for depth in 0..<(c * b * b) { for y in 0..<h { for xx in 0..<w {
            // DCR: depth = (by·b + bx)·C + ch; CRD: depth = ch·b² + by·b + bx.
            let (by, bx, ch) = crd ? ((depth / b) % b, depth % b, depth / (b * b)) : (depth / (b * c), (depth / c) % b, depth % c)
            map[o] = ((i0 * c + ch) * x.shape[2] + y * b + by) * x.shape[3] + xx * b + bx
            o += 1
        } } } }
        return [gathered(x, map, shape: shape)]
    },
    // LayerNormalization over the axes from `axis` on; Scale and B broadcast
    // to those axes. Mean and InvStdDev (optional outputs) keep X's leading
    // axes and have size 1 on the normalized ones.
    "LayerNormalization": { ctx in
        let x = try ctx.input(0), scale = try ctx.input(1), bias = ctx.optionalInput(2)
        guard !isIntTensor(x) else { throw KernelError("X must be floating point") }
        guard x.rank >= 1 else { throw KernelError("LayerNormalization needs an input of rank ≥ 1") }
        let axis = try ctx.axis(try ctx.int("axis", -1), rank: x.rank)
        let epsilon = Double(try ctx.float("epsilon", 1e-5))
        let normalized = Array(x.shape[axis...])
        let length = normalized.reduce(1, *), groups = x.shape[..<axis].reduce(1, *)
        func params(_ t: RuntimeTensor) throws -> [Double] {
            guard (try? broadcastShape(t.shape, normalized)) == normalized else {
                throw KernelError("shape \(t.shape) does not broadcast to the normalized shape \(normalized)")
            }
            return broadcast(t, to: normalized).doubles()
        }
        let g = try params(scale), b = try bias.map(params)
        let v = x.doubles()
        let (mean, invStd) = length == 0 ? ([Double](repeating: 0, count: groups), [Double](repeating: 0, count: groups))
            : moments(v, groups: groups, length: length, epsilon: epsilon)
        var y = v
        for gi in 0..<groups {
            for k in 0..<length {
                let at = gi * length + k
                y[at] = (v[at] - mean[gi]) * invStd[gi] * g[k] + (b?[k] ?? 0)
            }
        }
        let statShape = Array(x.shape[..<axis]) + [Int](repeating: 1, count: x.rank - axis)
        let stashType: DataType = try ctx.int("stash_type", 1) == 1 ? .float : x.elementType
        return [try RuntimeTensor(shape: x.shape, values: y, elementType: x.elementType),
                try RuntimeTensor(shape: statShape, values: mean, elementType: stashType),
                try RuntimeTensor(shape: statShape, values: invStd, elementType: stashType)]
    },
    // RMSNormalization: x / √(mean(x²) + ε) · scale over the axes from
    // `axis` on; Y has the scale's element type.
    "RMSNormalization": { ctx in
        let x = try ctx.input(0), scale = try ctx.input(1)
        guard !isIntTensor(x), !isIntTensor(scale) else { throw KernelError("X and scale must be floating point") }
        guard x.rank >= 1 else { throw KernelError("RMSNormalization needs an input of rank ≥ 1") }
        let axis = try ctx.axis(try ctx.int("axis", -1), rank: x.rank)
        let epsilon = Double(try ctx.float("epsilon", 1e-5))
        let normalized = Array(x.shape[axis...])
        guard (try? broadcastShape(scale.shape, normalized)) == normalized else {
            throw KernelError("scale \(scale.shape) does not broadcast to the normalized shape \(normalized)")
        }
        let g = broadcast(scale, to: normalized).doubles()
        let length = normalized.reduce(1, *), groups = x.shape[..<axis].reduce(1, *)
        var y = x.doubles()
        for gi in 0..<groups where length > 0 {
            let run = y[(gi * length)..<((gi + 1) * length)]
            let inv = 1 / (run.reduce(0) { $0 + $1 * $1 } / Double(length) + epsilon).squareRoot()
            for k in 0..<length { y[gi * length + k] *= inv * g[k] }
        }
        return [try RuntimeTensor(shape: x.shape, values: y, elementType: scale.elementType)]
    },
    "InstanceNormalization": { ctx in
        let x = try ctx.input(0), scale = try ctx.input(1), bias = try ctx.input(2)
        guard !isIntTensor(x) else { throw KernelError("X must be floating point") }
        guard x.rank >= 2 else { throw KernelError("X has shape \(x.shape); InstanceNormalization needs a channel axis") }
        let channels = x.shape[1]
        guard scale.count == channels, bias.count == channels else {
            throw KernelError("scale \(scale.shape) and B \(bias.shape) must hold \(channels) values")
        }
        let epsilon = Double(try ctx.float("epsilon", 1e-5))
        let length = x.shape[2...].reduce(1, *), groups = x.shape[0] * channels
        let v = x.doubles(), g = scale.doubles(), b = bias.doubles()
        guard length > 0 else { return [x] }
        let (mean, invStd) = moments(v, groups: groups, length: length, epsilon: epsilon)
        var y = v
        for gi in 0..<groups {
            let ch = gi % channels
            for k in 0..<length {
                let at = gi * length + k
                y[at] = (v[at] - mean[gi]) * invStd[gi] * g[ch] + b[ch]
            }
        }
        return [try RuntimeTensor(shape: x.shape, values: y, elementType: x.elementType)]
    },
]

private func isIntTensor(_ t: RuntimeTensor) -> Bool {
    if case .int = t.storage { return true }
    return false
}

/// CumSum and CumProd along the axis given as input 1 (`exclusive`: each
/// element leaves itself out; `reverse`: from the end).
private func cumulativeKernel(product: Bool) -> Kernel {
    { ctx in
        let x = try ctx.input(0)
        let axisTensor = try ctx.input(1)
        guard axisTensor.count == 1, case .int(let a) = axisTensor.storage else { throw KernelError("axis must be an integer scalar") }
        guard x.rank >= 1 else { throw KernelError("the input must have rank ≥ 1") }
        guard a[0] >= -Int64(x.rank), a[0] < Int64(x.rank) else { throw KernelError("axis \(a[0]) is out of range for rank \(x.rank)") }
        let axis = try ctx.axis(Int(a[0]), rank: x.rank)
        let exclusive = try ctx.int("exclusive", 0) != 0, reverse = try ctx.int("reverse", 0) != 0
        let (outer, length, inner) = split(x.shape, at: axis)
        func scan<T>(_ v: [T], identity: T, _ combine: (T, T) -> T) -> [T] {
            var out = v
            for o in 0..<outer {
                for i in 0..<inner {
                    var total = identity
                    for step in 0..<length {
                        let k = reverse ? length - 1 - step : step
                        let at = (o * length + k) * inner + i
                        if exclusive {
                            out[at] = total
                            total = combine(total, v[at])
                        } else {
                            total = combine(total, v[at])
                            out[at] = total
                        }
                    }
                }
            }
            return out
        }
        if case .int(let v) = x.storage {
            var t = RuntimeTensor(shape: x.shape, ints: scan(v, identity: product ? 1 : 0, product ? (&*) : (&+)),
                                  elementType: x.elementType)
            t.wrapToElementType()
            return [t]
        }
        let v = x.doubles()
        return [try RuntimeTensor(shape: x.shape, values: product ? scan(v, identity: 1, *) : scan(v, identity: 0, +),
                                  elementType: x.elementType)]
    }
}
