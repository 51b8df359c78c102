import ONNXGraph

/// Mutations shared by passes: replacing constants without disturbing other
/// users, and removing what a rewrite left dead.
extension Graph {
    /// Gives `node`'s input `slot` the constant `tensor`.
    ///
    /// When the node is the only reader of the value — and of every value
    /// along the `Identity` chain that leads to it — the constant is replaced
    /// where it is and keeps its name (initializer or `Constant` node); the
    /// node then reads it directly, and the `Identity` nodes left dead go
    /// with ``removeDeadValues(_:context:)`` on the old input name. An
    /// initializer that is also a graph input (folded only under
    /// ``PassContext/assumeConstantInputs``) stops being an input in an IR ≥ 4
    /// model, so that callers cannot feed the unfolded values to the folded
    /// graph. When others read the value too, or it belongs to an enclosing
    /// graph, the new data goes into a new initializer with a fresh name,
    /// so the other readers keep the old values.
    ///
    /// `source` is where the current value comes from (from
    /// ``PassContext/constant(named:in:)``).
    public mutating func replaceConstantInput(node: NodeID, slot: Int, with tensor: Tensor,
                                              source: ConstantSource, context: PassContext) {
        let name = self[node].inputs[slot]
        let pinned = context.scope.pinnedNames
        func onlyReader(_ value: String) -> Bool {
            let v = self.value(named: value)
            return v.uses.count == 1 && !v.isGraphOutput && !pinned.contains(value)
        }
        var exclusive = onlyReader(name)
        var rootName = name
        var link = source
        while case .identity(let index, let inner) = link {
            rootName = self[index].inputs[0]
            exclusive = exclusive && onlyReader(rootName)
            link = inner
        }
        if exclusive {
            switch link {
            case .initializer(let index):
                var replaced = tensor
                replaced.name = self[index].name
                replaceInitializer(index, with: replaced)
                if context.irVersion >= 4 && context.scope.isMainGraph {
                    removeInputs(named: [rootName])
                }
                if rootName != name { setInput(node: node, slot: slot, to: rootName) }
                return
            case .constantNode(let index):
                var replaced = tensor
                let old = self[index].attributes[0]
                replaced.name = old.name == "value" ? old.t?.name : nil
                var attribute = Attribute.tensor("value", replaced)
                attribute.docString = old.docString
                updateNode(index) { $0.attributes = [attribute] }
                if rootName != name { setInput(node: node, slot: slot, to: rootName) }
                return
            case .enclosingGraph, .identity:
                break  // not ours to edit: a local copy below
            }
        }
        let newName = context.uniqueName(name + "_bnfold", in: self)
        addInitializer(tensor, named: newName, context: context)
        setInput(node: node, slot: slot, to: newName)
    }

    /// Appends an initializer. IR < 4 requires every initializer of the
    /// main graph to be listed as a graph input as well, so for those models
    /// an input is added too; a subgraph's inputs are bound by its owner
    /// (Loop, Scan) or must be empty (If), so it never gets one.
    public mutating func addInitializer(_ tensor: Tensor, named name: String, context: PassContext) {
        var t = tensor
        t.name = name
        appendInitializer(t)
        if context.irVersion < 4 && context.scope.isMainGraph {
            inputs.append(ValueInfo(name: name, type: .tensor(t.elementType, dims: t.dims)))
        }
    }

    /// Removes the values in `names` that nothing uses any more: their
    /// initializers (and the matching graph inputs), the `Constant` and
    /// `Identity` nodes that produce them — following `Identity` chains
    /// backwards, so a constant read through them goes too — and their
    /// `value_info`. Values still in use (also from inside a subgraph),
    /// graph outputs, real graph inputs and `keeping` are kept, and so is
    /// everything not reached from `names`: a pass removes only what it made
    /// dead, never what the model already carried unused.
    public mutating func removeDeadValues(_ names: Set<String>, keeping: Set<String>) {
        var candidates = names
        var dead: Set<String> = []
        while !candidates.isEmpty {
            // One index lookup per name: whether it is dead, and what defines it.
            var deadNow: Set<String> = []
            var producers: [NodeID] = []
            var deadInitializers: Set<String> = []
            for name in candidates where !name.isEmpty && !keeping.contains(name) && !dead.contains(name) {
                let v = value(named: name)
                guard v.isDead else { continue }
                if v.isGraphInput && v.initializer == nil { continue }  // a real input: part of the interface
                deadNow.insert(name)
                if let p = v.producer { producers.append(p.node) }
                if v.initializer != nil { deadInitializers.insert(name) }
            }
            candidates = []
            guard !deadNow.isEmpty else { break }
            dead.formUnion(deadNow)
            // Their producers, found through the index (not by scanning the
            // nodes: that made every fold cost the graph's size).
            let removable = Set(producers.filter { id in
                let node = self[id]
                return (node.isOp("Constant") || node.isOp("Identity"))
                    && node.outputs.allSatisfy { deadNow.contains($0) || $0.isEmpty }
            })
            // An Identity's input may be dead now too: look at it next round.
            for id in removable where self[id].isOp("Identity") { candidates.formUnion(self[id].inputs) }
            if !removable.isEmpty { removeNodes(removable) }
            if !deadInitializers.isEmpty {
                removeInitializers(named: deadInitializers)
                removeInputs(named: deadInitializers)
            }
        }
        guard !dead.isEmpty else { return }
        removeValueInfo(named: dead)
    }

    /// ``removeDeadValues(_:keeping:)`` keeping the values the context pins
    /// (read by `training_info`).
    public mutating func removeDeadValues(_ names: Set<String>, context: PassContext) {
        removeDeadValues(names, keeping: context.scope.pinnedNames)
    }
}
