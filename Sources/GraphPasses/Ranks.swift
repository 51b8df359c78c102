import ONNXGraph

extension Graph {
    /// The rank of value `name` when the graph states it: a graph input,
    /// output or `value_info` declaration with a shape, an initializer, a
    /// producer whose output rank is fixed (`Flatten`, `Gemm`: 2), or one
    /// that keeps its input's rank (BatchNormalization, unary activations),
    /// followed back. Nil when nothing says.
    ///
    /// A fold that depends on which axis is the channel axis (a BN after a
    /// MatMul) must know the rank; bnfold does not run shape inference, so
    /// it uses what the file declares.
    func declaredRank(of name: String) -> Int? {
        declaredRank(of: name, depth: 0)
    }

    /// Operators whose first output has their first input's shape.
    static let rankPreserving: Set<String> = [
        "BatchNormalization", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Elu", "Selu", "Softplus", "HardSigmoid",
        "HardSwish", "Gelu", "Clip", "Identity", "Dropout", "Cast", "Neg", "Abs", "Sqrt", "Exp", "Erf",
    ]

    private func declaredRank(of name: String, depth: Int) -> Int? {
        for info in declarations(of: name) {
            if let shape = info.type?.tensorType?.shape { return shape.dims.count }
        }
        if let t = initializer(named: name) { return t.dims.count }
        if let (node, _) = value(named: name).producer,
           self[node].isOp("Flatten") || self[node].isOp("Gemm") {
            return 2
        }
        // Through shape-preserving nodes, a bounded way back.
        if depth < 32, let (node, output) = value(named: name).producer, output == 0,
           self[node].isDefaultDomain, Self.rankPreserving.contains(self[node].opType),
           let input = self[node].inputs.first, !input.isEmpty {
            return declaredRank(of: input, depth: depth + 1)
        }
        return nil
    }

    /// The first rank known among `names` (values that must share one rank).
    func declaredRank(ofAny names: [String]) -> Int? {
        names.lazy.compactMap { self.declaredRank(of: $0) }.first
    }
}

extension PassContext {
    /// ``Graph/declaredRank(ofAny:)`` as read in `graph`: what `graph`
    /// declares, else what the graphs around it declare, innermost first — a
    /// body reads outer values by name, and their declarations are outside.
    func declaredRank(ofAny names: [String], in graph: Graph) -> Int? {
        ([graph] + scope.enclosingGraphs.reversed()).lazy.compactMap { $0.declaredRank(ofAny: names) }.first
    }
}
