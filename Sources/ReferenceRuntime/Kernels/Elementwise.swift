import Foundation

// MARK: - Broadcasting (numpy rules)

/// The numpy broadcast of two shapes: right-aligned, each pair of
/// dimensions equal or one of them 1.
func broadcastShape(_ a: [Int], _ b: [Int]) throws -> [Int] {
    let rank = max(a.count, b.count)
    var out = [Int](repeating: 1, count: rank)
    for i in 0..<rank {
        let da = i < rank - a.count ? 1 : a[i - (rank - a.count)]
        let db = i < rank - b.count ? 1 : b[i - (rank - b.count)]
        guard da == db || da == 1 || db == 1 else { throw KernelError("shapes \(a) and \(b) do not broadcast") }
        out[i] = da == 1 ? db : da
    }
    return out
}

/// Row-major element strides of `shape` seen as a tensor of `rank` axes
/// (leading axes added): 0 on every axis of size 1, which a broadcast
/// repeats.
func broadcastStrides(_ shape: [Int], rank: Int) -> [Int] {
    let padded = [Int](repeating: 1, count: rank - shape.count) + shape
    var strides = [Int](repeating: 0, count: rank)
    var s = 1
    for i in stride(from: rank - 1, through: 0, by: -1) {
        strides[i] = padded[i] == 1 ? 0 : s
        s *= padded[i]
    }
    return strides
}

/// For each element of a tensor of shape `out` (row-major), the flat index
/// of the element of a tensor of shape `shape` broadcast to it.
func broadcastIndexMap(from shape: [Int], to out: [Int]) -> [Int] {
    let count = out.reduce(1, *)
    if shape == out { return Array(0..<count) }
    let rank = out.count
    let strides = broadcastStrides(shape, rank: rank)
    var map = [Int](repeating: 0, count: count)
    var index = [Int](repeating: 0, count: rank)
    var flat = 0
    for o in 0..<count {
        map[o] = flat
        var axis = rank - 1
        while axis >= 0 {
            index[axis] += 1
            flat += strides[axis]
            if index[axis] < out[axis] { break }
            flat -= strides[axis] * index[axis]
            index[axis] = 0
            axis -= 1
        }
    }
    return map
}

/// `t` broadcast to `shape` (which must be a broadcast of its shape).
func broadcast(_ t: RuntimeTensor, to shape: [Int]) -> RuntimeTensor {
    if t.shape == shape { return t }
    return RuntimeTensor(shape: shape, elementType: t.elementType, storage: t.storage.gathered(broadcastIndexMap(from: t.shape, to: shape)))
}

// MARK: - Binary arithmetic

/// The four arithmetic operators, so that each gets its own specialised
/// (vectorisable) loop instead of a closure call per element.
enum Arithmetic: Sendable {
    case add, sub, mul, div
}

/// A broadcast binary map over strided operands: the output's axes are
/// coalesced (adjacent axes merge when both operands step through them the
/// same way), the innermost run is a plain loop with strides 0 or 1, and the
/// outer positions are split over the workers.
struct BroadcastLoop {
    /// Output dimensions after coalescing (at least one).
    var dims: [Int]
    /// Per operand, the element stride along each coalesced axis (0 where broadcast).
    var strides: [[Int]]

    init(out: [Int], operands: [[Int]]) {
        let rank = out.count
        var dims = out
        var strides = operands.map { broadcastStrides($0, rank: rank) }
        // Merge axis i into i + 1 when every operand's stride on i equals its
        // stride on i + 1 times the dimension of i + 1.
        var i = rank - 2
        while i >= 0 {
            if strides.allSatisfy({ $0[i] == $0[i + 1] * dims[i + 1] }) {
                dims[i + 1] *= dims[i]
                dims.remove(at: i)
                for k in strides.indices { strides[k].remove(at: i) }
            }
            i -= 1
        }
        if dims.isEmpty { dims = [1]; strides = strides.map { _ in [0] } }
        self.dims = dims
        self.strides = strides
    }

    /// Calls `body(outOffset, offsets, length)` for every innermost run, in
    /// parallel chunks of outer positions.
    func forEachRun(_ body: (_ out: Int, _ offsets: [Int], _ length: Int) -> Void) {
        let inner = dims[dims.count - 1]
        let outerDims = Array(dims.dropLast())
        let outer = outerDims.reduce(1, *)
        parallelChunks(outer, grain: max(1, 32_768 / max(inner, 1))) { range in
            // Offsets of the chunk's first position, then an odometer.
            var index = [Int](repeating: 0, count: outerDims.count)
            var rest = range.lowerBound
            for axis in stride(from: outerDims.count - 1, through: 0, by: -1) {
                index[axis] = rest % outerDims[axis]
                rest /= outerDims[axis]
            }
            var offsets = strides.map { st in zip(index, st).reduce(0) { $0 + $1.0 * $1.1 } }
            for position in range {
                body(position * inner, offsets, inner)
                var axis = outerDims.count - 1
                while axis >= 0 {
                    index[axis] += 1
                    for k in offsets.indices { offsets[k] += strides[k][axis] }
                    if index[axis] < outerDims[axis] { break }
                    for k in offsets.indices { offsets[k] -= strides[k][axis] * outerDims[axis] }
                    index[axis] = 0
                    axis -= 1
                }
            }
        }
    }
}

/// `op` of two float arrays broadcast to `shape`. The result reuses `x`'s
/// or `y`'s buffer when that operand already has the output's shape and is
/// not referenced elsewhere (each element is read before its slot is written).
func broadcastArithmetic<T: RuntimeFloat>(_ op: Arithmetic, _ x: consuming [T], _ xShape: [Int], _ y: consuming [T], _ yShape: [Int],
                                          shape: [Int], count: Int) -> [T] {
    var out: [T]
    if xShape == shape {
        out = x; x = []
    } else if yShape == shape {
        out = y; y = []
    } else {
        out = [T](repeating: 0, count: count)
    }
    let loop = BroadcastLoop(out: shape, operands: [xShape, yShape])
    let xStride = loop.strides[0].last!, yStride = loop.strides[1].last!
    out.withUnsafeMutableBufferPointer { o in
        let result = Shared(o.baseAddress!)
        func run(_ xp: UnsafePointer<T>, _ yp: UnsafePointer<T>) {
            let (xs, ys) = (Shared(xp), Shared(yp))
            loop.forEachRun { at, offsets, length in
                let dst = result.value + at, a = xs.value + offsets[0], b = ys.value + offsets[1]
                @inline(__always) func apply(_ f: (T, T) -> T) {
                    switch (xStride, yStride) {
                    case (1, 1): for k in 0..<length { dst[k] = f(a[k], b[k]) }
                    case (1, 0): let v = b[0]; for k in 0..<length { dst[k] = f(a[k], v) }
                    case (0, 1): let v = a[0]; for k in 0..<length { dst[k] = f(v, b[k]) }
                    default: for k in 0..<length { dst[k] = f(a[k * xStride], b[k * yStride]) }
                    }
                }
                switch op {
                case .add: apply(+)
                case .sub: apply(-)
                case .mul: apply(*)
                case .div: apply(/)
                }
            }
        }
        // An operand whose buffer became the output is read through the output.
        if x.isEmpty && xShape == shape {
            y.withUnsafeBufferPointer { run(UnsafePointer(o.baseAddress!), $0.baseAddress ?? UnsafePointer(o.baseAddress!)) }
        } else if y.isEmpty && yShape == shape && !(xShape == shape) {
            x.withUnsafeBufferPointer { run($0.baseAddress ?? UnsafePointer(o.baseAddress!), UnsafePointer(o.baseAddress!)) }
        } else {
            x.withUnsafeBufferPointer { xp in y.withUnsafeBufferPointer { yp in run(xp.baseAddress!, yp.baseAddress!) } }
        }
    }
    return out
}

/// Applies a binary operator with broadcasting; both inputs must have the same element type.
func binary(_ a: consuming RuntimeTensor, _ b: consuming RuntimeTensor, _ name: String, _ op: Arithmetic,
            int: ((Int64, Int64) throws -> Int64)?) throws -> RuntimeTensor {
    guard a.elementType == b.elementType else {
        throw KernelError("\(name) inputs have different element types (\(a.elementType), \(b.elementType))")
    }
    let shape = try broadcastShape(a.shape, b.shape)
    let count = try allocationCount(shape)
    let storage: RuntimeTensor.Storage
    let (aShape, bShape, type) = (a.shape, b.shape, a.elementType)
    switch (a.takeStorage(), b.takeStorage()) {
    case (.float(let x), .float(let y)):
        storage = count == 0 ? .float([]) : .float(broadcastArithmetic(op, x, aShape, y, bShape, shape: shape, count: count))
    case (.double(let x), .double(let y)):
        storage = count == 0 ? .double([]) : .double(broadcastArithmetic(op, x, aShape, y, bShape, shape: shape, count: count))
    case (.int(let x), .int(let y)):
        guard let int else { throw KernelError("\(name) does not support \(type)") }
        let ia = broadcastIndexMap(from: aShape, to: shape), ib = broadcastIndexMap(from: bShape, to: shape)
        storage = .int(try (0..<ia.count).map { try int(x[ia[$0]], y[ib[$0]]) })
    default: throw KernelError("\(name) inputs have different storage")
    }
    var result = RuntimeTensor(shape: shape, elementType: type, storage: storage)
    result.wrapToElementType()
    return result
}

func binaryKernel(_ name: String, _ op: Arithmetic, int: (@Sendable (Int64, Int64) throws -> Int64)?) -> Kernel {
    { ctx in
        // Taken (not copied) so that a last use can lend its buffer to the result.
        let b = try ctx.take(1), a = try ctx.take(0)
        return [try binary(a, b, name, op, int: int)]
    }
}

// MARK: - Unary maps

/// Applies `f` to every element of a floating-point tensor, in Double,
/// rounding once into the storage type.
func unaryFloat(_ x: RuntimeTensor, _ name: String, _ f: (Double) -> Double) throws -> RuntimeTensor {
    let storage: RuntimeTensor.Storage
    switch x.storage {
    case .float(let v): storage = .float(v.map { Float(f(Double($0))) })
    case .double(let v): storage = .double(v.map(f))
    case .int: throw KernelError("\(name) needs a floating-point input, got \(x.elementType)")
    }
    return RuntimeTensor(shape: x.shape, elementType: x.elementType, storage: storage)
}

func unaryKernel(_ name: String, _ f: @escaping @Sendable (KernelContext) throws -> (Double) -> Double) -> Kernel {
    { ctx in [try unaryFloat(ctx.input(0), name, f(ctx))] }
}

/// Relu (exact: no rounding), written into the input's buffer when this
/// node holds its only reference, split over the workers. NaN stays NaN
/// (`x < 0` is false for it).
func reluInPlace(_ x: consuming RuntimeTensor) -> RuntimeTensor {
    switch x.takeStorage() {
    case .float(var v): reluInPlace(&v); x.storage = .float(v)
    case .double(var v): reluInPlace(&v); x.storage = .double(v)
    case .int(let v): x.storage = .int(v.map { max($0, 0) })
    }
    return x
}

/// Relu over `v` in place, split over the workers.
private func reluInPlace<T: RuntimeFloat>(_ v: inout [T]) {
    v.withUnsafeMutableBufferPointer { p in
        guard let start = p.baseAddress else { return }
        let base = Shared(start)
        parallelChunks(p.count, grain: 65_536) { range in
            reluRun(base.value + range.lowerBound, count: range.count)
        }
    }
}

/// The loop is a select on the sign written with bit masks: `if x < 0`
/// compiles to a branch that mispredicts on random signs (2× slower).
@inline(never)
private func reluRun<T: RuntimeFloat>(_ q: UnsafeMutablePointer<T>, count: Int) {
    for i in 0..<count {
        let x = q[i]
        q[i] = Swift.max(x, 0)
    }
}


let elementwiseKernels: [String: Kernel] = [
    "Add": binaryKernel("Add", .add, int: { $0 &+ $1 }),
    "Sub": binaryKernel("Sub", .sub, int: { $0 &- $1 }),
    "Mul": binaryKernel("Mul", .mul, int: { $0 &* $1 }),
    // Integer division truncates toward zero (C semantics, as onnxruntime).
    "Div": binaryKernel("Div", .div, int: { a, b in
        guard b != 0 else { throw KernelError("integer division by zero") }
        return a.dividedReportingOverflow(by: b).partialValue
    }),
    "Relu": { ctx in [reluInPlace(try ctx.take(0))] },
    "LeakyRelu": unaryKernel("LeakyRelu") { ctx in
        let alpha = Double(try ctx.float("alpha", 0.01))
        return { $0 >= 0 ? $0 : alpha * $0 }
    },
    "Sigmoid": unaryKernel("Sigmoid") { _ in { $0 >= 0 ? 1 / (1 + exp(-$0)) : exp($0) / (1 + exp($0)) } },
    "Tanh": unaryKernel("Tanh") { _ in { tanh($0) } },
    "HardSigmoid": unaryKernel("HardSigmoid") { ctx in
        let alpha = Double(try ctx.float("alpha", 0.2)), beta = Double(try ctx.float("beta", 0.5))
        return { max(0, min(1, alpha * $0 + beta)) }
    },
    // HardSwish(x) = x · max(0, min(1, x/6 + 1/2)).
    "HardSwish": unaryKernel("HardSwish") { _ in { $0 * max(0, min(1, $0 / 6 + 0.5)) } },
    "Clip": { ctx in
        let x = try ctx.input(0)
        var low = -Double.infinity, high = Double.infinity
        if ctx.opset < 11 {
            low = Double(try ctx.float("min", -.greatestFiniteMagnitude))
            high = Double(try ctx.float("max", .greatestFiniteMagnitude))
        } else {
            if let m = ctx.optionalInput(1) {
                guard m.count == 1 else { throw KernelError("min must be a scalar, got shape \(m.shape)") }
                low = m.doubles()[0]
            }
            if let m = ctx.optionalInput(2) {
                guard m.count == 1 else { throw KernelError("max must be a scalar, got shape \(m.shape)") }
                high = m.doubles()[0]
            }
        }
        if case .int(let v) = x.storage {
            // Integer bounds are read as integers (a Double cannot hold every
            // int64, and converting 2^63 back would trap); absent ones are the type's range.
            func bound(_ slot: Int, _ absent: Int64) -> Int64 {
                guard ctx.opset >= 11, let m = ctx.optionalInput(slot) else { return absent }
                return m.int64s().first ?? absent
            }
            let lo = bound(1, .min), hi = bound(2, .max)
            return [RuntimeTensor(shape: x.shape, ints: v.map { min(max($0, lo), hi) }, elementType: x.elementType)]
        }
        return [try unaryFloat(x, "Clip") { $0.isNaN ? $0 : min(max($0, low), high) }]
    },
]
