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

/// For each element of a tensor of shape `out` (row-major), the flat index
/// of the element of a tensor of shape `shape` broadcast to it.
func broadcastIndexMap(from shape: [Int], to out: [Int]) -> [Int] {
    let count = out.reduce(1, *)
    if shape == out { return Array(0..<count) }
    let rank = out.count
    let padded = [Int](repeating: 1, count: rank - shape.count) + shape
    var strides = [Int](repeating: 0, count: rank)
    var s = 1
    for i in stride(from: rank - 1, through: 0, by: -1) {
        strides[i] = padded[i] == 1 ? 0 : s
        s *= padded[i]
    }
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

/// Applies a binary operator with broadcasting; both inputs must have the same element type.
func binary(_ a: RuntimeTensor, _ b: RuntimeTensor, _ name: String,
            float: (Float, Float) -> Float, double: (Double, Double) -> Double,
            int: ((Int64, Int64) throws -> Int64)?) throws -> RuntimeTensor {
    guard a.elementType == b.elementType else {
        throw KernelError("\(name) inputs have different element types (\(a.elementType), \(b.elementType))")
    }
    let shape = try broadcastShape(a.shape, b.shape)
    let ia = broadcastIndexMap(from: a.shape, to: shape), ib = broadcastIndexMap(from: b.shape, to: shape)
    let storage: RuntimeTensor.Storage
    switch (a.storage, b.storage) {
    case (.float(let x), .float(let y)): storage = .float((0..<ia.count).map { float(x[ia[$0]], y[ib[$0]]) })
    case (.double(let x), .double(let y)): storage = .double((0..<ia.count).map { double(x[ia[$0]], y[ib[$0]]) })
    case (.int(let x), .int(let y)):
        guard let int else { throw KernelError("\(name) does not support \(a.elementType)") }
        storage = .int(try (0..<ia.count).map { try int(x[ia[$0]], y[ib[$0]]) })
    default: throw KernelError("\(name) inputs have different storage")
    }
    var result = RuntimeTensor(shape: shape, elementType: a.elementType, storage: storage)
    result.wrapToElementType()
    return result
}

func binaryKernel(_ name: String, float: @escaping @Sendable (Float, Float) -> Float,
                  double: @escaping @Sendable (Double, Double) -> Double,
                  int: (@Sendable (Int64, Int64) throws -> Int64)?) -> Kernel {
    { ctx in [try binary(ctx.input(0), ctx.input(1), name, float: float, double: double, int: int)] }
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

let elementwiseKernels: [String: Kernel] = [
    "Add": binaryKernel("Add", float: +, double: +, int: { $0 &+ $1 }),
    "Sub": binaryKernel("Sub", float: -, double: -, int: { $0 &- $1 }),
    "Mul": binaryKernel("Mul", float: *, double: *, int: { $0 &* $1 }),
    // Integer division truncates toward zero (C semantics, as onnxruntime).
    "Div": binaryKernel("Div", float: /, double: /, int: { a, b in
        guard b != 0 else { throw KernelError("integer division by zero") }
        return a.dividedReportingOverflow(by: b).partialValue
    }),
    "Relu": { ctx in
        let x = try ctx.input(0)
        if case .int(let v) = x.storage { return [RuntimeTensor(shape: x.shape, ints: v.map { max($0, 0) }, elementType: x.elementType)] }
        return [try unaryFloat(x, "Relu") { $0 > 0 ? $0 : ($0.isNaN ? $0 : 0) }]
    },
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
            let lo = low.isFinite ? Int64(low) : Int64.min, hi = high.isFinite ? Int64(high) : Int64.max
            return [RuntimeTensor(shape: x.shape, ints: v.map { min(max($0, lo), hi) }, elementType: x.elementType)]
        }
        return [try unaryFloat(x, "Clip") { $0.isNaN ? $0 : min(max($0, low), high) }]
    },
]
