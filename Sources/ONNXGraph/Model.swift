/// `ModelProto`: a whole model file.
///
/// The graph is optional only because the message allows it; the reader
/// rejects a file without one ("not an ONNX model").
public struct Model: Equatable {
    public var irVersion: Int64?
    public var opsetImports: [OperatorSetID] = []
    public var producerName: String?
    public var producerVersion: String?
    public var domain: String?
    public var modelVersion: Int64?
    public var docString: String?
    public var graph: Graph?
    public var metadataProps: [StringPair] = []
    public var trainingInfo: [TrainingInfo] = []
    public var functions: [Function] = []
    public var configuration: [DeviceConfiguration] = []
    public var unknownFields = UnknownFields()

    public init(irVersion: Int64? = nil, opsetImports: [OperatorSetID] = [], graph: Graph? = nil) {
        self.irVersion = irVersion
        self.opsetImports = opsetImports
        self.graph = graph
    }

    /// The imported version of an operator set; `""` asks for the default
    /// ONNX domain (imported as "" or "ai.onnx").
    public func opsetVersion(domain: String = "") -> Int64? {
        let wantsDefault = domain == "" || domain == "ai.onnx"
        return opsetImports.first {
            wantsDefault ? $0.isDefaultDomain : $0.domain == domain
        }?.version
    }
}
