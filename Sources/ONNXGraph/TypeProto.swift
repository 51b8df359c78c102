/// `TypeProto`: the type of a value — a tensor with element type and shape,
/// or a sequence, map, optional, sparse tensor or opaque type.
public struct TypeProto: Equatable, Sendable {
    public indirect enum Value: Equatable, Sendable {
        case tensor(TensorType)
        case sequence(Sequence)
        case map(Map)
        case optional(OptionalType)
        case sparseTensor(TensorType)
        case opaque(Opaque)
    }

    /// Element type and (possibly partial) shape of a dense or sparse tensor.
    public struct TensorType: Equatable, Sendable {
        public var elementType: DataType?
        public var shape: TensorShape?
        public var unknownFields = UnknownFields()
        public init(elementType: DataType?, shape: TensorShape?) {
            self.elementType = elementType; self.shape = shape
        }
    }
    public struct Sequence: Equatable, Sendable {
        public var elementType: TypeProto?
        public var unknownFields = UnknownFields()
        public init(elementType: TypeProto?) { self.elementType = elementType }
    }
    public struct Map: Equatable, Sendable {
        public var keyType: DataType?
        public var valueType: TypeProto?
        public var unknownFields = UnknownFields()
        public init(keyType: DataType?, valueType: TypeProto?) { self.keyType = keyType; self.valueType = valueType }
    }
    public struct OptionalType: Equatable, Sendable {
        public var elementType: TypeProto?
        public var unknownFields = UnknownFields()
        public init(elementType: TypeProto?) { self.elementType = elementType }
    }
    public struct Opaque: Equatable, Sendable {
        public var domain: String?
        public var name: String?
        public var unknownFields = UnknownFields()
        public init(domain: String?, name: String?) { self.domain = domain; self.name = name }
    }

    public var value: Value?
    public var denotation: String?
    public var unknownFields = UnknownFields()

    public init(value: Value?, denotation: String? = nil) {
        self.value = value; self.denotation = denotation
    }

    /// A dense tensor type with fully known dimensions.
    public static func tensor(_ elementType: DataType, dims: [Int64]) -> TypeProto {
        TypeProto(value: .tensor(TensorType(
            elementType: elementType,
            shape: TensorShape(dims: dims.map { TensorShape.Dimension(value: .value($0)) }))))
    }

    /// The dense tensor type, if this is one.
    public var tensorType: TensorType? {
        if case .tensor(let t)? = value { return t }
        return nil
    }
}

/// `TensorShapeProto`.
public struct TensorShape: Equatable, Sendable {
    public struct Dimension: Equatable, Sendable {
        public enum Value: Equatable, Sendable { case value(Int64), param(String) }
        public var value: Value?
        public var denotation: String?
        public var unknownFields = UnknownFields()
        public init(value: Value?, denotation: String? = nil) { self.value = value; self.denotation = denotation }
    }
    public var dims: [Dimension]
    public var unknownFields = UnknownFields()
    public init(dims: [Dimension]) { self.dims = dims }
}

/// `ValueInfoProto`: a value's name and, when known, its type.
public struct ValueInfo: Equatable, Sendable {
    public var name: String?
    public var type: TypeProto?
    public var docString: String?
    public var metadataProps: [StringPair] = []
    public var unknownFields = UnknownFields()
    public init(name: String?, type: TypeProto? = nil) { self.name = name; self.type = type }
}
