/// Edits that keep the use/def index current.
///
/// Assigning through `nodes`, `initializers`, `inputs` or `outputs` drops the
/// graph's index and the next query rebuilds it, which costs the whole graph
/// (and every subgraph) each time: a pass that edits and queries in turn
/// became quadratic in the graph's size (a chain of 1,000 Conv → BN folded in
/// 33 s, 61 % of it rebuilding the index). These edits patch the index at the
/// cost of what they touch — the value names involved — and erase nodes and
/// initializers by marking their slots, so no ID moves and nothing is
/// renumbered (removal by position used to renumber every use after it and
/// compact the arrays: still quadratic, ~33 s for 4,000 blocks). Nodes that
/// hold subgraphs fall back to dropping the index. In debug builds each edit
/// checks its patched index against a rebuild.
extension Graph {
    /// Sets input `slot` of node `node` to the value `name` ("" omits it).
    public mutating func setInput(node: NodeID, slot: Int, to name: String) {
        let old = nodeStore[node.raw].inputs[slot]
        guard old != name else { return }
        nodeStore.modify(node.raw) { $0.inputs[slot] = name }
        touched(node)
        patchIndex { b in
            b.removeUse(Use(node: node, input: slot), of: old)
            b.addUse(Use(node: node, input: slot), of: name)
        }
    }

    /// Appends an input to node `node`.
    public mutating func appendInput(node: NodeID, _ name: String) {
        let slot = nodeStore.modify(node.raw) { n in n.inputs.append(name); return n.inputs.count - 1 }
        touched(node)
        patchIndex { b in b.addUse(Use(node: node, input: slot), of: name) }
    }

    /// Makes every reader of the value `old` — node inputs and graph
    /// outputs — read `new` instead, at the cost of `old`'s uses. Reads from
    /// inside a subgraph are names in another graph: they drop the index
    /// after the renaming there is done by the caller (they are left alone
    /// here, and the uses of `old` from subgraphs stay).
    public mutating func replaceAllUses(of old: String, with new: String) {
        guard old != new, !old.isEmpty else { return }
        for use in value(named: old).uses {
            if let slot = use.input { setInput(node: use.node, slot: slot, to: new) }
        }
        if outputs.contains(where: { $0.name == old }) {
            for i in outputs.indices where outputs[i].name == old { outputs[i].name = new }
        }
    }

    /// Sets output `slot` of node `node` to `name`.
    public mutating func setOutput(node: NodeID, slot: Int, to name: String) {
        let old = nodeStore[node.raw].outputs[slot]
        guard old != name else { return }
        nodeStore.modify(node.raw) { $0.outputs[slot] = name }
        touched(node)
        patchIndex(checking: false) { b in
            if !old.isEmpty {
                b.update(old) { e in
                    if e.producer == GraphIndex.Producer(node: node, output: slot) { e.producer = nil }
                    e.occurrences -= 1; e.definitions -= 1
                }
            }
            if !name.isEmpty {
                b.update(name) { e in
                    if let p = e.producer, p.node < node || (p.node == node && p.output < slot) {} else {
                        e.producer = GraphIndex.Producer(node: node, output: slot)
                    }
                    e.occurrences += 1; e.definitions += 1
                }
            }
        }
        // Another node may produce the old name too (invalid, but then it is
        // now the producer): only a rebuild knows; rare enough to pay for.
        if !old.isEmpty, let e = index.current?.entries[old], e.definitions > 0, e.producer == nil {
            dropIndex()
        }
        checkIndex()
    }

    /// Changes node `node` in ways that do not touch its inputs, outputs or
    /// name (its operator, attributes, doc string); a change to those, or to
    /// a node holding subgraphs, drops the index.
    public mutating func updateNode(_ node: NodeID, _ body: (inout Node) -> Void) {
        let before = nodeStore[node.raw]
        nodeStore.modify(node.raw, body)
        touched(node)
        let after = nodeStore[node.raw]
        if before.inputs != after.inputs || before.outputs != after.outputs || before.name != after.name
            || before.holdsSubgraphs || after.holdsSubgraphs {
            dropIndex()
        }
    }

    /// Appends `node` after every other node and returns its ID. The caller
    /// keeps the order topological: the node may read any value, but no
    /// earlier node may read its outputs.
    @discardableResult
    public mutating func appendNode(_ node: Node) -> NodeID {
        let id = NodeID(nodeStore.append(node))
        touched(id)
        if node.holdsSubgraphs { dropIndex(); return id }
        patchIndex(checking: false) { b in
            for (slot, input) in node.inputs.enumerated() { b.addUse(Use(node: id, input: slot), of: input) }
            for (slot, output) in node.outputs.enumerated() where !output.isEmpty {
                b.update(output) { e in
                    if e.producer == nil { e.producer = GraphIndex.Producer(node: id, output: slot) }
                    e.occurrences += 1; e.definitions += 1
                }
            }
            if let n = node.name { b.update(n) { $0.occurrences += 1 } }
        }
        checkIndex()
        return id
    }

    /// Replaces the initializer `id`. The same name keeps the index as it
    /// is; another name drops it.
    public mutating func replaceInitializer(_ id: InitializerID, with tensor: Tensor) {
        let oldName = initializerStore[id.raw].name
        initializerStore[id.raw] = tensor
        if let oldName { for use in value(named: oldName).uses { touched(use.node) } }
        if oldName != tensor.name { dropIndex() }
        checkIndex()
    }

    /// Appends an initializer and returns its ID.
    @discardableResult
    public mutating func appendInitializer(_ tensor: Tensor) -> InitializerID {
        let id = InitializerID(initializerStore.append(tensor))
        patchIndex { b in
            guard let n = tensor.name else { return }
            var repeated = false
            b.update(n) { e in
                if e.initializer == nil { e.initializer = id } else { repeated = true }
                e.occurrences += 1; e.definitions += 1
            }
            if repeated { b.repeatsInitializerNames = true }
        }
        return id
    }

    /// Removes the initializers called one of `names` (and nothing else).
    public mutating func removeInitializers(named names: Set<String>) {
        guard !names.isEmpty else { return }
        // Usually one per name; a file may repeat a name (invalid), and the
        // index knows only the first: then look at every slot.
        let indexed = index.current
        var removed: [(Int, String)] = []
        if let indexed, !indexed.repeatsInitializerNames {
            removed = names.compactMap { n in indexed.entries[n]?.initializer.map { ($0.raw, n) } }
        } else {
            removed = initializerStore.liveSlots.compactMap { slot in
                initializerStore[slot].name.flatMap { names.contains($0) ? (slot, $0) : nil }
            }
        }
        guard !removed.isEmpty else { return }
        for (slot, _) in removed { initializerStore.erase(slot) }
        patchIndex { b in
            for (_, n) in removed {
                b.update(n) { e in
                    e.initializer = nil
                    e.occurrences -= 1; e.definitions -= 1
                }
            }
        }
    }

    /// Removes the graph inputs called one of `names`.
    public mutating func removeInputs(named names: Set<String>) {
        guard !names.isEmpty, inputs.contains(where: { $0.name.map(names.contains) ?? false }) else { return }
        let gone = storedInputs.compactMap { $0.name }.filter(names.contains)
        storedInputs.removeAll { $0.name.map(names.contains) ?? false }
        patchIndex { b in
            for n in gone {
                b.update(n) { e in
                    e.isInput = false
                    e.occurrences -= 1; e.definitions -= 1
                }
            }
        }
    }

    /// Erases the nodes `ids`; the others keep their IDs and order. Costs
    /// the erased nodes' inputs and outputs, not the graph.
    public mutating func removeNodes(_ ids: Set<NodeID>) {
        let ids = ids.filter(contains)
        guard !ids.isEmpty else { return }
        let gone = ids.map { ($0, nodeStore[$0.raw]) }
        if touchLog != nil {
            // What an erased node connected may fold now: its inputs'
            // producers and its outputs' readers count as touched.
            for (_, node) in gone {
                for input in node.inputs where !input.isEmpty {
                    if let p = value(named: input).producer { touched(p.node) }
                }
                for output in node.outputs where !output.isEmpty {
                    for use in value(named: output).uses { touched(use.node) }
                }
            }
        }
        for id in ids { nodeStore.erase(id.raw); touched(id) }
        if gone.contains(where: { $0.1.holdsSubgraphs }) {
            dropIndex()
            return
        }
        patchIndex(checking: false) { b in
            for (id, node) in gone {
                for (slot, input) in node.inputs.enumerated() { b.removeUse(Use(node: id, input: slot), of: input) }
                for (slot, output) in node.outputs.enumerated() where !output.isEmpty {
                    b.update(output) { e in
                        if e.producer == GraphIndex.Producer(node: id, output: slot) { e.producer = nil }
                        e.occurrences -= 1; e.definitions -= 1
                    }
                }
                if let n = node.name { b.update(n) { $0.occurrences -= 1 } }
            }
        }
        // A value whose producer went may still be produced by another node
        // (an invalid graph): only a rebuild finds it.
        if let b = index.current, gone.contains(where: { $0.1.outputs.contains { name in
            guard !name.isEmpty, let e = b.entries[name] else { return false }
            return e.producer == nil && e.definitions > 0
        } }) {
            dropIndex()
        }
        checkIndex()
    }

    /// Runs `body` and returns with its result the nodes its edits touched
    /// (changed, added or erased; the readers of a replaced initializer;
    /// the producers and readers an erased node was connected to):
    /// what a worklist driver re-examines after a rewrite.
    public mutating func recordingTouchedNodes<R>(_ body: (inout Graph) throws -> R) rethrows -> (R, Set<NodeID>) {
        let outer = touchLog
        touchLog = []
        defer { touchLog = outer.map { $0.union(touchLog ?? []) } }
        let result = try body(&self)
        return (result, touchLog ?? [])
    }

    private mutating func touched(_ id: NodeID) {
        if touchLog != nil { touchLog!.insert(id) }
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
            var rebuilt = GraphIndex.build(self)
            // "Names may repeat" is a conservative hint: it stays set after
            // the repeat is gone.
            if current.repeatsInitializerNames { rebuilt.repeatsInitializerNames = true }
            if current != rebuilt {
                let names = Set(current.entries.keys).union(rebuilt.entries.keys)
                    .filter { current.entries[$0] != rebuilt.entries[$0] }.sorted().prefix(10)
                let differences = names.map { "\($0): patched \(String(describing: current.entries[$0])) rebuilt \(String(describing: rebuilt.entries[$0]))" }
                preconditionFailure("graph index out of date after an edit: " + differences.joined(separator: "; "))
            }
        }
        #endif
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
        update(name) { e in
            let at = e.uses.firstIndex { Self.precedes(use, $0) } ?? e.uses.count
            e.uses.insert(use, at: at)
            e.occurrences += 1; e.reads += 1
        }
    }

    mutating func removeUse(_ use: Use, of name: String) {
        guard !name.isEmpty, let i = entries.index(forKey: name), let at = entries.values[i].uses.firstIndex(of: use) else { return }
        entries.values[i].uses.remove(at: at)
        entries.values[i].occurrences -= 1
        entries.values[i].reads -= 1
        entries.values[i].clamp()
        if entries.values[i].isEmpty { entries.remove(at: i) }
    }
}
