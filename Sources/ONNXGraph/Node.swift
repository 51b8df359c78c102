/// `NodeProto`: one operator application.
///
/// Inputs and outputs are value names, as in the file; an empty name is an
/// omitted optional input or output. Ask the ``Graph`` who produces or uses
/// a value (``Graph/value(named:)``) instead of scanning node lists.
public struct Node: Equatable {
    public var inputs: [String]
    public var outputs: [String]
    public var name: String?
    /// The operator, e.g. "Conv". Required by ONNX; the reader rejects nodes without one.
    public var opType: String
    /// The operator set domain; nil, "" and "ai.onnx" are the default domain.
    public var domain: String?
    public var overload: String?
    public var attributes: [Attribute] = []
    public var docString: String?
    public var metadataProps: [StringPair] = []
    public var deviceConfigurations: [NodeDeviceConfiguration] = []
    public var unknownFields = UnknownFields()
    /// Where the node came from; not part of the message (ignored by `==`).
    public var origin = NodeOrigin()

    public init(opType: String, inputs: [String], outputs: [String], name: String? = nil,
                domain: String? = nil, attributes: [Attribute] = []) {
        self.opType = opType
        self.inputs = inputs
        self.outputs = outputs
        self.name = name
        self.domain = domain
        self.attributes = attributes
    }

    /// True when the node's operator is from the default ONNX domain.
    public var isDefaultDomain: Bool { domain == nil || domain == "" || domain == "ai.onnx" }

    /// True for a default-domain node of the given operator type.
    public func isOp(_ type: String) -> Bool { opType == type && isDefaultDomain }

    /// The attribute with this name, if any (the first, if a file repeats it).
    public func attribute(_ name: String) -> Attribute? { attributes.first { $0.name == name } }

    /// An INT attribute's value. ONNX types attributes strictly: a FLOAT
    /// attribute with an integral value is not an INT.
    public func intAttribute(_ name: String) -> Int64? {
        guard let a = attribute(name), a.type == .int || (a.type == nil && a.i != nil) else { return nil }
        return a.i
    }

    /// A FLOAT attribute's value.
    public func floatAttribute(_ name: String) -> Float? {
        guard let a = attribute(name), a.type == .float || (a.type == nil && a.f != nil) else { return nil }
        return a.f
    }

    /// An INTS attribute's value.
    public func intsAttribute(_ name: String) -> [Int64]? {
        guard let a = attribute(name), a.type == .ints else { return nil }
        return a.ints
    }

    /// How to name this node in messages: its name, or its type and its
    /// position in the graph *as read* (``NodeOrigin/index``) — so the label
    /// stays the one the input file gives it however passes move nodes
    /// around — or, for a node made in memory, `index` (its position now).
    public func displayName(index: Int) -> String {
        if let name, !name.isEmpty { return name }
        return "\(opType)#\(origin.index ?? index)"
    }

    /// Graphs held by this node's attributes (If/Loop/Scan bodies).
    public var subgraphs: [Graph] { attributes.flatMap(\.subgraphs) }
    /// Whether any attribute holds a graph: what ``subgraphs`` answers
    /// without building the list (asked of every node, in every pass).
    public var holdsSubgraphs: Bool { attributes.contains { $0.boxedG != nil || !$0.graphs.isEmpty } }
}

/// Where a node came from: its position in its graph when the model was
/// read (set by the reader, or by ``Graph/init(name:nodes:inputs:outputs:initializers:)``
/// for nodes that have none).
///
/// An unnamed node is reported as `OpType#index`; taken from the current
/// position, that label changes as passes remove nodes before it, so a
/// report would name `BatchNormalization#3` for the input's fourth node, and
/// joining remarks by label would pair a BN with another's verdict. The
/// origin keeps the input's numbering through every edit.
///
/// Not part of the ONNX message: two nodes that differ only in origin are
/// equal, and the writer does not store it.
public struct NodeOrigin: Equatable, Hashable, Sendable {
    /// Position in the graph as read; nil for a node made since.
    public var index: Int?

    public init(index: Int? = nil) { self.index = index }

    public static func == (_: NodeOrigin, _: NodeOrigin) -> Bool { true }
    public func hash(into hasher: inout Hasher) {}
}
