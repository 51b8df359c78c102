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
public struct Remark: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable { case applied, missed }
    public var kind: Kind
    /// Name of the pass that made the remark.
    public var pass: String
    /// Short CamelCase id, stable across releases (e.g. `ProducerHasOtherUses`).
    public var reason: String
    /// The node the remark is about (its name, or op type and index).
    public var node: String
    /// A sentence a user understands.
    public var message: String

    public init(kind: Kind, pass: String, reason: String, node: String, message: String) {
        self.kind = kind; self.pass = pass; self.reason = reason; self.node = node; self.message = message
    }
}

/// What a pass knows about the model around the graph it rewrites.
public struct PassContext {
    /// The model's IR version: it decides whether an initializer that is also
    /// a graph input is a constant (IR < 4) or a default that callers may
    /// override at run time (IR ≥ 4).
    public var irVersion: Int64
    /// The model's operator set imports.
    public var opsetImports: [OperatorSetID]
    /// Remarks made so far, in order.
    public internal(set) var remarks: [Remark] = []

    public init(irVersion: Int64, opsetImports: [OperatorSetID]) {
        self.irVersion = irVersion
        self.opsetImports = opsetImports
    }

    /// The imported version of the default ONNX operator set.
    public var defaultOpsetVersion: Int64? {
        opsetImports.first { $0.isDefaultDomain }?.version
    }

    public mutating func remark(_ remark: Remark) { remarks.append(remark) }
}

/// An input the pass cannot interpret at all. The CLI reports it as an input
/// error (exit 2).
public struct PassError: Error, CustomStringConvertible, Sendable {
    public let pass: String
    public let message: String
    public init(pass: String, _ message: String) { self.pass = pass; self.message = message }
    public var description: String { message }
}
