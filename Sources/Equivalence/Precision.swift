import ONNXGraph

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
        var g = graph
        func convert(_ t: Tensor) throws -> Tensor {
            guard t.elementType.isFoldableFloat, t.elementType != target else { return t }
            guard let converted = Tensor(name: t.name, elementType: target, dims: t.dims, values: try t.doubles()) else {
                throw EquivalenceError("cannot convert tensor '\(t.name ?? "")' to \(target)")
            }
            return converted
        }
        g.initializers = try g.initializers.map(convert)
        for i in g.inputs.indices {
            if case .tensor(var tt)? = g.inputs[i].type?.value, let e = tt.elementType, e.isFoldableFloat {
                tt.elementType = target
                g.inputs[i].type = TypeProto(value: .tensor(tt), denotation: g.inputs[i].type?.denotation)
            }
        }
        for i in g.nodes.indices {
            for j in g.nodes[i].attributes.indices {
                var a = g.nodes[i].attributes[j]
                if let t = a.t { a.t = try convert(t) }
                if g.nodes[i].isOp("Cast"), a.name == "to", let to = a.i, DataType(rawValue: Int32(truncatingIfNeeded: to)).isFoldableFloat {
                    a.i = Int64(target.rawValue)
                }
                if g.nodes[i].isOp("Constant"), a.name == "value_float", let f = a.f {
                    a = .tensor("value", Tensor(name: nil, elementType: target, dims: [], values: [Double(f)])!)
                } else if g.nodes[i].isOp("Constant"), a.name == "value_floats", a.type == .floats || a.type == nil {
                    let v = a.floats.map(Double.init)
                    a = .tensor("value", Tensor(name: nil, elementType: target, dims: [Int64(v.count)], values: v)!)
                }
                g.nodes[i].attributes[j] = a
            }
        }
        return g
    }
}

/// A problem with the inputs or the models that keeps them from being
/// compared (an input error: exit 2 in the CLI).
public struct EquivalenceError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
