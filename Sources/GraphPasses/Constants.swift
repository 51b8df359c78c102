import ONNXGraph

/// Where a constant value comes from: what a pass must edit to change it.
public indirect enum ConstantSource: Equatable, Sendable {
    /// The initializer `graph[id]`.
    case initializer(InitializerID)
    /// The `Constant` node `graph[id]`.
    case constantNode(NodeID)
    /// The output of the `Identity` node `graph[id]`, which forwards
    /// the constant from `source`. Exporters insert these when one
    /// parameter feeds several nodes; folds read through them.
    case identity(NodeID, of: ConstantSource)
    /// A constant of an enclosing graph, read by `name` from inside an
    /// If/Loop/Scan body. It belongs to the outer graph: a pass rewriting it
    /// for a node of the subgraph makes a local copy.
    case enclosingGraph(name: String)

    /// The source behind any `Identity` nodes.
    public var root: ConstantSource {
        if case .identity(_, let inner) = self { return inner.root }
        return self
    }
}

/// Why a value is not a compile-time constant.
public indirect enum NotConstant: Error, Equatable, Sendable {
    /// A graph input without an initializer: supplied at run time.
    case graphInput
    /// An initializer also listed as a graph input in an IR ≥ 4 model: a
    /// default that a caller may override at run time (see
    /// ``PassContext/assumeConstantInputs``).
    case overridableInitializer
    /// Computed by a node other than `Constant` or `Identity`.
    case computed(opType: String)
    /// A `Constant` whose value bnfold cannot read as numbers (strings, a
    /// sparse value too large to expand, conflicting attributes).
    case unreadableConstant
    /// Not defined in this graph or any graph around it.
    case undefined
    /// The value is an `Identity` (chain) of `source`, which is not constant.
    case identityOf(source: String, NotConstant)

    public var explanation: String {
        switch self {
        case .graphInput: "is a graph input, supplied at run time"
        case .overridableInitializer:
            "is an initializer that is also a graph input, so a caller can replace it at run time (IR version 4 or later); pass --assume-constant-inputs to treat it as a constant"
        case .computed(let op): "is computed by a \(op) node"
        case .unreadableConstant: "is a Constant whose value is not a dense numeric tensor bnfold can read"
        case .undefined: "is not defined in this graph"
        case .identityOf(let source, let why): "is an Identity of '\(source)', which \(why.explanation)"
        }
    }

    /// The reason behind any `Identity` nodes.
    public var root: NotConstant {
        if case .identityOf(_, let inner) = self { return inner.root }
        return self
    }

    /// The remark reason id passes give when a value is only not constant
    /// because it may be overridden: users can act on it (the option).
    public static let overridableReason = "OverridableInitializer"
}

// MARK: - Looking up constants

extension PassContext {
    /// The constant tensor called `name` as read in `graph`, and where it is;
    /// or why it is not constant. This is the question every fold asks.
    ///
    /// Constant are: initializers; `Constant` nodes (`value`, `value_float(s)`,
    /// `value_int(s)`, and `sparse_value` expanded to a dense tensor of at
    /// most ``sparseExpansionLimit`` elements); the output of an `Identity`
    /// (chain) of a constant; and, inside a subgraph, the constants of the
    /// enclosing graphs it names. An initializer that is also a graph input
    /// is constant for IR version < 4 (where the spec required every
    /// initializer to be an input) and, in the main graph, when
    /// ``assumeConstantInputs`` is set; otherwise it is ``NotConstant/overridableInitializer``.
    /// Values computed by other nodes are not constant here: the
    /// `fold-constants` pass turns those it can evaluate into initializers.
    public func constant(named name: String, in graph: Graph) -> Result<(Tensor, ConstantSource), NotConstant> {
        var identities: [NodeID] = []  // Identity nodes of `graph` passed through, nearest first
        var crossedAs: String?      // the name under which the lookup left `graph`
        var level = scope.enclosingGraphs.count  // which graph `current` is looked up in; count = `graph`
        var current = name
        var visited: Set<String> = [name]
        func scopeGraph(_ level: Int) -> Graph { level == scope.enclosingGraphs.count ? graph : scope.enclosingGraphs[level] }
        func found(_ tensor: Tensor, _ local: ConstantSource) -> Result<(Tensor, ConstantSource), NotConstant> {
            let base = crossedAs.map { ConstantSource.enclosingGraph(name: $0) } ?? local
            return .success((tensor, identities.reversed().reduce(base) { .identity($1, of: $0) }))
        }
        func failed(_ why: NotConstant) -> Result<(Tensor, ConstantSource), NotConstant> {
            .failure(current == name ? why : .identityOf(source: current, why))
        }
        while true {
            let g = scopeGraph(level)
            let v = g.value(named: current)
            if let i = v.initializer {
                let overridable = v.isGraphInput && irVersion >= 4 && !(assumeConstantInputs && level == 0)
                if overridable { return failed(.overridableInitializer) }
                return found(g[i], .initializer(i))
            }
            if v.isGraphInput { return failed(.graphInput) }
            guard let (nodeIndex, _) = v.producer else {
                // Not defined here: an enclosing graph's value, if any defines it.
                guard level > 0 else { return failed(.undefined) }
                if crossedAs == nil { crossedAs = current }
                level -= 1
                continue
            }
            let node = g[nodeIndex]
            if node.isOp("Constant") {
                guard let tensor = Graph.constantNodeTensor(node) else { return failed(.unreadableConstant) }
                return found(tensor, .constantNode(nodeIndex))
            }
            guard node.isOp("Identity"), node.inputs.count == 1, !node.inputs[0].isEmpty,
                  !visited.contains(node.inputs[0]) else {
                return failed(.computed(opType: node.opType))
            }
            if crossedAs == nil { identities.append(nodeIndex) }
            current = node.inputs[0]
            visited.insert(current)
        }
    }

    /// The element type of the value called `name` as read in `graph`: from
    /// its constant, else from a declaration (graph input or output,
    /// `value_info`) in `graph` or a graph around it. Nil when nothing says.
    public func declaredElementType(of name: String, in graph: Graph) -> DataType? {
        if case .success(let (tensor, _)) = constant(named: name, in: graph) { return tensor.elementType }
        for g in [graph] + scope.enclosingGraphs.reversed() {
            for info in g.declarations(of: name) {
                if let type = info.type?.tensorType?.elementType, type != .undefined { return type }
            }
        }
        return nil
    }

    /// Largest dense tensor (elements) a `Constant`'s `sparse_value` is
    /// expanded to: 2²² (16 MiB of float32), the limit `fold-constants`
    /// applies to what it materialises.
    public static let sparseExpansionLimit = 1 << 22
}

extension Graph {
    /// The tensor a `Constant` node produces, for the numeric forms of its value.
    static func constantNodeTensor(_ node: Node) -> Tensor? {
        guard let a = node.attributes.first, node.attributes.count == 1, let name = a.name else { return nil }
        // Runtimes pick the value by the attribute's type, not its name: a
        // file where the two disagree (or that sets several value fields) is
        // not read as a constant at all.
        let expected: Attribute.Kind? = ["value": .tensor, "value_float": .float, "value_floats": .floats,
                                         "value_int": .int, "value_ints": .ints,
                                         "sparse_value": .sparseTensor][name]
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
            return int64Tensor([i], dims: [])
        case "value_ints":
            return int64Tensor(a.ints, dims: [Int64(a.ints.count)])
        case "sparse_value":
            return a.sparseTensor.flatMap { try? $0.dense(limit: PassContext.sparseExpansionLimit) }
        default:
            return nil
        }
    }

    /// An int64 tensor holding `values` in `raw_data`.
    static func int64Tensor(_ values: [Int64], dims: [Int64]) -> Tensor {
        var t = Tensor(name: nil, elementType: .int64, dims: dims)
        t.rawData = ByteBuffer(values.flatMap { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } })
        return t
    }
}

extension SparseTensor {
    /// The dense tensor: zeros except the listed elements.
    ///
    /// `indices` is int64, either `[NNZ]` linear positions or `[NNZ, rank]`
    /// coordinates (the two forms ONNX allows); every index must lie in
    /// `dims`, and `values` is `[NNZ]` of a whole-byte element type. Bytes
    /// are copied as they are, so any such type expands exactly.
    /// - Throws: ``TensorDataError`` for a malformed tensor or one above `limit` elements.
    func dense(limit: Int) throws -> Tensor {
        guard let values, let indices else { throw TensorDataError(tensor: nil, "sparse tensor without values or indices") }
        let type = values.elementType
        guard let bits = type.bitWidth, bits % 8 == 0, type != .string else {
            throw TensorDataError(tensor: values.name, "sparse values of type \(type) cannot be expanded")
        }
        let width = bits / 8
        var count = 1
        for d in dims {
            guard d >= 0 else { throw TensorDataError(tensor: values.name, "sparse tensor has dimension \(d)") }
            let (p, overflow) = count.multipliedReportingOverflow(by: Int(d))
            guard !overflow, p <= limit else {
                throw TensorDataError(tensor: values.name, "sparse tensor expands to more than \(limit) elements")
            }
            count = p
        }
        guard let nnz = values.elementCount, values.dims.count == 1, indices.elementType == .int64 else {
            throw TensorDataError(tensor: values.name, "sparse values must be 1-D with int64 indices")
        }
        let flat = try indices.int64s()
        let rank = dims.count
        let linear: [Int64]
        if indices.dims == [Int64(nnz)] {
            linear = flat
        } else if indices.dims == [Int64(nnz), Int64(rank)] {
            linear = (0..<nnz).map { k in
                zip(flat[(k * rank)..<((k + 1) * rank)], dims).reduce(Int64(0)) { acc, pair in
                    pair.0 < 0 || pair.0 >= pair.1 ? Int64.min : (acc == Int64.min ? acc : acc * pair.1 + pair.0)
                }
            }
        } else {
            throw TensorDataError(tensor: values.name, "sparse indices have shape \(indices.dims) for \(nnz) values of rank \(rank)")
        }
        guard linear.allSatisfy({ $0 >= 0 && $0 < Int64(count) }) else {
            throw TensorDataError(tensor: values.name, "a sparse index lies outside the shape \(dims)")
        }
        let source = try values.dataBytes()
        var dense = Tensor(name: values.name, elementType: type, dims: dims)
        dense.rawData = ByteBuffer.make(count: count * width) { out in
            _ = out.initializeMemory(as: UInt8.self, repeating: 0)
            source.withUnsafeBytes { src in
                for (k, position) in linear.enumerated() {
                    for b in 0..<width { out[Int(position) * width + b] = src[k * width + b] }
                }
            }
        }
        return dense
    }
}
