import ONNXGraph

/// A graph-to-graph rewrite: anything with `run(on:context:)` is a pass.
///
/// A pass matches, then rewrites: matching never mutates the graph, and a
/// failed match explains itself with a ``Remark`` of kind `.missed`, so
/// users learn why something was left alone. A pass must leave the graph
/// valid (topologically sorted, every value name defined once) whether or
/// not it changed it.
public protocol GraphPass {
    /// Unique, stable, kebab-case name used by `--passes` and in remarks.
    var name: String { get }
    /// One line for `bnfold passes`.
    var summary: String { get }
    /// Rewrites `graph`; returns whether anything changed. Throws only for
    /// input the pass cannot interpret at all (an unknown opset); anything
    /// the pass merely cannot fold is a `.missed` remark, not an error.
    func run(on graph: inout Graph, context: inout PassContext) throws -> PassResult
    /// True for a pass whose changes need no pair check: they are right by
    /// construction (`fold-constants` stores what the reference runtime
    /// itself computed; checking it would re-run the same evaluation). A
    /// pass that is false here (the default) and changes the graph without
    /// a ``RewriteRecord`` is listed in ``PassManager/Report/unrecordedPasses``.
    var isExactByConstruction: Bool { get }
}

extension GraphPass {
    public var isExactByConstruction: Bool { false }
}

/// What one run of a pass did.
public struct PassResult: Sendable, Equatable {
    /// True when the graph changed. The pass manager repeats the pipeline
    /// until no pass reports a change.
    public var modified: Bool
    public init(modified: Bool) { self.modified = modified }
}

/// A pass's account of one candidate: folded (`applied`) or left alone
/// (`missed`) with a stable reason id users can filter on.
///
/// A remark names its node three ways: ``node``, the label people read
/// (its name, or `OpType#index` as read; qualified by the subgraph path);
/// ``nodeID``, its identity in its graph; and ``scope``, the path of that
/// graph. Remarks are append-only: no pass edits or removes another's.
/// Which of several misses about one node is its verdict is decided once,
/// by the pass manager's report (``PassManager/Report/remarks``), keyed by
/// (``scope``, ``nodeID``).
public struct Remark: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable { case applied, missed }
    public var kind: Kind
    /// Name of the pass that made the remark.
    public var pass: String
    /// Short CamelCase id, stable across releases (e.g. `ProducerHasOtherUses`).
    public var reason: String
    /// The node the remark is about (its name, or op type and index as read),
    /// prefixed with ``scope`` (`If_0/then_branch/bn1`) once the pass manager
    /// has it.
    public var node: String
    /// A sentence a user understands.
    public var message: String
    /// The node's identity in its graph (nil for a remark about no single node).
    public var nodeID: NodeID?
    /// The path of the graph the node is in (``GraphScope/path``); empty
    /// for the main graph. Set by the pass manager.
    public var scope: [String]

    /// The report's JSON carries the five strings (its contract: every
    /// value a string); identity and scope are for joining in memory.
    enum CodingKeys: String, CodingKey { case kind, pass, reason, node, message }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(kind: try c.decode(Kind.self, forKey: .kind), pass: try c.decode(String.self, forKey: .pass),
                  reason: try c.decode(String.self, forKey: .reason), node: try c.decode(String.self, forKey: .node),
                  message: try c.decode(String.self, forKey: .message))
    }

    public init(kind: Kind, pass: String, reason: String, node: String, message: String,
                nodeID: NodeID? = nil, scope: [String] = []) {
        self.kind = kind; self.pass = pass; self.reason = reason; self.node = node; self.message = message
        self.nodeID = nodeID; self.scope = scope
    }
}

/// What a pass knows about the model around the graph it rewrites.
///
/// Passes ask the context, not the graph, whether a value is constant
/// (``constant(named:in:)``): the answer depends on the IR version, on
/// ``assumeConstantInputs`` and, inside an If/Loop/Scan body, on the
/// enclosing graphs (``scope``), none of which the graph knows.
public struct PassContext {
    /// The model's IR version: it decides whether an initializer that is also
    /// a graph input is a constant (IR < 4) or a default that callers may
    /// override at run time (IR ≥ 4).
    public var irVersion: Int64
    /// The model's operator set imports.
    public var opsetImports: [OperatorSetID]
    /// Treat initializers that are also graph inputs of the main graph as
    /// constants even for IR ≥ 4 (`bnfold --assume-constant-inputs`). Off by
    /// default: such a value is a default a caller may replace, and folding
    /// it would bake the default in. When a fold rewrites one in place, it is
    /// also removed from the graph inputs, so that nobody can feed the
    /// unfolded values to the folded graph.
    public var assumeConstantInputs: Bool
    /// Where the graph being rewritten sits: the main graph, or a subgraph
    /// with the graphs around it. ``PassManager`` sets it.
    public var scope: GraphScope
    /// Remarks the running pass made so far in this graph, in order
    /// (append-only; ``PassManager`` collects them).
    public internal(set) var remarks: [Remark] = []
    /// Rewrite records made so far by the running pass, in order
    /// (append-only; ``PassManager`` collects them into its report).
    public internal(set) var records: [RewriteRecord] = []

    public init(irVersion: Int64, opsetImports: [OperatorSetID], assumeConstantInputs: Bool = false,
                scope: GraphScope = GraphScope()) {
        self.irVersion = irVersion
        self.opsetImports = opsetImports
        self.assumeConstantInputs = assumeConstantInputs
        self.scope = scope
    }

    /// The imported version of the default ONNX operator set.
    public var defaultOpsetVersion: Int64? {
        opsetImports.first { $0.isDefaultDomain }?.version
    }

    public mutating func remark(_ remark: Remark) { remarks.append(remark) }

    /// Hands over what a rewrite did (``RewriteRecord``), so that the
    /// fold's verification checks exactly that rewrite.
    public mutating func record(_ record: RewriteRecord) { records.append(record) }

    /// `base`, or `base_1`, `base_2`, … : a name used nowhere in `graph`, in
    /// the graphs nested in it, or in the graphs around it (ONNX names are
    /// unique across nested scopes).
    public func uniqueName(_ base: String, in graph: Graph) -> String {
        graph.uniqueName(base, avoiding: scope.reservedNames)
    }
}

/// Where a graph sits in the model: the main graph, or an If/Loop/Scan body
/// inside it (at any depth).
///
/// A subgraph reads values of the graphs around it by name; a constant
/// there is a constant here too (``PassContext/constant(named:in:)`` looks
/// outwards), but it belongs to the outer graph: a pass inside the subgraph
/// never edits it, it makes a local copy (`Graph/replaceConstantInput(node:slot:with:source:context:)`).
public struct GraphScope {
    /// The graphs around this one, outermost (the main graph) first, as they
    /// were when the pass manager entered this one. Empty for the main graph.
    public var enclosingGraphs: [Graph]
    /// How remarks name this graph: owning node and attribute per level,
    /// e.g. `["If_0", "then_branch"]`. Empty for the main graph.
    public var path: [String]
    /// Main-graph values read from outside the graph (by `training_info`):
    /// never removed and never rewritten in place.
    public var pinnedNames: Set<String>

    public init(enclosingGraphs: [Graph] = [], path: [String] = [], pinnedNames: Set<String> = []) {
        self.enclosingGraphs = enclosingGraphs
        self.path = path
        self.pinnedNames = pinnedNames
    }

    /// True for the model's main graph.
    public var isMainGraph: Bool { enclosingGraphs.isEmpty }

    /// The scope of a subgraph of `graph` (this scope's graph): held by the
    /// node labelled `node`, in the attribute labelled `attribute`.
    public func entering(_ graph: Graph, node: String, attribute: String) -> GraphScope {
        GraphScope(enclosingGraphs: enclosingGraphs + [graph], path: path + [node, attribute], pinnedNames: [])
    }

    /// `node` qualified by this scope's path: `If_0/then_branch/bn1`.
    public func qualified(_ node: String) -> String {
        (path + [node]).joined(separator: "/")
    }

    /// Names a new value must avoid besides the current graph's own: those of
    /// the whole model as the pass manager entered this graph, and pinned ones.
    var reservedNames: Set<String> {
        (enclosingGraphs.first?.allNames ?? []).union(pinnedNames)
    }
}

/// An input the pass cannot interpret at all. The CLI reports it as an input
/// error (exit 2).
public struct PassError: Error, CustomStringConvertible, Sendable {
    public let pass: String
    public let message: String
    public init(pass: String, _ message: String) { self.pass = pass; self.message = message }
    public var description: String { message }
}
