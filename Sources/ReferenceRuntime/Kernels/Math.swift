import Foundation
import ONNXGraph

// Elementwise math, comparisons and logic, variadic maps (Max, Min, Sum,
// Mean), Where and Range. Straightforward loops over broadcast index maps:
// floating-point values are computed in Double and rounded once into the
// element type; integer and bool values (Int64 storage) stay integers and
// are wrapped into their type. Bool tensors hold 0 and 1.

// MARK: - Broadcasting several operands

/// The broadcast shape of `shapes` and, per operand, the flat index of its
/// element for each output element.
func broadcastMaps(_ shapes: [[Int]]) throws -> (shape: [Int], maps: [[Int]]) {
    var shape: [Int] = []
    for s in shapes { shape = try broadcastShape(shape, s) }
    _ = try allocationCount(shape, bytesPerElement: 8 * (shapes.count + 1))
    return (shape, shapes.map { broadcastIndexMap(from: $0, to: shape) })
}

/// A tensor of `type` from Double results (rounded into float types; integers truncated, then wrapped).
private func made(_ shape: [Int], _ values: [Double], _ type: DataType) throws -> RuntimeTensor {
    try RuntimeTensor(shape: shape, values: values, elementType: type)
}

private func madeInts(_ shape: [Int], _ values: [Int64], _ type: DataType) -> RuntimeTensor {
    var t = RuntimeTensor(shape: shape, ints: values, elementType: type)
    t.wrapToElementType()
    return t
}

private func isInt(_ t: RuntimeTensor) -> Bool {
    if case .int = t.storage { return true }
    return false
}

private func sameType(_ tensors: [RuntimeTensor], _ name: String) throws {
    guard let first = tensors.first else { throw KernelError("\(name) needs at least one input") }
    for t in tensors where t.elementType != first.elementType {
        throw KernelError("\(name) inputs have different element types (\(first.elementType), \(t.elementType))")
    }
}

/// A broadcast map of two tensors of the same type: `float` on Double
/// values, `int` (nil: not supported) on Int64 values; the result has their type.
private func mapped2(_ a: RuntimeTensor, _ b: RuntimeTensor, _ name: String,
                     float: (Double, Double) -> Double, int: ((Int64, Int64) throws -> Int64)?) throws -> RuntimeTensor {
    try sameType([a, b], name)
    let (shape, maps) = try broadcastMaps([a.shape, b.shape])
    if case .int(let x) = a.storage, case .int(let y) = b.storage {
        guard let int else { throw KernelError("\(name) does not support \(a.elementType)") }
        return madeInts(shape, try (0..<maps[0].count).map { try int(x[maps[0][$0]], y[maps[1][$0]]) }, a.elementType)
    }
    let x = a.doubles(), y = b.doubles()
    return try made(shape, (0..<maps[0].count).map { float(x[maps[0][$0]], y[maps[1][$0]]) }, a.elementType)
}

/// A comparison of two tensors of the same type, broadcast: a bool tensor.
private func compared(_ a: RuntimeTensor, _ b: RuntimeTensor, _ name: String,
                      float: (Double, Double) -> Bool, int: (Int64, Int64) -> Bool) throws -> RuntimeTensor {
    try sameType([a, b], name)
    let (shape, maps) = try broadcastMaps([a.shape, b.shape])
    let values: [Int64]
    if case .int(let x) = a.storage, case .int(let y) = b.storage {
        values = (0..<maps[0].count).map { int(x[maps[0][$0]], y[maps[1][$0]]) ? 1 : 0 }
    } else {
        let x = a.doubles(), y = b.doubles()
        values = (0..<maps[0].count).map { float(x[maps[0][$0]], y[maps[1][$0]]) ? 1 : 0 }
    }
    return RuntimeTensor(shape: shape, ints: values, elementType: .bool)
}

private func comparisonKernel(_ name: String, float: @escaping @Sendable (Double, Double) -> Bool,
                              int: @escaping @Sendable (Int64, Int64) -> Bool) -> Kernel {
    { ctx in [try compared(ctx.input(0), ctx.input(1), name, float: float, int: int)] }
}

private func logicalKernel(_ name: String, _ f: @escaping @Sendable (Bool, Bool) -> Bool) -> Kernel {
    { ctx in
        let a = try ctx.input(0), b = try ctx.input(1)
        guard a.elementType == .bool, b.elementType == .bool else { throw KernelError("\(name) needs bool inputs") }
        return [try compared(a, b, name, float: { f($0 != 0, $1 != 0) }, int: { f($0 != 0, $1 != 0) })]
    }
}

/// A unary map defined on integers too (Neg, Abs, Sign).
private func numericUnaryKernel(_ name: String, float: @escaping @Sendable (Double) -> Double,
                                int: @escaping @Sendable (Int64) -> Int64) -> Kernel {
    { ctx in
        let x = try ctx.input(0)
        if case .int(let v) = x.storage {
            guard x.elementType != .bool else { throw KernelError("\(name) does not support bool") }
            return [madeInts(x.shape, v.map(int), x.elementType)]
        }
        return [try unaryFloat(x, name, float)]
    }
}

/// Max, Min, Sum, Mean: any number of inputs, broadcast together.
private func variadicKernel(_ name: String, float: @escaping @Sendable ([Double]) -> Double,
                            int: (@Sendable ([Int64]) -> Int64)?) -> Kernel {
    { ctx in
        let xs = try (0..<ctx.inputs.count).map { try ctx.input($0) }
        try sameType(xs, name)
        let (shape, maps) = try broadcastMaps(xs.map(\.shape))
        let count = shape.reduce(1, *)
        if isInt(xs[0]) {
            guard let int else { throw KernelError("\(name) does not support \(xs[0].elementType)") }
            let values = xs.map { $0.int64s() }
            return [madeInts(shape, (0..<count).map { o in int((0..<xs.count).map { values[$0][maps[$0][o]] }) }, xs[0].elementType)]
        }
        let values = xs.map { $0.doubles() }
        return [try made(shape, (0..<count).map { o in float((0..<xs.count).map { values[$0][maps[$0][o]] }) }, xs[0].elementType)]
    }
}

private func floatOnly(_ x: RuntimeTensor, _ name: String) throws {
    if isInt(x) { throw KernelError("\(name) needs a floating-point input, got \(x.elementType)") }
}

/// The remainder of `a / b` with the sign of `b` (Python's, numpy's mod).
func flooredRemainder(_ a: Int64, _ b: Int64) throws -> Int64 {
    guard b != 0 else { throw KernelError("integer modulo by zero") }
    if b == -1 { return 0 }
    let r = a % b
    return r != 0 && (r < 0) != (b < 0) ? r + b : r
}

func flooredRemainder(_ a: Double, _ b: Double) -> Double {
    let r = fmod(a, b)
    return r != 0 && (r < 0) != (b < 0) ? r + b : r
}

/// Gelu, exact (erf) or the tanh approximation.
private func gelu(_ x: Double, tanhApproximation: Bool) -> Double {
    if tanhApproximation {
        return 0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x)))
    }
    return 0.5 * x * (1 + erf(x / 2.0.squareRoot()))
}

/// log(1 + eˣ) without overflow.
private func softplus(_ x: Double) -> Double { x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)) }

let mathKernels: [String: Kernel] = [
    // Unary floating-point maps.
    "Sqrt": unaryKernel("Sqrt") { _ in { $0.squareRoot() } },
    "Exp": unaryKernel("Exp") { _ in { exp($0) } },
    "Log": unaryKernel("Log") { _ in { log($0) } },
    "Reciprocal": unaryKernel("Reciprocal") { _ in { 1 / $0 } },
    "Erf": unaryKernel("Erf") { _ in { erf($0) } },
    "Ceil": unaryKernel("Ceil") { _ in { $0.rounded(.up) } },
    "Floor": unaryKernel("Floor") { _ in { $0.rounded(.down) } },
    "Round": unaryKernel("Round") { _ in { $0.rounded(.toNearestOrEven) } },
    "Sin": unaryKernel("Sin") { _ in { sin($0) } },
    "Cos": unaryKernel("Cos") { _ in { cos($0) } },
    "Tan": unaryKernel("Tan") { _ in { tan($0) } },
    "Asin": unaryKernel("Asin") { _ in { asin($0) } },
    "Acos": unaryKernel("Acos") { _ in { acos($0) } },
    "Atan": unaryKernel("Atan") { _ in { atan($0) } },
    "Sinh": unaryKernel("Sinh") { _ in { sinh($0) } },
    "Cosh": unaryKernel("Cosh") { _ in { cosh($0) } },
    "Asinh": unaryKernel("Asinh") { _ in { asinh($0) } },
    "Acosh": unaryKernel("Acosh") { _ in { acosh($0) } },
    "Atanh": unaryKernel("Atanh") { _ in { atanh($0) } },
    "Softplus": unaryKernel("Softplus") { _ in { softplus($0) } },
    "Softsign": unaryKernel("Softsign") { _ in { $0 / (1 + abs($0)) } },
    "Mish": unaryKernel("Mish") { _ in { $0 * tanh(softplus($0)) } },
    "Elu": unaryKernel("Elu") { ctx in
        let alpha = Double(try ctx.float("alpha", 1))
        return { $0 < 0 ? alpha * (exp($0) - 1) : $0 }
    },
    "Celu": unaryKernel("Celu") { ctx in
        let alpha = Double(try ctx.float("alpha", 1))
        return { max(0, $0) + min(0, alpha * (exp($0 / alpha) - 1)) }
    },
    "Selu": unaryKernel("Selu") { ctx in
        let alpha = Double(try ctx.float("alpha", 1.67326319217681884765625))
        let gamma = Double(try ctx.float("gamma", 1.05070102214813232421875))
        return { $0 <= 0 ? gamma * (alpha * exp($0) - alpha) : gamma * $0 }
    },
    "ThresholdedRelu": unaryKernel("ThresholdedRelu") { ctx in
        let alpha = Double(try ctx.float("alpha", 1))
        return { $0 > alpha ? $0 : 0 }
    },
    "Gelu": unaryKernel("Gelu") { ctx in
        let approximate = try ctx.string("approximate", "none")
        guard approximate == "none" || approximate == "tanh" else {
            throw KernelError("approximate = '\(approximate)' is not supported")
        }
        return { gelu($0, tanhApproximation: approximate == "tanh") }
    },
    // Unary maps on integers too.
    "Neg": numericUnaryKernel("Neg", float: { -$0 }, int: { 0 &- $0 }),
    "Abs": numericUnaryKernel("Abs", float: { abs($0) }, int: { $0 < 0 ? 0 &- $0 : $0 }),
    "Sign": numericUnaryKernel("Sign", float: { $0.isNaN ? $0 : ($0 > 0 ? 1 : ($0 < 0 ? -1 : 0)) },
                               int: { $0 > 0 ? 1 : ($0 < 0 ? -1 : 0) }),
    "Not": { ctx in
        let x = try ctx.input(0)
        guard x.elementType == .bool else { throw KernelError("Not needs a bool input, got \(x.elementType)") }
        return [RuntimeTensor(shape: x.shape, ints: x.int64s().map { $0 == 0 ? 1 : 0 }, elementType: .bool)]
    },
    "IsNaN": { ctx in
        let x = try ctx.input(0)
        try floatOnly(x, "IsNaN")
        return [RuntimeTensor(shape: x.shape, ints: x.doubles().map { $0.isNaN ? 1 : 0 }, elementType: .bool)]
    },
    "IsInf": { ctx in
        let x = try ctx.input(0)
        try floatOnly(x, "IsInf")
        let negative = try ctx.int("detect_negative", 1) != 0, positive = try ctx.int("detect_positive", 1) != 0
        return [RuntimeTensor(shape: x.shape, ints: x.doubles().map {
            $0.isInfinite && ($0 > 0 ? positive : negative) ? 1 : 0
        }, elementType: .bool)]
    },
    // Comparisons and logic (bool results).
    "Equal": comparisonKernel("Equal", float: { $0 == $1 }, int: { $0 == $1 }),
    "Less": comparisonKernel("Less", float: { $0 < $1 }, int: { $0 < $1 }),
    "LessOrEqual": comparisonKernel("LessOrEqual", float: { $0 <= $1 }, int: { $0 <= $1 }),
    "Greater": comparisonKernel("Greater", float: { $0 > $1 }, int: { $0 > $1 }),
    "GreaterOrEqual": comparisonKernel("GreaterOrEqual", float: { $0 >= $1 }, int: { $0 >= $1 }),
    "And": logicalKernel("And") { $0 && $1 },
    "Or": logicalKernel("Or") { $0 || $1 },
    "Xor": logicalKernel("Xor") { $0 != $1 },
    // Binary arithmetic beyond Add/Sub/Mul/Div.
    // fmod = 0: the remainder takes the divisor's sign (integers; floats as
    // numpy's mod); fmod = 1: C's fmod, the dividend's sign.
    "Mod": { ctx in
        let fmodMode = try ctx.int("fmod", 0) != 0
        let a = try ctx.input(0), b = try ctx.input(1)
        if fmodMode {
            return [try mapped2(a, b, "Mod", float: { fmod($0, $1) }, int: { x, y in
                guard y != 0 else { throw KernelError("integer modulo by zero") }
                return y == -1 ? 0 : x % y
            })]
        }
        return [try mapped2(a, b, "Mod", float: flooredRemainder, int: flooredRemainder)]
    },
    // Pow: the base's element type; the exponent may have another type.
    "Pow": { ctx in
        let a = try ctx.input(0), b = try ctx.input(1)
        let (shape, maps) = try broadcastMaps([a.shape, b.shape])
        let y = b.doubles()
        if case .int(let x) = a.storage {
            guard a.elementType != .bool else { throw KernelError("Pow does not support bool") }
            let values = (0..<maps[0].count).map { saturatingInt64(pow(Double(x[maps[0][$0]]), y[maps[1][$0]])) }
            return [madeInts(shape, values, a.elementType)]
        }
        let x = a.doubles()
        return [try made(shape, (0..<maps[0].count).map { pow(x[maps[0][$0]], y[maps[1][$0]]) }, a.elementType)]
    },
    "PRelu": { ctx in
        let x = try ctx.input(0), slope = try ctx.input(1)
        let result = try mapped2(x, slope, "PRelu", float: { $0 < 0 ? $0 * $1 : $0 }, int: { $0 < 0 ? $0 &* $1 : $0 })
        guard result.shape == x.shape else { throw KernelError("slope of shape \(slope.shape) does not broadcast to X's \(x.shape)") }
        return [result]
    },
    "BitShift": { ctx in
        let a = try ctx.input(0), b = try ctx.input(1)
        guard isInt(a), a.elementType != .bool else {
            throw KernelError("BitShift does not support \(a.elementType)")
        }
        let direction = try ctx.string("direction", "")
        guard direction == "LEFT" || direction == "RIGHT" else { throw KernelError("direction must be LEFT or RIGHT") }
        let left = direction == "LEFT"
        return [try mapped2(a, b, "BitShift", float: { x, _ in x }, int: { x, s in
            // Right shifts of signed types are arithmetic (opset 28 allows
            // them). A shift past the width gives 0, or −1 for a negative
            // value shifted right; a negative shift counts as out of range
            // too (shifts by 8…63 of narrower types reach the same through
            // the wrap into the type).
            s < 0 || s >= 64 ? (left || x >= 0 ? 0 : -1) : (left ? x << s : x >> s)
        })]
    },
    // NaN propagates through Max and Min (as numpy's maximum and minimum).
    "Max": variadicKernel("Max", float: { v in v.contains { $0.isNaN } ? .nan : v.max()! }, int: { $0.max()! }),
    "Min": variadicKernel("Min", float: { v in v.contains { $0.isNaN } ? .nan : v.min()! }, int: { $0.min()! }),
    "Sum": variadicKernel("Sum", float: { $0.reduce(0, +) }, int: { $0.reduce(0, &+) }),
    "Mean": variadicKernel("Mean", float: { $0.reduce(0, +) / Double($0.count) }, int: nil),
    "Where": { ctx in
        let condition = try ctx.input(0), x = try ctx.input(1), y = try ctx.input(2)
        guard condition.elementType == .bool else { throw KernelError("condition must be bool, got \(condition.elementType)") }
        try sameType([x, y], "Where")
        let (shape, maps) = try broadcastMaps([condition.shape, x.shape, y.shape])
        let c = condition.int64s()
        // -1 marks an element taken from Y: one gather from X, one from Y.
        let fromX = (0..<maps[0].count).map { c[maps[0][$0]] != 0 ? maps[1][$0] : -1 }
        let xs = x.storage.gathered(fromX.map { $0 < 0 ? 0 : $0 })
        let ys = y.storage.gathered(maps[2])
        let storage: RuntimeTensor.Storage
        switch (xs, ys) {
        case (.float(let p), .float(let q)): storage = .float(fromX.indices.map { fromX[$0] < 0 ? q[$0] : p[$0] })
        case (.double(let p), .double(let q)): storage = .double(fromX.indices.map { fromX[$0] < 0 ? q[$0] : p[$0] })
        case (.int(let p), .int(let q)): storage = .int(fromX.indices.map { fromX[$0] < 0 ? q[$0] : p[$0] })
        default: throw KernelError("Where inputs have different storage")
        }
        return [RuntimeTensor(shape: shape, elementType: x.elementType, storage: storage)]
    },
    // Range: ⌈(limit − start) / delta⌉ elements (none when negative), of start's type.
    "Range": { ctx in
        let start = try ctx.input(0), limit = try ctx.input(1), delta = try ctx.input(2)
        try sameType([start, limit, delta], "Range")
        guard start.count == 1, limit.count == 1, delta.count == 1 else { throw KernelError("start, limit and delta must be scalars") }
        if case .int = start.storage {
            let s = start.int64s()[0], l = limit.int64s()[0], d = delta.int64s()[0]
            guard d != 0 else { throw KernelError("delta is 0") }
            let (span, overflow) = l.subtractingReportingOverflow(s)
            guard !overflow else { throw KernelError("limit − start overflows") }
            let n = max(0, span / d + (span % d != 0 && (span < 0) == (d < 0) ? 1 : 0))
            guard n <= Int64(maxElements) else { throw KernelError("Range of \(n) elements is too large") }
            let count = try allocationCount([Int(n)])
            return [madeInts([count], (0..<count).map { s &+ Int64($0) &* d }, start.elementType)]
        }
        let s = start.doubles()[0], l = limit.doubles()[0], d = delta.doubles()[0]
        guard d != 0, s.isFinite, l.isFinite, d.isFinite else { throw KernelError("start, limit and delta must be finite and delta non-zero") }
        let n = max(0, ((l - s) / d).rounded(.up))
        guard n <= Double(maxElements) else { throw KernelError("Range of \(n) elements is too large") }
        let count = try allocationCount([Int(n)])
        return [try made([count], (0..<count).map { s + Double($0) * d }, start.elementType)]
    },
]
