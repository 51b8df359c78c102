import ONNXGraph

extension Graph {
    /// The rank of value `name` when the graph states it: a graph input,
    /// output or `value_info` declaration with a shape, an initializer, or a
    /// producer whose output rank is fixed (`Flatten`, `Gemm`: 2). Nil when
    /// nothing says.
    ///
    /// A fold that depends on which axis is the channel axis (a BN after a
    /// MatMul) must know the rank; bnfold does not run shape inference, so
    /// it uses what the file declares.
    func declaredRank(of name: String) -> Int? {
        for info in inputs + outputs + valueInfo where info.name == name {
            if let shape = info.type?.tensorType?.shape { return shape.dims.count }
        }
        if let t = initializer(named: name) { return t.dims.count }
        if let (node, _) = value(named: name).producer,
           nodes[node].isOp("Flatten") || nodes[node].isOp("Gemm") {
            return 2
        }
        return nil
    }

    /// The first rank known among `names` (values that must share one rank).
    func declaredRank(ofAny names: [String]) -> Int? {
        names.lazy.compactMap { self.declaredRank(of: $0) }.first
    }
}
