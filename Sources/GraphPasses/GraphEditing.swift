import ONNXGraph

/// Mutations shared by passes: replacing constants without disturbing other
/// users, and removing what a rewrite left dead.
extension Graph {
    /// Gives `node`'s input `slot` the constant `tensor`.
    ///
    /// When the node is the value's only user, the constant is replaced
    /// where it is and keeps its name (initializer or `Constant` node).
    /// When others use it too, the new data goes into a new initializer
    /// with a fresh name, so the other users keep the old values.
    /// `source` is where the current value comes from (from ``constant(named:irVersion:)``).
    public mutating func replaceConstantInput(node: Int, slot: Int, with tensor: Tensor,
                                              source: ConstantSource, irVersion: Int64) {
        let name = nodes[node].inputs[slot]
        let v = value(named: name)
        let onlyUser = v.uses.count == 1 && !v.isGraphOutput
        if onlyUser {
            switch source {
            case .initializer(let index):
                var replaced = tensor
                replaced.name = initializers[index].name
                initializers[index] = replaced
                return
            case .constantNode(let index):
                var replaced = tensor
                let old = nodes[index].attributes[0]
                replaced.name = old.name == "value" ? old.t?.name : nil
                var attribute = Attribute.tensor("value", replaced)
                attribute.docString = old.docString
                nodes[index].attributes = [attribute]
                return
            }
        }
        let newName = uniqueName(name + "_bnfold")
        addInitializer(tensor, named: newName, irVersion: irVersion)
        nodes[node].inputs[slot] = newName
    }

    /// Appends an initializer. IR < 4 requires every initializer to be listed
    /// as a graph input as well, so for those models an input is added too.
    public mutating func addInitializer(_ tensor: Tensor, named name: String, irVersion: Int64) {
        var t = tensor
        t.name = name
        initializers.append(t)
        if irVersion < 4 {
            inputs.append(ValueInfo(name: name, type: .tensor(t.elementType, dims: t.dims)))
        }
    }

    /// Removes the values in `names` that nothing uses any more: their
    /// initializers (and, for IR < 4 models, the matching graph inputs),
    /// `Constant` nodes whose outputs are all dead, and their `value_info`.
    /// Values still in use, graph outputs and real graph inputs are kept.
    public mutating func removeDeadValues(_ names: Set<String>) {
        var dead: Set<String> = []
        for name in names where !name.isEmpty {
            let v = value(named: name)
            guard v.isDead else { continue }
            if v.isGraphInput && v.initializer == nil { continue }  // a real input: part of the interface
            dead.insert(name)
        }
        guard !dead.isEmpty else { return }
        let deadNodes = Set(nodes.indices.filter { i in
            nodes[i].isOp("Constant") && nodes[i].outputs.allSatisfy { dead.contains($0) || $0.isEmpty }
        })
        if !deadNodes.isEmpty {
            nodes = nodes.enumerated().filter { !deadNodes.contains($0.offset) }.map(\.element)
        }
        let deadInitializers = dead.filter { initializer(named: $0) != nil }
        if !deadInitializers.isEmpty {
            initializers.removeAll { $0.name.map(deadInitializers.contains) ?? false }
            inputs.removeAll { $0.name.map(deadInitializers.contains) ?? false }
        }
        valueInfo.removeAll { $0.name.map(dead.contains) ?? false }
    }
}
