import Foundation
import ONNXGraph
import ReferenceRuntime

/// SplitMix64: a small generator whose sequence depends only on the seed, so
/// `--seed S` gives the same inputs on every machine.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A standard normal sample (Box–Muller).
    public mutating func normal() -> Double {
        let u1 = Double.random(in: Double.leastNormalMagnitude...1, using: &self)
        let u2 = Double.random(in: 0..<1, using: &self)
        return (-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2)
    }
}

/// What a graph needs fed: its inputs that are not initializers, with their
/// declared element type and concrete shape.
public struct InputSpec: Equatable, Sendable {
    public var name: String
    public var elementType: DataType
    public var shape: [Int]

    public init(name: String, elementType: DataType, shape: [Int]) {
        self.name = name; self.elementType = elementType; self.shape = shape
    }

    /// The inputs of `graph` that are not initializers. Symbolic or unknown
    /// dimensions take their size from `shapes[name]` (a full shape) or are 1.
    public static func inputs(of graph: Graph, shapes: [String: [Int]] = [:]) throws -> [InputSpec] {
        let initializers = Set(graph.initializers.compactMap(\.name))
        var result: [InputSpec] = []
        for input in graph.inputs {
            guard let name = input.name, !name.isEmpty, !initializers.contains(name) else { continue }
            guard let tt = input.type?.tensorType, let type = tt.elementType, type != .undefined else {
                throw EquivalenceError("graph input '\(name)' is not a tensor of known element type")
            }
            let given = shapes[name]
            guard let dims = tt.shape?.dims else {
                guard let given else { throw EquivalenceError("graph input '\(name)' has no declared shape; give it with --input-shape") }
                result.append(InputSpec(name: name, elementType: type, shape: given))
                continue
            }
            if let given, given.count != dims.count {
                throw EquivalenceError("--input-shape \(name) has \(given.count) dimensions, but the input has rank \(dims.count)")
            }
            var shape: [Int] = []
            for (i, d) in dims.enumerated() {
                if case .value(let v)? = d.value {
                    guard v >= 0, v <= Int64(Int32.max) else { throw EquivalenceError("graph input '\(name)' has an invalid dimension \(v)") }
                    if let given, given[i] != Int(v) {
                        throw EquivalenceError("--input-shape \(name): dimension \(i) is fixed at \(v) by the model, not \(given[i])")
                    }
                    shape.append(Int(v))
                } else {
                    shape.append(given?[i] ?? 1)
                }
            }
            result.append(InputSpec(name: name, elementType: type, shape: shape))
        }
        return result
    }

    /// The element count, or an error over 2³¹ − 1 elements.
    public func elementCount() throws -> Int {
        var count = 1
        for d in shape {
            let (p, overflow) = count.multipliedReportingOverflow(by: d)
            guard d >= 0, !overflow, p <= Int(Int32.max) else {
                throw EquivalenceError("graph input '\(name)' with shape \(shape) is too large")
            }
            count = p
        }
        return count
    }

    /// Standard normal values rounded into the element type (floating-point inputs only).
    public func random(_ rng: inout SplitMix64) throws -> RuntimeTensor {
        guard elementType.isFoldableFloat else {
            throw EquivalenceError("graph input '\(name)' is \(elementType); random inputs are floating-point only, give it with --input")
        }
        let count = try elementCount()
        // The Double draws and the tensor made from them.
        try RuntimeTensor.reserve(count: count, bytesPerElement: 16)
        let values = (0..<count).map { _ in rng.normal() }
        return try RuntimeTensor(shape: shape, values: values, elementType: elementType)
    }
}
