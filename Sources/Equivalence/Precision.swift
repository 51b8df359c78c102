import ONNXGraph
import ReferenceRuntime

/// Copies of a graph computing in another floating-point precision.
public enum Precision {
    /// Unit roundoff (half an ulp of 1) of a floating-point element type; nil for other types.
    public static func unitRoundoff(_ type: DataType) -> Double? {
        switch type {
        case .float: 0x1p-24
        case .double: 0x1p-53
        case .float16: 0x1p-11
        case .bfloat16: 0x1p-8
        default: nil
        }
    }

    /// A copy of `graph` in which every floating-point tensor (initializers,
    /// `Constant`/`ConstantOfShape` values, graph inputs, `Cast` targets) has
    /// element type `target` (`.double` or `.float`). Widening to double is
    /// exact; the same network then runs with 2⁻⁵³ rounding.
    public static func retyped(_ graph: Graph, to target: DataType) throws -> Graph {
        do {
            return try graph.retypingFloats(to: target, initializers: true)
        } catch let error as RuntimeError {
            throw EquivalenceError(error.problem)
        }
    }
}

/// A problem with the inputs or the models that keeps them from being
/// compared (an input error: exit 2 in the CLI).
public struct EquivalenceError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
