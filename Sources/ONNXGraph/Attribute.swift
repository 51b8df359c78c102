/// `AttributeProto`: a named constant argument of a node.
///
/// Mirrors the message field for field (ONNX files in the wild sometimes set
/// more than one value field, or none with a `type`): read the value through
/// ``value``, build attributes with the static constructors.
public struct Attribute: Equatable {
    /// `AttributeProto.AttributeType`.
    public struct Kind: RawRepresentable, Hashable, Sendable {
        public var rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }
        public static let undefined = Kind(rawValue: 0)
        public static let float = Kind(rawValue: 1)
        public static let int = Kind(rawValue: 2)
        public static let string = Kind(rawValue: 3)
        public static let tensor = Kind(rawValue: 4)
        public static let graph = Kind(rawValue: 5)
        public static let floats = Kind(rawValue: 6)
        public static let ints = Kind(rawValue: 7)
        public static let strings = Kind(rawValue: 8)
        public static let tensors = Kind(rawValue: 9)
        public static let graphs = Kind(rawValue: 10)
        public static let sparseTensor = Kind(rawValue: 11)
        public static let sparseTensors = Kind(rawValue: 12)
        public static let typeProto = Kind(rawValue: 13)
        public static let typeProtos = Kind(rawValue: 14)
    }

    /// The attribute's value, chosen by `type`.
    public enum Value: Equatable {
        case float(Float), int(Int64), string([UInt8]), tensor(Tensor), graph(Graph)
        case sparseTensor(SparseTensor), typeProto(TypeProto)
        case floats([Float]), ints([Int64]), strings([[UInt8]]), tensors([Tensor]), graphs([Graph])
        case sparseTensors([SparseTensor]), typeProtos([TypeProto])
    }

    public var name: String?
    public var refAttrName: String?
    public var docString: String?
    /// The raw `type` field (nil when absent).
    public var type: Kind?
    public var f: Float?
    public var i: Int64?
    public var s: [UInt8]?
    // The four message-valued fields are held out of line: inline they made
    // every Attribute 1,280 bytes (a Tensor, a Graph, a SparseTensor and a
    // TypeProto side by side), and most attributes are an int list or a
    // float — 200,000 of them were a quarter of a gigabyte. Setting one
    // stores a new box, so value semantics are unchanged.
    public var t: Tensor? { get { boxedT?.value } set { boxedT = newValue.map(Boxed.init) } }
    public var g: Graph? { get { boxedG?.value } set { boxedG = newValue.map(Boxed.init) } }
    public var sparseTensor: SparseTensor? {
        get { boxedSparseTensor?.value } set { boxedSparseTensor = newValue.map(Boxed.init) }
    }
    public var tp: TypeProto? { get { boxedTP?.value } set { boxedTP = newValue.map(Boxed.init) } }
    private var boxedT: Boxed<Tensor>?
    private(set) var boxedG: Boxed<Graph>?
    private var boxedSparseTensor: Boxed<SparseTensor>?
    private var boxedTP: Boxed<TypeProto>?
    public var floats: [Float] = []
    public var ints: [Int64] = []
    public var strings: [[UInt8]] = []
    public var tensors: [Tensor] = []
    public var graphs: [Graph] = []
    public var sparseTensors: [SparseTensor] = []
    public var typeProtos: [TypeProto] = []
    public var unknownFields = UnknownFields()

    public init(name: String?) { self.name = name }

    /// The value `type` designates; nil when `type` is missing or its field is absent.
    public var value: Value? {
        switch type {
        case .float?: return f.map(Value.float)
        case .int?: return i.map(Value.int)
        case .string?: return s.map(Value.string)
        case .tensor?: return t.map(Value.tensor)
        case .graph?: return g.map(Value.graph)
        case .sparseTensor?: return sparseTensor.map(Value.sparseTensor)
        case .typeProto?: return tp.map(Value.typeProto)
        case .floats?: return .floats(floats)
        case .ints?: return .ints(ints)
        case .strings?: return .strings(strings)
        case .tensors?: return .tensors(tensors)
        case .graphs?: return .graphs(graphs)
        case .sparseTensors?: return .sparseTensors(sparseTensors)
        case .typeProtos?: return .typeProtos(typeProtos)
        default: return nil
        }
    }

    /// Graphs held by this attribute (If/Loop/Scan bodies), whatever its type says.
    public var subgraphs: [Graph] { (g.map { [$0] } ?? []) + graphs }

    public static func float(_ name: String, _ v: Float) -> Attribute {
        var a = Attribute(name: name); a.type = .float; a.f = v; return a
    }
    public static func int(_ name: String, _ v: Int64) -> Attribute {
        var a = Attribute(name: name); a.type = .int; a.i = v; return a
    }
    public static func ints(_ name: String, _ v: [Int64]) -> Attribute {
        var a = Attribute(name: name); a.type = .ints; a.ints = v; return a
    }
    public static func string(_ name: String, _ v: String) -> Attribute {
        var a = Attribute(name: name); a.type = .string; a.s = Array(v.utf8); return a
    }
    public static func tensor(_ name: String, _ v: Tensor) -> Attribute {
        var a = Attribute(name: name); a.type = .tensor; a.t = v; return a
    }
    public static func graph(_ name: String, _ v: Graph) -> Attribute {
        var a = Attribute(name: name); a.type = .graph; a.g = v; return a
    }
}

/// An immutable heap box for a large, rarely present value (see
/// ``Attribute/t``): compared by its contents, never mutated in place.
final class Boxed<Value: Equatable>: Equatable, @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
    static func == (a: Boxed, b: Boxed) -> Bool { a === b || a.value == b.value }
}
