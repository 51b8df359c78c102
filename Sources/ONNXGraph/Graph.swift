/// `GraphProto`: nodes in topological order, the graph's inputs and outputs,
/// constant tensors (initializers) and recorded types of intermediate values.
///
/// A value type: passes take `inout Graph` and mutate it directly. Nodes and
/// initializers have stable identities (``NodeID``, ``InitializerID``):
/// queries about values — who produces one, who uses it, whether it is
/// constant — go through ``value(named:)`` and answer in those IDs, from an
/// index built on first use. The edits in `GraphEdits.swift`
/// (``setInput(node:slot:to:)``, ``replaceAllUses(of:with:)``,
/// ``removeNodes(_:)``, ``appendInitializer(_:)``, …) keep that index
/// current at the cost of what they touch, and erase without moving the
/// other nodes, so IDs stay valid through them. ``nodes`` and
/// ``initializers`` are the positional views (what the file holds, in
/// order): reading them is free while nothing was erased; assigning through
/// them compacts the storage (IDs become positions again) and drops the
/// index, which the next query rebuilds from scratch.
public struct Graph: Equatable {
    public var name: String? { didSet { revision &+= 1 } }
    /// The live nodes in order. Passes address nodes by ``NodeID``
    /// (`graph[id]`, ``nodeIDs``) and change them through the edits;
    /// assigning here renumbers the IDs.
    public var nodes: [Node] {
        get { nodeStore.live }
        _modify { nodeStore.compact(); dropIndex(); var slots = nodeStore.slots; nodeStore = SlotStore(); defer { nodeStore = SlotStore(slots) }; yield &slots }
        set { nodeStore = SlotStore(newValue); dropIndex() }
    }
    /// The live initializers in order (see ``nodes``: the same holds for
    /// ``InitializerID``).
    public var initializers: [Tensor] {
        get { initializerStore.live }
        _modify { initializerStore.compact(); dropIndex(); var slots = initializerStore.slots; initializerStore = SlotStore(); defer { initializerStore = SlotStore(slots) }; yield &slots }
        set { initializerStore = SlotStore(newValue); dropIndex() }
    }
    public var sparseInitializers: [SparseTensor] = [] { didSet { dropIndex(); revision &+= 1 } }
    public var docString: String? { didSet { revision &+= 1 } }
    public var inputs: [ValueInfo] {
        get { storedInputs }
        _modify { dropIndex(); yield &storedInputs }
        set { storedInputs = newValue; dropIndex() }
    }
    public var outputs: [ValueInfo] = [] { didSet { dropIndex(); revision &+= 1 } }
    /// Recorded types of intermediate values (in order). Kept in slots so
    /// that a fold removing the declarations of the values it made dead
    /// (``removeValueInfo(named:)``) costs those names, not the list: a
    /// shape-inferred model declares every intermediate, and rescanning the
    /// list per fold made a 4,000-block fold take 10 s instead of 0.3 s.
    public var valueInfo: [ValueInfo] {
        get { valueInfoStore.live }
        _modify {
            valueInfoStore.compact()
            var slots = valueInfoStore.slots
            valueInfoStore = SlotStore()
            defer { valueInfoStore = SlotStore(slots); valueInfoIndex = ValueInfoIndex() }
            yield &slots
        }
        set { valueInfoStore = SlotStore(newValue); valueInfoIndex = ValueInfoIndex() }
    }
    public var quantizationAnnotations: [TensorAnnotation] = [] { didSet { revision &+= 1 } }
    public var metadataProps: [StringPair] = [] { didSet { revision &+= 1 } }
    public var unknownFields = UnknownFields() { didSet { revision &+= 1 } }

    var nodeStore = SlotStore<Node>() { didSet { revision &+= 1 } }
    var initializerStore = SlotStore<Tensor>() { didSet { revision &+= 1 } }
    var storedInputs: [ValueInfo] = [] { didSet { revision &+= 1 } }
    var valueInfoStore = SlotStore<ValueInfo>() { didSet { revision &+= 1 } }
    /// Slots of the `value_info` entries by name, built on first use.
    var valueInfoIndex = ValueInfoIndex()

    /// Moves on with every change to the message (not with index or cache
    /// work): two equal revisions of one graph value mean nothing was
    /// edited in between. `==` ignores it. The pass manager uses it to
    /// tell whether a pass changed the graph, whatever the pass reports.
    public internal(set) var revision: UInt64 = 0

    /// Lazily built use/def index; not part of the message.
    var index = GraphIndex()
    /// The nodes edits touched, while ``recordingTouchedNodes(_:)`` runs.
    var touchLog: Set<NodeID>?

    mutating func dropIndex() { index = GraphIndex() }

    public init(name: String? = nil, nodes: [Node] = [], inputs: [ValueInfo] = [], outputs: [ValueInfo] = [],
                initializers: [Tensor] = []) {
        self.name = name
        // Nodes without an origin get their position here: a graph built in
        // memory numbers its unnamed nodes as a read one does.
        self.nodes = nodes.enumerated().map { i, node in
            var node = node
            if node.origin.index == nil { node.origin.index = i }
            return node
        }
        self.inputs = inputs
        self.outputs = outputs
        self.initializers = initializers
    }

    public static func == (a: Graph, b: Graph) -> Bool {
        a.name == b.name && a.nodeStore == b.nodeStore && a.initializerStore == b.initializerStore
            && a.sparseInitializers == b.sparseInitializers && a.docString == b.docString
            && a.storedInputs == b.storedInputs && a.outputs == b.outputs && a.valueInfo == b.valueInfo
            && a.quantizationAnnotations == b.quantizationAnnotations && a.metadataProps == b.metadataProps
            && a.unknownFields == b.unknownFields
    }
}

// MARK: - Nodes and initializers by identity

extension Graph {
    /// The node with this ID (which must be live: see ``contains(_:)``).
    public subscript(_ id: NodeID) -> Node {
        // Yielded, not returned: `graph[id].opType` reads one field of the
        // stored node instead of copying (retaining) all of them.
        _read {
            precondition(nodeStore.isLive(id.raw), "\(id) is not in the graph")
            yield nodeStore[id.raw]
        }
    }

    /// Whether the node with this ID is in the graph (not erased).
    public func contains(_ id: NodeID) -> Bool { nodeStore.isLive(id.raw) }

    /// The IDs of the live nodes, in graph (topological) order.
    public var nodeIDs: [NodeID] { nodeStore.liveSlots.map { NodeID($0) } }

    /// The IDs of the live default-domain nodes of one of `opTypes`, in
    /// order: where a pass rooted at those operators starts.
    public func nodeIDs(ofType opTypes: Set<String>) -> [NodeID] {
        nodeStore.liveSlots.filter { i in
            let node = nodeStore[i]
            return opTypes.contains(node.opType) && node.isDefaultDomain
        }.map { NodeID($0) }
    }

    /// The number of live nodes.
    public var nodeCount: Int { nodeStore.count }

    /// The initializer with this ID (from ``Value/initializer``).
    public subscript(_ id: InitializerID) -> Tensor {
        _read {
            precondition(initializerStore.isLive(id.raw), "\(id) is not in the graph")
            yield initializerStore[id.raw]
        }
    }

    /// How to name a node in messages (see ``Node/displayName(index:)``): by
    /// name, else type and position as read, else, for a node made since,
    /// its ID.
    public func label(_ id: NodeID) -> String { self[id].displayName(index: id.raw) }
}

// MARK: - Values: producers and uses

/// Where a value is read.
public struct Use: Equatable, Hashable, Sendable {
    /// The using node.
    public var node: NodeID
    /// Which input of that node; nil when the node reads the value from inside
    /// one of its subgraphs (an If/Loop/Scan body naming an outer value).
    public var input: Int?
    public init(node: NodeID, input: Int?) { self.node = node; self.input = input }
}

/// Everything the graph knows about one named value.
public struct Value: Sendable {
    public let name: String
    /// The node that computes it and which of its outputs it is; nil for
    /// graph inputs, initializers and values from an enclosing graph.
    public let producer: (node: NodeID, output: Int)?
    /// Every read of the value in this graph, including reads from inside
    /// subgraphs, in node order.
    public let uses: [Use]
    public let isGraphInput: Bool
    public let isGraphOutput: Bool
    /// The initializer with this name, if any (read it with `graph[id]`).
    public let initializer: InitializerID?

    /// True when nothing in the graph reads the value and it is not a graph output.
    public var isDead: Bool { uses.isEmpty && !isGraphOutput }
}

extension Graph {
    /// What the graph knows about the value called `name`.
    public func value(named name: String) -> Value {
        let e = index.entry(name, for: self)
        return Value(
            name: name,
            producer: e?.producer.map { ($0.node, $0.output) },
            uses: e?.uses ?? [],
            isGraphInput: e?.isInput ?? false,
            isGraphOutput: e?.isOutput ?? false,
            initializer: e?.initializer)
    }

    /// The initializer called `name`, if any.
    public func initializer(named name: String) -> Tensor? {
        index.entry(name, for: self)?.initializer.map { self[$0] }
    }

    /// Every name this graph (and the graphs inside it) defines or reads:
    /// values, initializers and node names. ``uniqueName(_:avoiding:)`` avoids them.
    public var allNames: Set<String> { index.built(for: self).allNames }

    /// Names read inside this graph (and graphs nested in it) that it does
    /// not define itself: values it captures from enclosing graphs.
    public var capturedNames: Set<String> { index.built(for: self).captured }

    /// `base` if no name in the graph equals it, else `base_1`, `base_2`, …
    public func uniqueName(_ base: String, avoiding extra: Set<String> = []) -> String {
        let entries = index.built(for: self).entries
        func taken(_ name: String) -> Bool { entries[name] != nil || extra.contains(name) }
        if !taken(base) { return base }
        var n = 1
        while taken("\(base)_\(n)") { n += 1 }
        return "\(base)_\(n)"
    }
}

/// The use/def index of one graph state.
///
/// Built from scratch on first use after a change it was not told about; the
/// edits in `GraphEdits.swift` patch it instead (``Graph`` copies share the
/// box until one of them edits, which then patches its own copy). Names are
/// counted, not just collected, so that removing the last occurrence of a
/// name frees it for ``Graph/uniqueName(_:avoiding:)`` exactly as a rebuild
/// would.
///
/// One dictionary, name → ``Entry``, holds everything known about a name
/// (producer, uses, initializer, whether it is a graph input or output, and
/// its occurrence counts). Six dictionaries and two sets keyed by name, as
/// before, hashed every name up to six times per occurrence and held as many
/// hash entries — string hashing was a fifth of the fold time of a
/// 4,000-block chain, and the entries most of the index's memory on a graph
/// of a million initializers. An entry exists exactly while its name occurs
/// somewhere (a default entry is removed), so a patched index compares equal
/// to a rebuilt one.
/// `value_info` slots by name (a name may be declared more than once),
/// built on first use and patched by ``Graph/removeValueInfo(named:)``.
final class ValueInfoIndex: @unchecked Sendable {
    var slots: [String: [Int]]?
    init(_ slots: [String: [Int]]? = nil) { self.slots = slots }

    func built(for store: SlotStore<ValueInfo>) -> [String: [Int]] {
        if let slots { return slots }
        var map: [String: [Int]] = [:]
        map.reserveCapacity(store.count)
        for slot in store.liveSlots { if let n = store[slot].name { map[n, default: []].append(slot) } }
        slots = map
        return map
    }
}

extension Graph {
    /// Every declaration of `name` — graph inputs, then outputs, then
    /// `value_info` entries, each in order — answered from an index for
    /// `value_info` (inputs and outputs are scanned; they are few).
    public func declarations(of name: String) -> [ValueInfo] {
        var found = storedInputs.filter { $0.name == name } + outputs.filter { $0.name == name }
        if let slots = valueInfoIndex.built(for: valueInfoStore)[name] {
            found += slots.map { valueInfoStore[$0] }
        }
        return found
    }

    /// Removes the `value_info` entries of `names`, at the cost of those names.
    public mutating func removeValueInfo(named names: Set<String>) {
        guard !names.isEmpty, valueInfoStore.count > 0 else { return }
        _ = valueInfoIndex.built(for: valueInfoStore)
        guard names.contains(where: { valueInfoIndex.slots?[$0] != nil }) else { return }
        // A box shared with a copy of the graph is copied once; after that
        // the patch is in place (no local reference to the map may live
        // across it, or every patch would copy the map).
        if !isKnownUniquelyReferenced(&valueInfoIndex) { valueInfoIndex = ValueInfoIndex(valueInfoIndex.slots) }
        for name in names {
            guard let slots = valueInfoIndex.slots?.removeValue(forKey: name) else { continue }
            for slot in slots { valueInfoStore.erase(slot) }
        }
    }
}

final class GraphIndex: Equatable, @unchecked Sendable {
    struct Producer: Equatable { var node: NodeID; var output: Int }

    /// Everything the index knows about one name.
    struct Entry: Equatable {
        /// The first node output of this name.
        var producer: Producer?
        /// Reads in node order (see ``Built/precedes(_:_:)``).
        var uses: [Use] = []
        /// The first initializer of this name.
        var initializer: InitializerID?
        var isInput = false
        var isOutput = false
        /// Occurrences of the name anywhere in the graph and its subgraphs
        /// (values, initializers, node names).
        var occurrences: Int32 = 0
        /// Reads (node inputs, graph outputs, captures of subgraphs) and
        /// definitions (inputs, initializers, node outputs): captured names
        /// are read and not defined.
        var reads: Int32 = 0
        var definitions: Int32 = 0

        /// Counts below zero (a removal the index was never told the
        /// addition of) read as zero, as a rebuild would have them.
        mutating func clamp() {
            if occurrences < 0 { occurrences = 0 }
            if reads < 0 { reads = 0 }
            if definitions < 0 { definitions = 0 }
        }

        var isEmpty: Bool {
            producer == nil && uses.isEmpty && initializer == nil && !isInput && !isOutput
                && occurrences == 0 && reads == 0 && definitions == 0
        }
    }

    struct Built: Equatable {
        var entries: [String: Entry] = [:]
        /// Whether two initializers share a name (invalid, but read): then
        /// removal by name must look at every slot.
        var repeatsInitializerNames = false

        var allNames: Set<String> { Set(entries.keys) }
        var captured: Set<String> { Set(entries.lazy.filter { $0.value.reads > 0 && $0.value.definitions == 0 }.map(\.key)) }

        /// Changes the entry of `name` (made if missing, removed when it
        /// ends up empty): one hash of the name when it is already known.
        mutating func update(_ name: String, _ body: (inout Entry) -> Void) {
            if let i = entries.index(forKey: name) {
                body(&entries.values[i])
                entries.values[i].clamp()
                if entries.values[i].isEmpty { entries.remove(at: i) }
            } else {
                var e = Entry()
                body(&e)
                e.clamp()
                if !e.isEmpty { entries[name] = e }
            }
        }
    }
    private(set) var current: Built?

    init() {}
    init(copying built: Built) { current = built }

    func built(for graph: Graph) -> Built {
        if let current { return current }
        let b = GraphIndex.build(graph)
        current = b
        return b
    }

    /// The entry of one name, read in place: no copy of the built index
    /// (returning `Built` retains and releases its dictionary on every
    /// query, which every fold makes dozens of).
    func entry(_ name: String, for graph: Graph) -> Entry? {
        if current == nil { current = GraphIndex.build(graph) }
        return current!.entries[name]
    }

    /// Patches the built index in place (callers make the box unique first).
    func patch(_ body: (inout Built) -> Void) {
        guard current != nil else { return }
        body(&current!)
    }

    static func build(_ graph: Graph) -> Built {
        var b = Built()
        b.entries.reserveCapacity(graph.initializerStore.count + graph.nodeStore.count)
        var repeats = false
        for slot in graph.initializerStore.liveSlots {
            guard let n = graph.initializerStore[slot].name else { continue }
            b.update(n) { e in
                if e.initializer == nil { e.initializer = InitializerID(slot) } else { repeats = true }
                e.occurrences += 1; e.definitions += 1
            }
        }
        b.repeatsInitializerNames = repeats
        for sparse in graph.sparseInitializers {
            if let n = sparse.values?.name { b.update(n) { $0.occurrences += 1; $0.definitions += 1 } }
        }
        for v in graph.inputs {
            if let n = v.name { b.update(n) { $0.isInput = true; $0.occurrences += 1; $0.definitions += 1 } }
        }
        for v in graph.outputs {
            if let n = v.name { b.update(n) { $0.isOutput = true; $0.occurrences += 1; $0.reads += 1 } }
        }
        for slot in graph.nodeStore.liveSlots {
            let node = graph.nodeStore[slot], i = NodeID(slot)
            for (slot, input) in node.inputs.enumerated() where !input.isEmpty {
                b.update(input) { e in
                    e.uses.append(Use(node: i, input: slot))
                    e.occurrences += 1; e.reads += 1
                }
            }
            var capturedHere: Set<String> = []
            for sub in node.holdsSubgraphs ? node.subgraphs : [] {
                let subIndex = sub.index.built(for: sub)
                capturedHere.formUnion(subIndex.captured)
                for n in subIndex.entries.keys { b.update(n) { $0.occurrences += 1 } }
            }
            for name in capturedHere.sorted() {
                b.update(name) { e in
                    e.uses.append(Use(node: i, input: nil))
                    e.reads += 1
                }
            }
            for (slot, output) in node.outputs.enumerated() where !output.isEmpty {
                b.update(output) { e in
                    if e.producer == nil { e.producer = Producer(node: i, output: slot) }
                    e.occurrences += 1; e.definitions += 1
                }
            }
            if let n = node.name { b.update(n) { $0.occurrences += 1 } }
        }
        return b
    }

    static func == (lhs: GraphIndex, rhs: GraphIndex) -> Bool { true }
}
