import ONNXGraph

/// The smallest pass to write: a rewrite rooted at one operator type.
///
/// A pattern says which default-domain operators it starts from
/// (``rootOps``) and what to do at one of them
/// (``matchAndRewrite(_:rewriter:)``): match — read the node and its
/// neighbours — and then either rewrite through the ``Rewriter`` and return
/// ``MatchResult/applied(reason:message:)``, or touch nothing and say why
/// with ``MatchResult/notMatched(reason:message:)``. The pattern is a
/// ``GraphPass``: its `run(on:context:)` is the worklist driver the built-in
/// folds use, so it runs in ``PassManager`` like any pass, in the main graph
/// and every If/Loop/Scan body, and costs what the rewrites touch — not a
/// sweep of the graph per rewrite:
///
/// - every root candidate is tried once, lowest `NodeID` first;
/// - after a rewrite, the nodes its edits touched, their producers and
///   their readers are tried again (a rewrite can enable another nearby);
/// - a `notMatched` is provisional until the end: it is decided again on
///   the final graph, and becomes one `missed` remark; an `applied` is an
///   `applied` remark at once;
/// - what an erased node alone read goes with it (``Rewriter/erase(_:)``).
///
/// This is MLIR's `matchAndRewrite` and onnx-ir's rewrite rule in Swift:
/// a match that fails leaves the graph alone, and a failed match explains
/// itself.
public protocol RewritePattern: GraphPass {
    /// Default-domain operator types this pattern is tried on.
    var rootOps: Set<String> { get }
    /// Tries the pattern at `root` (one of ``rootOps``). Edits go through
    /// `rewriter`, and only after the match succeeded.
    func matchAndRewrite(_ root: NodeID, rewriter: inout Rewriter) throws -> MatchResult
}

/// What ``RewritePattern/matchAndRewrite(_:rewriter:)`` did at a node.
public enum MatchResult: Sendable, Equatable {
    /// Rewritten: an `applied` remark with this reason id and sentence.
    case applied(reason: String, message: String)
    /// Not rewritten, for this reason (a stable CamelCase id and a
    /// sentence): a `missed` remark, unless a later rewrite makes the node match.
    case notMatched(reason: String, message: String)
    /// Not rewritten, and not worth a remark: the node is not what the
    /// pattern is about after all.
    case notCandidate
}

extension RewritePattern {
    /// The worklist driver (see the protocol's documentation).
    public func run(on graph: inout Graph, context: inout PassContext) throws -> PassResult {
        let roots = rootOps
        let isCandidate = { (g: Graph, id: NodeID) in
            let node = g[id]
            return roots.contains(node.opType) && node.isDefaultDomain
        }
        let seeds = graph.nodeIDs(ofType: roots)
        guard !seeds.isEmpty else { return PassResult(modified: false) }
        let scan = context
        let modified = try runWorklist(in: &graph, context: &context, pass: name, seeds: seeds, isCandidate: isCandidate) { g, id in
            var rewriter = Rewriter(context: scan)
            swap(&rewriter.storage, &g)
            defer { swap(&rewriter.storage, &g) }
            switch try matchAndRewrite(id, rewriter: &rewriter) {
            case .applied(let reason, let message):
                return .applied(reason: reason, message: message, records: rewriter.records)
            case .notMatched(let reason, let message):
                return .missed(reason: reason, message: message)
            case .notCandidate:
                return .skipped
            }
        }
        return PassResult(modified: modified)
    }
}

/// The graph as a pattern sees and edits it.
///
/// Read through ``graph`` (or ``subscript(_:)`` and ``value(named:)``);
/// edit through the methods here, which keep the use/def index current at
/// the cost of what they touch and tell the driver what to look at again.
/// Do not keep a copy of ``graph`` across an edit: the copy would share
/// storage with the edited graph and make the edit copy the whole graph.
public struct Rewriter {
    var storage = Graph()
    /// The scope and options of the graph being rewritten (constants are
    /// looked up through it: ``PassContext/constant(named:in:)``).
    public let context: PassContext
    var records: [RewriteRecord] = []

    init(context: PassContext) { self.context = context }

    /// The graph, read-only.
    public var graph: Graph { _read { yield storage } }
    /// The node with this ID.
    public subscript(_ id: NodeID) -> Node { storage[id] }
    /// A value's producer, uses, and whether it is a graph input, output or initializer.
    public func value(named name: String) -> Value { storage.value(named: name) }
    /// The constant called `name` as this graph sees it (initializers,
    /// `Constant` nodes, `Identity` chains of them, enclosing graphs).
    public func constant(named name: String) -> Result<(Tensor, ConstantSource), NotConstant> {
        context.constant(named: name, in: storage)
    }

    /// Makes every reader of `old` read `new` instead (graph outputs keep their names: see `Graph.replaceAllUses(of:with:)`).
    public mutating func replaceAllUses(of old: String, with new: String) {
        storage.replaceAllUses(of: old, with: new)
    }
    /// Points input `slot` of `node` at `name`.
    public mutating func setInput(node: NodeID, slot: Int, to name: String) {
        storage.setInput(node: node, slot: slot, to: name)
    }
    /// Renames output `slot` of `node`.
    public mutating func setOutput(node: NodeID, slot: Int, to name: String) {
        storage.setOutput(node: node, slot: slot, to: name)
    }
    /// Changes a node's operator, attributes or doc string.
    public mutating func updateNode(_ node: NodeID, _ body: (inout Node) -> Void) {
        storage.updateNode(node, body)
    }
    /// Adds a node after every other (it may read any value; no earlier
    /// node may read its outputs) and returns its ID.
    @discardableResult
    public mutating func append(_ node: Node) -> NodeID { storage.appendNode(node) }
    /// Adds a constant under `name` (a graph input too where IR < 4 needs one).
    public mutating func addConstant(_ tensor: Tensor, named name: String) {
        storage.addInitializer(tensor, named: name, context: context)
    }
    /// A name no value of the model uses, from `base`.
    public func uniqueName(_ base: String) -> String { context.uniqueName(base, in: storage) }
    /// Erases `ids`, then the initializers, `Constant` and `Identity` nodes
    /// only they read (nothing a subgraph or `training_info` still reads).
    public mutating func erase(_ ids: Set<NodeID>) {
        let read = Set(ids.flatMap { storage[$0].inputs }.filter { !$0.isEmpty })
        storage.removeNodes(ids)
        storage.removeDeadValues(read, context: context)
    }
    /// Hands over what the rewrite replaced (``RewriteRecord``), so that the
    /// fold's verification pair-checks it (one per fold the rewrite made).
    public mutating func record(_ record: RewriteRecord) { records.append(record) }
    /// Any other edit, on the graph itself.
    public mutating func edit<R>(_ body: (inout Graph) throws -> R) rethrows -> R { try body(&storage) }
}
