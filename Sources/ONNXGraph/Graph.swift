/// `GraphProto`: nodes in topological order, the graph's inputs and outputs,
/// constant tensors (initializers) and recorded types of intermediate values.
///
/// A value type: passes take `inout Graph` and mutate it directly. Queries
/// about values — who produces one, who uses it, whether it is constant —
/// go through ``value(named:)``, answered from an index that is built on
/// first use and dropped whenever `nodes`, `initializers`, `inputs` or
/// `outputs` change.
public struct Graph: Equatable {
    public var name: String?
    public var nodes: [Node] = [] { didSet { index = GraphIndex() } }
    public var initializers: [Tensor] = [] { didSet { index = GraphIndex() } }
    public var sparseInitializers: [SparseTensor] = [] { didSet { index = GraphIndex() } }
    public var docString: String?
    public var inputs: [ValueInfo] = [] { didSet { index = GraphIndex() } }
    public var outputs: [ValueInfo] = [] { didSet { index = GraphIndex() } }
    /// Recorded types of intermediate values.
    public var valueInfo: [ValueInfo] = []
    public var quantizationAnnotations: [TensorAnnotation] = []
    public var metadataProps: [StringPair] = []
    public var unknownFields = UnknownFields()

    /// Lazily built use/def index; not part of the message.
    var index = GraphIndex()

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
}

// MARK: - Values: producers and uses

/// Where a value is read.
public struct Use: Equatable, Hashable, Sendable {
    /// Index of the using node in `Graph.nodes`.
    public var node: Int
    /// Which input of that node; nil when the node reads the value from inside
    /// one of its subgraphs (an If/Loop/Scan body naming an outer value).
    public var input: Int?
    public init(node: Int, input: Int?) { self.node = node; self.input = input }
}

/// Everything the graph knows about one named value.
public struct Value: Sendable {
    public let name: String
    /// The node that computes it and which of its outputs it is; nil for
    /// graph inputs, initializers and values from an enclosing graph.
    public let producer: (node: Int, output: Int)?
    /// Every read of the value in this graph, including reads from inside
    /// subgraphs, in node order.
    public let uses: [Use]
    public let isGraphInput: Bool
    public let isGraphOutput: Bool
    /// Index in `Graph.initializers`, if an initializer has this name.
    public let initializer: Int?

    /// True when nothing in the graph reads the value and it is not a graph output.
    public var isDead: Bool { uses.isEmpty && !isGraphOutput }
}

extension Graph {
    /// What the graph knows about the value called `name`.
    public func value(named name: String) -> Value {
        let idx = index.built(for: self)
        return Value(
            name: name,
            producer: idx.producers[name],
            uses: idx.uses[name] ?? [],
            isGraphInput: idx.inputNames.contains(name),
            isGraphOutput: idx.outputNames.contains(name),
            initializer: idx.initializers[name])
    }

    /// The initializer called `name`, if any.
    public func initializer(named name: String) -> Tensor? {
        index.built(for: self).initializers[name].map { initializers[$0] }
    }

    /// Every name this graph (and the graphs inside it) defines or reads:
    /// values, initializers and node names. ``uniqueName(_:)`` avoids them.
    public var allNames: Set<String> { index.built(for: self).allNames }

    /// Names read inside this graph (and graphs nested in it) that it does
    /// not define itself: values it captures from enclosing graphs.
    public var capturedNames: Set<String> { index.built(for: self).captured }

    /// `base` if no name in the graph equals it, else `base_1`, `base_2`, …
    public func uniqueName(_ base: String, avoiding extra: Set<String> = []) -> String {
        let taken = allNames
        if !taken.contains(base) && !extra.contains(base) { return base }
        var n = 1
        while taken.contains("\(base)_\(n)") || extra.contains("\(base)_\(n)") { n += 1 }
        return "\(base)_\(n)"
    }
}

/// The use/def index of one graph state. A fresh (empty) box replaces it on
/// every structural change, so a stale index is never read.
final class GraphIndex: Equatable, @unchecked Sendable {
    struct Built {
        var producers: [String: (node: Int, output: Int)] = [:]
        var uses: [String: [Use]] = [:]
        var inputNames: Set<String> = []
        var outputNames: Set<String> = []
        var initializers: [String: Int] = [:]
        var allNames: Set<String> = []
        var captured: Set<String> = []
    }
    private var built: Built?

    func built(for graph: Graph) -> Built {
        if let built { return built }
        var b = Built()
        for (i, t) in graph.initializers.enumerated() {
            if let n = t.name, b.initializers[n] == nil { b.initializers[n] = i }
            if let n = t.name { b.allNames.insert(n) }
        }
        for sparse in graph.sparseInitializers { if let n = sparse.values?.name { b.allNames.insert(n) } }
        for v in graph.inputs { if let n = v.name { b.inputNames.insert(n); b.allNames.insert(n) } }
        for v in graph.outputs { if let n = v.name { b.outputNames.insert(n); b.allNames.insert(n) } }
        var defined = b.inputNames.union(b.initializers.keys)
        defined.formUnion(graph.sparseInitializers.compactMap { $0.values?.name })
        var read: Set<String> = b.outputNames
        for (i, node) in graph.nodes.enumerated() {
            for (slot, input) in node.inputs.enumerated() where !input.isEmpty {
                b.uses[input, default: []].append(Use(node: i, input: slot))
                b.allNames.insert(input)
                read.insert(input)
            }
            var capturedHere: Set<String> = []
            for sub in node.subgraphs {
                let subIndex = sub.index.built(for: sub)
                capturedHere.formUnion(subIndex.captured)
                b.allNames.formUnion(subIndex.allNames)
            }
            for name in capturedHere.sorted() {
                b.uses[name, default: []].append(Use(node: i, input: nil))
                read.insert(name)
            }
            for (slot, output) in node.outputs.enumerated() where !output.isEmpty {
                if b.producers[output] == nil { b.producers[output] = (i, slot) }
                b.allNames.insert(output)
                defined.insert(output)
            }
            if let n = node.name { b.allNames.insert(n) }
        }
        b.captured = read.subtracting(defined)
        built = b
        return b
    }

    static func == (lhs: GraphIndex, rhs: GraphIndex) -> Bool { true }
}
