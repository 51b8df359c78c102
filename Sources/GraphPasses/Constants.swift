import ONNXGraph

/// Where a constant value comes from.
public enum ConstantSource: Equatable, Sendable {
    /// `graph.initializers[index]`.
    case initializer(index: Int)
    /// The `Constant` node `graph.nodes[index]`.
    case constantNode(index: Int)
}

/// Why a value is not a compile-time constant.
public enum NotConstant: Error, Equatable, Sendable {
    /// A graph input without an initializer: supplied at run time.
    case graphInput
    /// An initializer also listed as a graph input in an IR ≥ 4 model: a
    /// default that a caller may override at run time.
    case overridableInitializer
    /// Computed by a node other than `Constant`.
    case computed(opType: String)
    /// A `Constant` whose value bnfold cannot read as numbers (string, sparse).
    case unreadableConstant
    /// Not defined in this graph (an enclosing graph's value, or undefined).
    case undefined

    public var explanation: String {
        switch self {
        case .graphInput: "is a graph input, supplied at run time"
        case .overridableInitializer: "is an initializer that is also a graph input, so it can be replaced at run time (IR version 4 or later)"
        case .computed(let op): "is computed by a \(op) node"
        case .unreadableConstant: "is a Constant whose value is not a dense numeric tensor"
        case .undefined: "is not defined in this graph"
        }
    }
}

extension Graph {
    /// The constant tensor called `name` and where it is, or why it is not constant.
    ///
    /// Initializers and `Constant` nodes (`value`, `value_float(s)`,
    /// `value_int(s)`) count; an initializer that is also a graph input
    /// counts only for IR version < 4, where every initializer had to be
    /// listed as an input.
    public func constant(named name: String, irVersion: Int64) -> Result<(Tensor, ConstantSource), NotConstant> {
        let v = value(named: name)
        if let i = v.initializer {
            if v.isGraphInput && irVersion >= 4 { return .failure(.overridableInitializer) }
            return .success((initializers[i], .initializer(index: i)))
        }
        if v.isGraphInput { return .failure(.graphInput) }
        guard let (nodeIndex, _) = v.producer else { return .failure(.undefined) }
        let node = nodes[nodeIndex]
        guard node.isOp("Constant") else { return .failure(.computed(opType: node.opType)) }
        guard let tensor = Graph.constantNodeTensor(node) else { return .failure(.unreadableConstant) }
        return .success((tensor, .constantNode(index: nodeIndex)))
    }

    /// The tensor a `Constant` node produces, for the numeric forms of its value.
    static func constantNodeTensor(_ node: Node) -> Tensor? {
        guard let a = node.attributes.first, node.attributes.count == 1, let name = a.name else { return nil }
        // Runtimes pick the value by the attribute's type, not its name: a
        // file where the two disagree (or that sets several value fields) is
        // not read as a constant at all.
        let expected: Attribute.Kind? = ["value": .tensor, "value_float": .float, "value_floats": .floats,
                                         "value_int": .int, "value_ints": .ints][name]
        guard let expected, a.type == expected || a.type == nil else { return nil }
        let fieldsSet = [a.f != nil, a.i != nil, a.s != nil, a.t != nil, a.g != nil, a.sparseTensor != nil, a.tp != nil,
                         !a.floats.isEmpty, !a.ints.isEmpty, !a.strings.isEmpty, !a.tensors.isEmpty, !a.graphs.isEmpty,
                         !a.sparseTensors.isEmpty, !a.typeProtos.isEmpty].filter { $0 }.count
        guard fieldsSet <= 1 else { return nil }
        switch name {
        case "value":
            guard let t = a.t, t.elementType != .string else { return nil }
            return t
        case "value_float":
            return a.f.flatMap { Tensor(name: nil, elementType: .float, dims: [], values: [Double($0)]) }
        case "value_floats":
            return Tensor(name: nil, elementType: .float, dims: [Int64(a.floats.count)], values: a.floats.map(Double.init))
        case "value_int":
            guard let i = a.i else { return nil }
            var t = Tensor(name: nil, elementType: .int64, dims: [])
            t.rawData = ByteBuffer(withUnsafeBytes(of: i.littleEndian) { Array($0) })
            return t
        case "value_ints":
            var t = Tensor(name: nil, elementType: .int64, dims: [Int64(a.ints.count)])
            t.rawData = ByteBuffer(a.ints.flatMap { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } })
            return t
        default:
            return nil
        }
    }
}
