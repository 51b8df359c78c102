import ONNXGraph

extension Graph {
    /// A copy in which every floating-point tensor type — graph inputs,
    /// `Cast` targets, `Constant`/`ConstantOfShape` values and (with
    /// `initializers`) initializers — is `target` (`.double` or `.float`).
    /// Widening to double is exact; the same network then runs with that
    /// type's rounding. `value_float(s)` Constants become tensors of `target`.
    package func retypingFloats(to target: DataType, initializers: Bool) throws -> Graph {
        var g = self
        func convert(_ t: Tensor) throws -> Tensor {
            guard t.elementType.isFoldableFloat, t.elementType != target else { return t }
            guard let converted = Tensor(name: t.name, elementType: target, dims: t.dims, values: try t.doubles()) else {
                throw RuntimeError(node: "", opType: "", problem: "cannot convert tensor '\(t.name ?? "")' to \(target)")
            }
            return converted
        }
        if initializers { g.initializers = try g.initializers.map(convert) }
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
