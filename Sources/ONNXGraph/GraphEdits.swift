/// Edits that keep the use/def index current.
///
/// Assigning through `nodes`, `initializers`, `inputs` or `outputs` drops the
/// graph's index and the next query rebuilds it, which costs the whole graph
/// (and every subgraph) each time: a pass that edits and queries in turn
/// became quadratic in the graph's size (a chain of 1,000 Conv → BN folded in
/// 33 s, 61 % of it rebuilding the index). These edits patch the index at the
/// cost of what they touch — the value names involved, plus renumbering the
/// positions after a removal — and fall back to dropping it for nodes that
/// hold subgraphs. In debug builds each edit checks its patched index
/// against a rebuild.
extension Graph {
    /// Sets input `slot` of node `node` to the value `name` ("" omits it).
    public mutating func setInput(node: Int, slot: Int, to name: String) {
        let old = storedNodes[node].inputs[slot]
        guard old != name else { return }
        storedNodes[node].inputs[slot] = name
        patchIndex { b in
            b.removeUse(Use(node: node, input: slot), of: old)
            b.addUse(Use(node: node, input: slot), of: name)
        }
    }

    /// Appends an input to node `node`.
    public mutating func appendInput(node: Int, _ name: String) {
        storedNodes[node].inputs.append(name)
        let slot = storedNodes[node].inputs.count - 1
        patchIndex { b in b.addUse(Use(node: node, input: slot), of: name) }
    }

    /// Sets output `slot` of node `node` to `name`.
    public mutating func setOutput(node: Int, slot: Int, to name: String) {
        let old = storedNodes[node].outputs[slot]
        guard old != name else { return }
        storedNodes[node].outputs[slot] = name
        patchIndex(checking: false) { b in
            if !old.isEmpty {
                if b.producers[old] == GraphIndex.Producer(node: node, output: slot) { b.producers[old] = nil }
                b.count(old, by: -1); b.define(old, by: -1)
            }
            if !name.isEmpty {
                if let p = b.producers[name], p.node < node || (p.node == node && p.output < slot) {} else {
                    b.producers[name] = GraphIndex.Producer(node: node, output: slot)
                }
                b.count(name); b.define(name)
            }
        }
        // Another node may produce the old name too (invalid, but then it is
        // now the producer): only a rebuild knows; rare enough to pay for.
        if !old.isEmpty, index.current != nil, index.current?.definedCounts[old] != nil, index.current?.producers[old] == nil {
            dropIndex()
        }
        checkIndex()
    }

    /// Changes node `node` in ways that do not touch its inputs, outputs,
    /// name or subgraphs (its operator, attributes without graphs, doc
    /// string); anything else drops the index.
    public mutating func updateNode(_ node: Int, _ body: (inout Node) -> Void) {
        let before = storedNodes[node]
        body(&storedNodes[node])
        let after = storedNodes[node]
        if before.inputs != after.inputs || before.outputs != after.outputs || before.name != after.name
            || !before.subgraphs.isEmpty || !after.subgraphs.isEmpty {
            dropIndex()
        }
    }

    /// Replaces the initializer at `position`. The same name keeps the index
    /// as it is; another name drops it.
    public mutating func replaceInitializer(at position: Int, with tensor: Tensor) {
        let sameName = storedInitializers[position].name == tensor.name
        storedInitializers[position] = tensor
        if !sameName { dropIndex() }
        checkIndex()
    }

    /// Appends an initializer.
    public mutating func appendInitializer(_ tensor: Tensor) {
        storedInitializers.append(tensor)
        let position = storedInitializers.count - 1
        patchIndex { b in
            guard let n = tensor.name else { return }
            if b.initializers[n] == nil { b.initializers[n] = position }
            b.count(n); b.define(n)
        }
    }

    /// Removes the initializers called one of `names` (and nothing else).
    public mutating func removeInitializers(named names: Set<String>) {
        guard !names.isEmpty else { return }
        let removed = storedInitializers.indices.filter { storedInitializers[$0].name.map(names.contains) ?? false }
        guard !removed.isEmpty else { return }
        let removedNames = removed.compactMap { storedInitializers[$0].name }
        storedInitializers.remove(sortedPositions: removed)
        patchIndex { b in
            for n in removedNames {
                b.initializers[n] = nil
                b.count(n, by: -1); b.define(n, by: -1)
            }
            let shift = Shift(removed: removed)
            for i in b.initializers.values.indices { b.initializers.values[i] = shift(b.initializers.values[i]) }
        }
    }

    /// Removes the graph inputs called one of `names`.
    public mutating func removeInputs(named names: Set<String>) {
        guard inputs.contains(where: { $0.name.map(names.contains) ?? false }) else { return }
        let gone = storedInputs.compactMap { $0.name }.filter(names.contains)
        storedInputs.removeAll { $0.name.map(names.contains) ?? false }
        patchIndex { b in
            for n in gone {
                b.inputNames.remove(n)
                b.count(n, by: -1); b.define(n, by: -1)
            }
        }
    }

    /// Removes the nodes at `positions`; the others keep their order.
    public mutating func removeNodes(at positions: Set<Int>) {
        guard !positions.isEmpty else { return }
        let removed = positions.sorted()
        if removed.contains(where: { !storedNodes[$0].subgraphs.isEmpty }) {
            storedNodes.remove(sortedPositions: removed)
            dropIndex()
            return
        }
        let gone = removed.map { storedNodes[$0] }
        storedNodes.remove(sortedPositions: removed)
        patchIndex(checking: false) { b in
            for (position, node) in zip(removed, gone) {
                for (slot, input) in node.inputs.enumerated() { b.removeUse(Use(node: position, input: slot), of: input) }
                for (slot, output) in node.outputs.enumerated() where !output.isEmpty {
                    if b.producers[output] == GraphIndex.Producer(node: position, output: slot) { b.producers[output] = nil }
                    b.count(output, by: -1); b.define(output, by: -1)
                }
                if let n = node.name { b.count(n, by: -1) }
            }
            let shift = Shift(removed: removed)
            for i in b.producers.values.indices { b.producers.values[i].node = shift(b.producers.values[i].node) }
            for i in b.uses.values.indices {
                for k in b.uses.values[i].indices { b.uses.values[i][k].node = shift(b.uses.values[i][k].node) }
            }
        }
        // A value whose producer went may still be produced by another node
        // (an invalid graph): only a rebuild finds it.
        if let b = index.current, gone.contains(where: { $0.outputs.contains { !$0.isEmpty && b.producers[$0] == nil && b.definedCounts[$0] != nil } }) {
            dropIndex()
        }
        checkIndex()
    }

    /// Applies `body` to this graph's own copy of the built index (if one is
    /// built), then, in debug builds, checks it against a rebuild.
    mutating func patchIndex(checking: Bool = true, _ body: (inout GraphIndex.Built) -> Void) {
        // No local copy of the built index may live across the patch: it
        // would share the dictionaries' storage and make every patch copy
        // them whole.
        guard index.current != nil else { return }
        if !isKnownUniquelyReferenced(&index) { index = GraphIndex(copying: index.current!) }
        index.patch(body)
        if checking { checkIndex() }
    }

    func checkIndex() {
        #if DEBUG
        if let current = index.current {
            let rebuilt = GraphIndex.build(self)
            if current != rebuilt {
                let fields = [("producers", current.producers == rebuilt.producers), ("uses", current.uses == rebuilt.uses),
                              ("inputs", current.inputNames == rebuilt.inputNames), ("outputs", current.outputNames == rebuilt.outputNames),
                              ("initializers", current.initializers == rebuilt.initializers), ("names", current.nameCounts == rebuilt.nameCounts),
                              ("reads", current.readCounts == rebuilt.readCounts), ("definitions", current.definedCounts == rebuilt.definedCounts)]
                preconditionFailure("graph index out of date after an edit: \(fields.filter { !$0.1 }.map(\.0)) "
                                    + "patched \(current) rebuilt \(rebuilt)")
            }
        }
        #endif
    }
}

/// New positions after removing the (sorted) positions `removed`.
private struct Shift {
    let removed: [Int]
    func callAsFunction(_ position: Int) -> Int {
        // Number of removed positions below `position` (binary search).
        var low = 0, high = removed.count
        while low < high {
            let mid = (low + high) / 2
            if removed[mid] < position { low = mid + 1 } else { high = mid }
        }
        return position - low
    }
}

extension GraphIndex.Built {
    /// Order of a value's uses: by node, then by input slot, reads from
    /// inside a node's subgraphs last (as a rebuild lists them).
    static func precedes(_ a: Use, _ b: Use) -> Bool {
        (a.node, a.input ?? Int.max) < (b.node, b.input ?? Int.max)
    }

    mutating func addUse(_ use: Use, of name: String) {
        guard !name.isEmpty else { return }
        var list = uses[name] ?? []
        let at = list.firstIndex { Self.precedes(use, $0) } ?? list.count
        list.insert(use, at: at)
        uses[name] = list
        count(name); read(name)
    }

    mutating func removeUse(_ use: Use, of name: String) {
        guard !name.isEmpty, var list = uses[name], let at = list.firstIndex(of: use) else { return }
        list.remove(at: at)
        uses[name] = list.isEmpty ? nil : list
        count(name, by: -1); read(name, by: -1)
    }
}

extension Array {
    /// Removes the elements at `positions` (ascending, distinct), keeping the
    /// order of the rest: one pass that moves each kept element once.
    mutating func remove(sortedPositions positions: [Int]) {
        guard let first = positions.first else { return }
        if positions.count == 1 { remove(at: first); return }
        var write = first, next = 0
        for read in first..<count {
            if next < positions.count && positions[next] == read { next += 1; continue }
            swapAt(write, read)
            write += 1
        }
        removeLast(count - write)
    }
}
