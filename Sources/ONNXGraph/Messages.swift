/// Small ONNX messages that carry metadata through bnfold unchanged.
///
/// Every IR type mirrors its protobuf message field for field, including
/// which optional fields were present, so that reading and writing a model
/// with no pass applied gives back the same message. Fields a newer ONNX adds
/// are kept as `unknownFields` and written back after the known ones.

/// Protobuf fields this build of bnfold does not know, kept as their wire
/// encoding so that they survive a round trip.
public struct UnknownFields: Equatable, Sendable {
    public struct Field: Equatable, Sendable {
        /// Field number.
        public var number: UInt32
        /// Protobuf wire type (0 varint, 1 64-bit, 2 length-delimited, 5 32-bit).
        public var wireType: UInt8
        /// The field's payload as it was on the wire (without tag).
        public var payload: [UInt8]
        public init(number: UInt32, wireType: UInt8, payload: [UInt8]) {
            self.number = number; self.wireType = wireType; self.payload = payload
        }
    }
    public var fields: [Field]
    public init(_ fields: [Field] = []) { self.fields = fields }
    public var isEmpty: Bool { fields.isEmpty }
}

/// `StringStringEntryProto`: a key/value pair (metadata, external data keys).
public struct StringPair: Equatable, Sendable {
    public var key: String?
    public var value: String?
    public var unknownFields = UnknownFields()
    public init(key: String?, value: String?) { self.key = key; self.value = value }
}

/// `OperatorSetIdProto`: which version of an operator set a model uses.
public struct OperatorSetID: Equatable, Sendable {
    /// The domain; "" and "ai.onnx" both name the default ONNX operator set.
    public var domain: String?
    public var version: Int64?
    public var unknownFields = UnknownFields()
    public init(domain: String?, version: Int64?) { self.domain = domain; self.version = version }

    /// True for the default ONNX domain ("", "ai.onnx" or absent).
    public var isDefaultDomain: Bool { domain == nil || domain == "" || domain == "ai.onnx" }
}

/// `TensorAnnotation`: quantization parameter names of a tensor.
public struct TensorAnnotation: Equatable, Sendable {
    public var tensorName: String?
    public var quantParameterTensorNames: [StringPair] = []
    public var unknownFields = UnknownFields()
    public init(tensorName: String?) { self.tensorName = tensorName }
}

/// `DeviceConfigurationProto` (model-level sharding set-up).
public struct DeviceConfiguration: Equatable, Sendable {
    public var name: String?
    public var numDevices: Int32?
    public var devices: [String] = []
    public var unknownFields = UnknownFields()
    public init() {}
}

/// `NodeDeviceConfigurationProto`.
public struct NodeDeviceConfiguration: Equatable, Sendable {
    public var configurationID: String?
    public var shardingSpecs: [ShardingSpec] = []
    public var pipelineStage: Int32?
    public var unknownFields = UnknownFields()
    public init() {}
}

/// `ShardingSpecProto`.
public struct ShardingSpec: Equatable, Sendable {
    public var tensorName: String?
    public var devices: [Int64] = []
    public var indexToDeviceGroupMap: [IntIntList] = []
    public var shardedDims: [ShardedDim] = []
    public var unknownFields = UnknownFields()
    public init() {}
}

/// `IntIntListEntryProto`.
public struct IntIntList: Equatable, Sendable {
    public var key: Int64?
    public var values: [Int64] = []
    public var unknownFields = UnknownFields()
    public init() {}
}

/// `ShardedDimProto`.
public struct ShardedDim: Equatable, Sendable {
    public var axis: Int64?
    public var simpleSharding: [SimpleShardedDim] = []
    public var unknownFields = UnknownFields()
    public init() {}
}

/// `SimpleShardedDimProto`.
public struct SimpleShardedDim: Equatable, Sendable {
    public enum Dim: Equatable, Sendable { case value(Int64), param(String) }
    public var dim: Dim?
    public var numShards: Int64?
    public var unknownFields = UnknownFields()
    public init() {}
}

/// `TrainingInfoProto`: initialization and update steps for training.
public struct TrainingInfo: Equatable {
    public var initialization: Graph?
    public var algorithm: Graph?
    public var initializationBinding: [StringPair] = []
    public var updateBinding: [StringPair] = []
    public var unknownFields = UnknownFields()
    public init() {}
}

/// `FunctionProto`: a model-local operator with a body of nodes.
public struct Function: Equatable {
    public var name: String?
    public var inputs: [String] = []
    public var outputs: [String] = []
    public var attributeNames: [String] = []
    public var attributeDefaults: [Attribute] = []
    public var nodes: [Node] = []
    public var docString: String?
    public var opsetImports: [OperatorSetID] = []
    public var domain: String?
    public var overload: String?
    public var valueInfo: [ValueInfo] = []
    public var metadataProps: [StringPair] = []
    public var unknownFields = UnknownFields()
    public init() {}
}
