import ONNXGraph

// MARK: - Helpers

/// Row-major strides of a shape.
func rowMajorStrides(_ shape: [Int]) -> [Int] {
    var strides = [Int](repeating: 1, count: shape.count)
    var s = 1
    for i in stride(from: shape.count - 1, through: 0, by: -1) { strides[i] = s; s *= shape[i] }
    return strides
}

/// Marks a source position that lies outside the source (padding).
let outsideSource = Int.min / 4

/// Builds a tensor of `outShape` whose element at multi-index `i` is the
/// source element at flat offset `Σ offsets[axis][i[axis]]`; an offset of
/// `outsideSource` on any axis gives `fill`. Transpose, Slice and Pad are
/// all this with different per-axis offset tables.
func gatherByAxisOffsets(_ src: RuntimeTensor, outShape: [Int], offsets: [[Int]], fill: Double = 0) -> RuntimeTensor {
    let count = outShape.reduce(1, *)
    var indices = [Int](repeating: 0, count: count)
    if count > 0 {
        let rank = outShape.count
        var index = [Int](repeating: 0, count: rank)
        for o in 0..<count {
            var flat = 0
            var inside = true
            for axis in 0..<rank {
                let off = offsets[axis][index[axis]]
                if off == outsideSource { inside = false; break }
                flat += off
            }
            indices[o] = inside ? flat : -1
            var axis = rank - 1
            while axis >= 0 {
                index[axis] += 1
                if index[axis] < outShape[axis] { break }
                index[axis] = 0
                axis -= 1
            }
        }
    }
    return RuntimeTensor(shape: outShape, elementType: src.elementType, storage: src.storage.gathered(indices, fill: fill))
}

/// The integer values of a 1-D (or scalar) shape-like input.
func intValues(_ t: RuntimeTensor, _ what: String) throws -> [Int] {
    guard t.rank <= 1 else { throw KernelError("\(what) must be 1-D, got shape \(t.shape)") }
    guard case .int(let v) = t.storage else { throw KernelError("\(what) must be an integer tensor, got \(t.elementType)") }
    return v.map { Int(clamping: $0) }
}

/// Axes from the attribute (older opsets) or from input `index` (newer).
func axesArgument(_ ctx: KernelContext, inputSince: Int64, index: Int) throws -> [Int]? {
    if ctx.opset >= inputSince {
        return try ctx.optionalInput(index).map { try intValues($0, "axes") }
    }
    return try ctx.ints("axes")
}

func normalizedAxes(_ axes: [Int], rank: Int, _ ctx: KernelContext) throws -> [Int] {
    let result = try axes.map { try ctx.axis($0, rank: rank) }
    guard Set(result).count == result.count else { throw KernelError("repeated axis in \(axes)") }
    return result
}

/// ONNX data type numbers a Cast may target in this runtime.
func castTarget(_ raw: Int) throws -> DataType {
    let type = DataType(rawValue: Int32(clamping: raw))
    guard RuntimeTensor.isSupported(type) else { throw KernelError("cast to \(type) is not supported") }
    return type
}

/// Converts values to another element type: floats to integers truncate
/// toward zero (NaN and infinities give 0), to bool is "≠ 0", and into
/// float16/bfloat16 rounds to nearest even.
func cast(_ x: RuntimeTensor, to type: DataType) throws -> RuntimeTensor {
    switch RuntimeTensor.storageKind(of: type) {
    case .float?:
        let v: [Float]
        switch x.storage {
        case .float(let f): v = f
        case .double(let d): v = d.map { Float($0) }
        case .int(let i): v = i.map { Float($0) }
        }
        return RuntimeTensor(shape: x.shape, floats: v, elementType: type)
    case .double?:
        return RuntimeTensor(shape: x.shape, doubles: x.doubles())
    case .int?:
        var r: RuntimeTensor
        if type == .bool {
            r = RuntimeTensor(shape: x.shape, ints: x.doubles().map { $0 != 0 ? 1 : 0 }, elementType: type)
        } else {
            let ints: [Int64]
            switch x.storage {
            case .int(let v): ints = v
            default: ints = x.doubles().map { $0.isFinite ? saturatingInt64($0) : 0 }
            }
            r = RuntimeTensor(shape: x.shape, ints: ints, elementType: type)
        }
        r.wrapToElementType()
        return r
    case nil:
        throw KernelError("cast to \(type) is not supported")
    }
}

// MARK: - Kernels

let layoutKernels: [String: Kernel] = [
    "Identity": { ctx in [try ctx.input(0)] },
    "Dropout": { ctx in
        // Inference: Y = X. training_mode (opset ≥ 12 input 2) must be false.
        let x = try ctx.input(0)
        if let training = ctx.optionalInput(2), training.doubles().first ?? 0 != 0 {
            throw KernelError("training_mode = true is not supported")
        }
        if ctx.opset < 7, try ctx.int("is_test", 0) == 0 { throw KernelError("is_test = 0 (training) is not supported") }
        // The optional mask output: all true.
        let mask = RuntimeTensor(shape: x.shape, ints: [Int64](repeating: 1, count: x.count), elementType: .bool)
        return [x, mask]
    },
    "Flatten": { ctx in
        let x = try ctx.input(0)
        var axis = try ctx.int("axis", 1)
        if axis < 0 { axis += x.rank }
        guard axis >= 0, axis <= x.rank else { throw KernelError("axis \(axis) out of range for rank \(x.rank)") }
        return [x.reshaped([x.shape[..<axis].reduce(1, *), x.shape[axis...].reduce(1, *)])]
    },
    "Reshape": { ctx in
        let x = try ctx.input(0)
        let requested: [Int] = ctx.opset >= 5 ? try intValues(ctx.input(1), "shape") : (try ctx.ints("shape") ?? [])
        let allowZero = try ctx.int("allowzero", 0) != 0
        var shape = requested
        var inferred: Int? = nil
        for (i, d) in requested.enumerated() {
            if d == 0 && !allowZero {
                guard i < x.rank else { throw KernelError("shape \(requested) copies axis \(i) of \(x.shape)") }
                shape[i] = x.shape[i]
            } else if d == -1 {
                guard inferred == nil else { throw KernelError("shape \(requested) has more than one -1") }
                inferred = i
            } else if d < 0 {
                throw KernelError("invalid shape \(requested)")
            }
        }
        if let i = inferred {
            var rest = shape
            rest.remove(at: i)
            let known = try checkedCount(rest)
            guard known > 0, x.count % known == 0 else { throw KernelError("cannot reshape \(x.shape) to \(requested)") }
            shape[i] = x.count / known
        }
        guard try checkedCount(shape) == x.count else { throw KernelError("cannot reshape \(x.shape) to \(requested)") }
        return [x.reshaped(shape)]
    },
    "Transpose": { ctx in
        let x = try ctx.input(0)
        let perm = try ctx.ints("perm") ?? Array((0..<x.rank).reversed())
        guard perm.sorted() == Array(0..<x.rank) else { throw KernelError("perm \(perm) is not a permutation of rank \(x.rank)") }
        let strides = rowMajorStrides(x.shape)
        let outShape = perm.map { x.shape[$0] }
        _ = try allocationCount(outShape, bytesPerElement: 16)
        let offsets = perm.map { axis in (0..<x.shape[axis]).map { $0 * strides[axis] } }
        return [gatherByAxisOffsets(x, outShape: outShape, offsets: offsets)]
    },
    "Concat": { ctx in
        let parts = ctx.inputs.compactMap { $0 }
        guard let first = parts.first else { throw KernelError("no inputs") }
        let axis = try ctx.axis(try ctx.int("axis", Int.min), rank: first.rank)
        for p in parts {
            guard p.elementType == first.elementType, p.rank == first.rank,
                  (0..<p.rank).allSatisfy({ $0 == axis || p.shape[$0] == first.shape[$0] }) else {
                throw KernelError("inputs of shapes \(parts.map(\.shape)) and types cannot be concatenated on axis \(axis)")
            }
        }
        let outer = first.shape[..<axis].reduce(1, *)
        var shape = first.shape
        shape[axis] = parts.map { $0.shape[axis] }.reduce(0, +)
        // Concatenate by gathering from a virtual stack of all parts.
        let blocks = parts.map { $0.shape[axis...].reduce(1, *) }
        var starts: [Int] = []
        var total = 0
        for p in parts { starts.append(total); total += p.count }
        var indices: [Int] = []
        indices.reserveCapacity(try allocationCount(shape, bytesPerElement: 16))
        for o in 0..<outer {
            for (k, block) in blocks.enumerated() {
                indices.append(contentsOf: (starts[k] + o * block)..<(starts[k] + (o + 1) * block))
            }
        }
        var floats: [Float] = [], doubles: [Double] = [], ints: [Int64] = []
        for p in parts {
            switch p.storage {
            case .float(let v): floats += v
            case .double(let v): doubles += v
            case .int(let v): ints += v
            }
        }
        let joined: RuntimeTensor.Storage
        switch first.storage {
        case .float: joined = .float(floats)
        case .double: joined = .double(doubles)
        case .int: joined = .int(ints)
        }
        return [RuntimeTensor(shape: shape, elementType: first.elementType, storage: joined.gathered(indices))]
    },
    "Split": { ctx in
        let x = try ctx.input(0)
        let axis = try ctx.axis(try ctx.int("axis", 0), rank: x.rank)
        let dim = x.shape[axis]
        let outputs = ctx.node.outputs.count
        var sizes: [Int]
        if ctx.opset >= 13, let s = ctx.optionalInput(1) {
            sizes = try intValues(s, "split")
        } else if ctx.opset < 13, let s = try ctx.ints("split") {
            sizes = s
        } else if ctx.opset >= 18, ctx.node.attribute("num_outputs") != nil {
            let parts = try ctx.int("num_outputs", outputs)
            guard parts >= 1 else { throw KernelError("num_outputs must be ≥ 1") }
            let size = (dim + parts - 1) / parts
            sizes = (0..<parts).map { max(0, min(size, dim - $0 * size)) }
        } else {
            guard outputs >= 1, dim % outputs == 0 else { throw KernelError("axis \(axis) of size \(dim) does not split evenly into \(outputs)") }
            sizes = Array(repeating: dim / outputs, count: outputs)
        }
        guard sizes.count == outputs, sizes.allSatisfy({ $0 >= 0 && $0 <= dim }), sizes.reduce(0, +) == dim else {
            throw KernelError("split sizes \(sizes) do not cover axis \(axis) of size \(dim) with \(outputs) outputs")
        }
        let strides = rowMajorStrides(x.shape)
        var start = 0
        var results: [RuntimeTensor] = []
        for size in sizes {
            var shape = x.shape
            shape[axis] = size
            let offsets = (0..<x.rank).map { a in
                a == axis ? (0..<size).map { ($0 + start) * strides[a] } : (0..<x.shape[a]).map { $0 * strides[a] }
            }
            results.append(gatherByAxisOffsets(x, outShape: shape, offsets: offsets))
            start += size
        }
        return results
    },
    "Slice": { ctx in
        let x = try ctx.input(0)
        let starts: [Int], ends: [Int], axesArg: [Int]?, steps: [Int]?
        if ctx.opset >= 10 {
            starts = try intValues(ctx.input(1), "starts")
            ends = try intValues(ctx.input(2), "ends")
            axesArg = try ctx.optionalInput(3).map { try intValues($0, "axes") }
            steps = try ctx.optionalInput(4).map { try intValues($0, "steps") }
        } else {
            starts = try ctx.ints("starts") ?? []
            ends = try ctx.ints("ends") ?? []
            axesArg = try ctx.ints("axes")
            steps = nil
        }
        let axes = try normalizedAxes(axesArg ?? Array(0..<starts.count), rank: x.rank, ctx)
        let stepValues = steps ?? Array(repeating: 1, count: starts.count)
        guard ends.count == starts.count, axes.count == starts.count, stepValues.count == starts.count else {
            throw KernelError("starts, ends, axes and steps have different lengths")
        }
        var first = [Int](repeating: 0, count: x.rank)
        var step = [Int](repeating: 1, count: x.rank)
        var shape = x.shape
        for (k, axis) in axes.enumerated() {
            let dim = x.shape[axis], s = max(min(stepValues[k], Int(Int32.max)), -Int(Int32.max))
            guard s != 0 else { throw KernelError("step 0") }
            var b = starts[k] < 0 ? starts[k] + dim : starts[k]
            var e = ends[k] < 0 ? ends[k] + dim : ends[k]
            if s > 0 {
                b = min(max(b, 0), dim); e = min(max(e, 0), dim)
                shape[axis] = e > b ? (e - b - 1) / s + 1 : 0
            } else {
                b = min(max(b, 0), dim - 1); e = min(max(e, -1), dim - 1)
                shape[axis] = b > e ? (b - e - 1) / (-s) + 1 : 0
            }
            first[axis] = b
            step[axis] = s
        }
        _ = try allocationCount(shape, bytesPerElement: 16)
        let strides = rowMajorStrides(x.shape)
        let offsets = (0..<x.rank).map { a in (0..<shape[a]).map { (first[a] + $0 * step[a]) * strides[a] } }
        return [gatherByAxisOffsets(x, outShape: shape, offsets: offsets)]
    },
    "Gather": { ctx in
        let x = try ctx.input(0), idx = try ctx.input(1)
        guard x.rank >= 1 else { throw KernelError("data must have rank ≥ 1") }
        let axis = try ctx.axis(try ctx.int("axis", 0), rank: x.rank)
        guard case .int(let raw) = idx.storage else { throw KernelError("indices must be integers, got \(idx.elementType)") }
        let dim = x.shape[axis]
        let indices = try raw.map { i -> Int in
            let j = i < 0 ? Int(i) + dim : Int(clamping: i)
            guard j >= 0, j < dim else { throw KernelError("index \(i) is out of range for axis \(axis) of size \(dim)") }
            return j
        }
        let outer = x.shape[..<axis].reduce(1, *), inner = x.shape[(axis + 1)...].reduce(1, *)
        let shape = Array(x.shape[..<axis]) + idx.shape + Array(x.shape[(axis + 1)...])
        var map: [Int] = []
        map.reserveCapacity(try allocationCount(shape, bytesPerElement: 16))
        for o in 0..<outer { for j in indices { map.append(contentsOf: ((o * dim + j) * inner)..<((o * dim + j + 1) * inner)) } }
        return [RuntimeTensor(shape: shape, elementType: x.elementType, storage: x.storage.gathered(map))]
    },
    "Shape": { ctx in
        let x = try ctx.input(0)
        var start = try ctx.int("start", 0), end = try ctx.int("end", x.rank)
        if start < 0 { start += x.rank }
        if end < 0 { end += x.rank }
        start = min(max(start, 0), x.rank); end = min(max(end, 0), x.rank)
        let dims = start < end ? x.shape[start..<end].map(Int64.init) : []
        return [RuntimeTensor(shape: [dims.count], ints: dims)]
    },
    "Size": { ctx in [RuntimeTensor(shape: [], ints: [Int64(try ctx.input(0).count)])] },
    "Unsqueeze": { ctx in
        let x = try ctx.input(0)
        guard let axesArg = try axesArgument(ctx, inputSince: 13, index: 1) else { throw KernelError("axes are required") }
        let rank = x.rank + axesArg.count
        let axes = try normalizedAxes(axesArg, rank: rank, ctx)
        var shape: [Int] = []
        var next = 0
        for i in 0..<rank {
            if axes.contains(i) { shape.append(1) } else { shape.append(x.shape[next]); next += 1 }
        }
        return [x.reshaped(shape)]
    },
    "Squeeze": { ctx in
        let x = try ctx.input(0)
        let axes = try axesArgument(ctx, inputSince: 13, index: 1).map { try normalizedAxes($0, rank: x.rank, ctx) }
        if let axes, let bad = axes.first(where: { x.shape[$0] != 1 }) {
            throw KernelError("axis \(bad) has size \(x.shape[bad]), not 1")
        }
        var shape: [Int] = []
        for (i, d) in x.shape.enumerated() {
            let drop = axes.map { $0.contains(i) } ?? (d == 1)
            if !drop { shape.append(d) }
        }
        return [x.reshaped(shape)]
    },
    "Expand": { ctx in
        let x = try ctx.input(0)
        let requested = try intValues(ctx.input(1), "shape")
        let shape = try broadcastShape(x.shape, requested)
        _ = try allocationCount(shape, bytesPerElement: 16)
        return [broadcast(x, to: shape)]
    },
    "Cast": { ctx in [try cast(ctx.input(0), to: castTarget(try ctx.int("to", 0)))] },
    "CastLike": { ctx in [try cast(ctx.input(0), to: ctx.input(1).elementType)] },
    "Constant": { ctx in
        let node = ctx.node
        guard let a = node.attributes.first else { throw KernelError("Constant has no value attribute") }
        switch (a.name ?? "", a.value) {
        case ("value", .tensor(let t)?): return [try RuntimeTensor(t)]
        case ("value_float", .float(let f)?): return [RuntimeTensor(shape: [], floats: [f])]
        case ("value_floats", .floats(let f)?): return [RuntimeTensor(shape: [f.count], floats: f)]
        case ("value_int", .int(let i)?): return [RuntimeTensor(shape: [], ints: [i])]
        case ("value_ints", .ints(let i)?): return [RuntimeTensor(shape: [i.count], ints: i)]
        default: throw KernelError("Constant attribute '\(a.name ?? "")' is not supported")
        }
    },
    "ConstantOfShape": { ctx in
        let shape = try intValues(ctx.input(0), "shape")
        let count = try allocationCount(shape)
        var value = RuntimeTensor(shape: [1], floats: [0])
        if let a = ctx.node.attribute("value") {
            guard case .tensor(let t)? = a.value else { throw KernelError("value must be a TENSOR") }
            value = try RuntimeTensor(t)
            guard value.count == 1 else { throw KernelError("value must hold one element") }
        }
        let storage: RuntimeTensor.Storage = switch value.storage {
        case .float(let v): .float(Array(repeating: v[0], count: count))
        case .double(let v): .double(Array(repeating: v[0], count: count))
        case .int(let v): .int(Array(repeating: v[0], count: count))
        }
        return [RuntimeTensor(shape: shape, elementType: value.elementType, storage: storage)]
    },
    "Pad": { ctx in
        let x = try ctx.input(0)
        let mode = try ctx.string("mode", "constant")
        var pads: [Int], fill = 0.0
        var axes = Array(0..<x.rank)
        if ctx.opset >= 11 {
            pads = try intValues(ctx.input(1), "pads")
            if let v = ctx.optionalInput(2) {
                guard v.count == 1 else { throw KernelError("constant_value must be a scalar") }
                fill = v.doubles()[0]
            }
            if let a = ctx.optionalInput(3) { axes = try normalizedAxes(intValues(a, "axes"), rank: x.rank, ctx) }
        } else {
            pads = try ctx.ints(ctx.opset < 2 ? "paddings" : "pads") ?? []
            fill = Double(try ctx.float("value", 0))
        }
        guard pads.count == 2 * axes.count else { throw KernelError("pads \(pads) do not match \(axes.count) axes") }
        var begin = [Int](repeating: 0, count: x.rank), end = begin
        for (k, a) in axes.enumerated() { begin[a] = pads[k]; end[a] = pads[axes.count + k] }
        let strides = rowMajorStrides(x.shape)
        var shape = x.shape
        var offsets: [[Int]] = []
        for a in 0..<x.rank {
            // `magnitude`, not `abs`: abs(Int.min) traps (pads = INT64_MIN).
            guard begin[a].magnitude <= UInt(maxElements), end[a].magnitude <= UInt(maxElements) else { throw KernelError("pads \(pads) are too large") }
            shape[a] = x.shape[a] + begin[a] + end[a]
        }
        _ = try allocationCount(shape.map { max($0, 0) }, bytesPerElement: 16)
        for a in 0..<x.rank {
            let dim = x.shape[a]
            guard shape[a] >= 0 else { throw KernelError("pads \(pads) remove more than axis \(a) holds") }
            if mode != "constant", dim == 0, shape[a] > 0 { throw KernelError("\(mode) padding of an empty axis") }
            offsets.append(try (0..<shape[a]).map { o in
                var i = o - begin[a]
                if i < 0 || i >= dim {
                    switch mode {
                    case "constant": return outsideSource
                    case "edge": i = min(max(i, 0), dim - 1)
                    case "reflect":
                        guard dim > 1 else { i = 0; break }
                        let period = 2 * (dim - 1)
                        i = ((i % period) + period) % period
                        if i >= dim { i = period - i }
                    case "wrap": i = ((i % dim) + dim) % dim
                    default: throw KernelError("unknown mode '\(mode)'")
                    }
                }
                return i * strides[a]
            })
        }
        return [gatherByAxisOffsets(x, outShape: shape, offsets: offsets, fill: fill)]
    },
]
