import ONNXGraph

/// What one fold did, kept so that it can be checked: the nodes it replaced
/// as they were, the node that replaces them as the fold left it, and every
/// constant each side reads.
///
/// Why records rather than comparing the graphs afterwards: a fold knows
/// exactly what it claims — "these nodes, on these constants, compute what
/// this node computes" — while a diff of the original and the final graph
/// has to guess it back, and cannot for a producer that absorbed several
/// things in turn (BN → Conv → Mul → Add), for a BN folded forward into the
/// op after it, or for constants an earlier pass computed. The fold's
/// verification (`FoldVerifier.verify(_:irVersion:opsetImports:)`) cuts each
/// record's two sides out as small models and runs them on the same input,
/// so every fold of every built-in pass, each step of a chain on its own,
/// is pair-checked; the whole-model check then covers their composition.
///
/// A pass makes one with ``init(pass:reason:kind:subject:op:replaced:in:context:)``
/// before it edits the graph, completes it with ``finish(replacement:in:context:)``
/// after, and hands it to ``PassContext/record(_:)``; the fold passes'
/// driver does this for them. A pass that changes the graph without records
/// is reported as such (``PassManager/Report/unrecordedPasses``): only the
/// whole-model check covers it.
///
/// (`@unchecked Sendable`: its nodes and tensors are IR value types, whose
/// shared storage is never written — copy-on-write — and whose byte
/// buffers are already `Sendable`; the IR types themselves do not declare it.)
public struct RewriteRecord: @unchecked Sendable {
    /// What kind of fold, which decides which constants are indexed by the
    /// op's output channel (and may be sampled for a large Conv).
    public enum Kind: String, Sendable, Codable {
        /// A BatchNormalization (after an optional Add) folded into the op before it.
        case batchNormIntoProducer
        /// A per-channel Mul or Add folded into the op before it.
        case affineIntoProducer
        /// A BatchNormalization folded into the op after it (its parameters
        /// are per *input* channel of that op).
        case batchNormIntoConsumer
    }

    public var pass: String
    /// The applied remark's reason id (`ConvBatchNormFolded`, …).
    public var reason: String
    public var kind: Kind
    /// Where the graph sits (``GraphScope/path``); empty for the main graph.
    public var path: [String]
    /// The node that was folded away (the BN, the Mul/Add), labelled as in
    /// `Graph.label(_:)` and qualified by ``path``.
    public var subject: String
    /// The linear op it was folded into, labelled likewise.
    public var op: String
    /// The replaced nodes as they were, in order; the first one's input 0
    /// is the data input ``input``.
    public var before: [Node]
    /// The op as the fold left it; its input 0 is ``input`` too.
    public var after: Node
    /// The constants ``before`` reads (every input that is neither
    /// ``input`` nor computed by an earlier node of ``before``), by name.
    public var beforeConstants: [String: Tensor]
    /// The constants ``after`` reads, by name (a constant rewritten in place
    /// keeps its name: the two maps are separate models' initializers).
    public var afterConstants: [String: Tensor]
    /// The data input both sides read, and the value both compute.
    public var input: String
    public var output: String
    /// The index in ``before`` of the linear op (0, or 1 for a forward fold).
    public var opIndex: Int
    /// Inputs the record could not resolve to a constant (the verifier
    /// reports the record as unverifiable; a built-in fold never leaves one).
    public var unresolved: [String] = []

    /// Starts a record from the graph as the fold found it: `replaced` are
    /// the nodes the fold removes or rewrites, in data-flow order, with the
    /// linear op `op` among them; `subject` is the node that goes.
    ///
    /// `known` are constants the fold has already looked up, by the name
    /// the nodes read them under; the rest are looked up here.
    public init(pass: String, reason: String, kind: Kind, subject: NodeID, op: NodeID, replaced: [NodeID],
                in graph: Graph, context: PassContext, known: [String: Tensor] = [:]) {
        self.pass = pass
        self.reason = reason
        self.kind = kind
        path = context.scope.path
        self.subject = context.scope.qualified(graph.label(subject))
        self.op = context.scope.qualified(graph.label(op))
        before = replaced.map { graph[$0] }
        opIndex = replaced.firstIndex(of: op) ?? 0
        after = graph[op]
        input = before.first?.inputs.first ?? ""
        output = before.last?.outputs.first ?? ""
        beforeConstants = [:]
        afterConstants = [:]
        beforeConstants = resolve(before, in: graph, context: context, known: known)
    }

    /// Completes the record from the graph as the fold left it: `replacement`
    /// is the op that now computes ``output``.
    public mutating func finish(replacement: NodeID, in graph: Graph, context: PassContext, known: [String: Tensor] = [:]) {
        after = graph[replacement]
        afterConstants = resolve([after], in: graph, context: context, known: known)
    }

    /// The constants `nodes` read, through the one constant lookup the
    /// passes use (Identity chains, Constant nodes, enclosing graphs).
    private mutating func resolve(_ nodes: [Node], in graph: Graph, context: PassContext,
                                  known: [String: Tensor]) -> [String: Tensor] {
        var computed: Set<String> = [input]
        var constants: [String: Tensor] = [:]
        for node in nodes {
            for name in node.inputs where !name.isEmpty && !computed.contains(name) && constants[name] == nil {
                if let tensor = known[name] {
                    constants[name] = tensor
                } else if case .success(let (tensor, _)) = context.constant(named: name, in: graph) {
                    constants[name] = tensor
                } else {
                    unresolved.append(name)
                }
            }
            computed.formUnion(node.outputs)
        }
        return constants
    }
}
