/// `TensorProto`: a dense tensor — element type, dimensions, and its data.
///
/// The data is wherever the file put it: `rawData` (the usual place),
/// one of the typed fields (`floatData`, `int32Data`, … — small tensors made
/// with `onnx.helper` often use these), or an external file
/// (`dataLocation == .external`, described by `externalData`). bnfold keeps
/// the fields exactly as read so that an unchanged tensor is written back the
/// same way, and reads the numbers through ``doubles()`` whatever the field.
///
/// Typed fields are held as their bytes (`ByteBuffer`), not as Swift arrays,
/// so that reading a model copies no tensor data after protobuf's own unpack.
public struct Tensor: Equatable {
    /// Where a tensor's data lives (`TensorProto.DataLocation`).
    public enum Location: Int32, Sendable { case inline = 0, external = 1 }

    /// `TensorProto.Segment`: the slice of a larger tensor this message holds.
    public struct Segment: Equatable, Sendable {
        public var begin: Int64?
        public var end: Int64?
        public var unknownFields = UnknownFields()
        public init(begin: Int64?, end: Int64?) { self.begin = begin; self.end = end }
    }

    public var dims: [Int64]
    /// The raw `data_type` field; `nil` when absent. See ``elementType``.
    public var dataType: Int32?
    public var segment: Segment?
    /// `float_data` as little-endian Float32 bytes.
    public var floatData: ByteBuffer = .empty
    /// `int32_data` as Int32 bytes (also holds float16/bfloat16/int8/… widened).
    public var int32Data: ByteBuffer = .empty
    public var stringData: [ByteBuffer] = []
    /// `int64_data` as Int64 bytes.
    public var int64Data: ByteBuffer = .empty
    public var name: String?
    public var docString: String?
    public var rawData: ByteBuffer?
    public var externalData: [StringPair] = []
    /// The raw `data_location` field; `nil` when absent. See ``location``.
    public var dataLocation: Int32?
    /// `double_data` as Float64 bytes.
    public var doubleData: ByteBuffer = .empty
    /// `uint64_data` as UInt64 bytes.
    public var uint64Data: ByteBuffer = .empty
    public var metadataProps: [StringPair] = []
    public var unknownFields = UnknownFields()

    /// For an external tensor: how to get its bytes (set by the reader, or by
    /// a pass that replaced the data). Not part of the message.
    public var externalBytes: ExternalBytes?

    public init(name: String?, elementType: DataType, dims: [Int64]) {
        self.name = name
        self.dataType = elementType.rawValue
        self.dims = dims
    }

    /// Element type (`.undefined` when the field is absent).
    public var elementType: DataType { DataType(rawValue: dataType ?? 0) }

    /// Where the data is: inline in the message or in an external file.
    public var location: Location { dataLocation == 1 ? .external : .inline }

    /// Product of `dims`, or nil if a dimension is negative or it overflows.
    public var elementCount: Int? {
        var count = 1
        for d in dims {
            guard d >= 0, d <= Int64(Int.max) else { return nil }
            let (p, o) = count.multipliedReportingOverflow(by: Int(d))
            if o { return nil }
            count = p
        }
        return count
    }

    public static func == (lhs: Tensor, rhs: Tensor) -> Bool {
        lhs.dims == rhs.dims && lhs.dataType == rhs.dataType && lhs.segment == rhs.segment
            && lhs.floatData == rhs.floatData && lhs.int32Data == rhs.int32Data
            && lhs.stringData == rhs.stringData && lhs.int64Data == rhs.int64Data
            && lhs.name == rhs.name && lhs.docString == rhs.docString && lhs.rawData == rhs.rawData
            && lhs.externalData == rhs.externalData && lhs.dataLocation == rhs.dataLocation
            && lhs.doubleData == rhs.doubleData && lhs.uint64Data == rhs.uint64Data
            && lhs.metadataProps == rhs.metadataProps && lhs.unknownFields == rhs.unknownFields
    }
}

/// The bytes of an external tensor, loaded on first use.
///
/// The reader gives each external tensor one of these that maps the data
/// file lazily; a pass that replaces an external tensor's data gives it one
/// that holds the new bytes, so that the writer can keep the tensor external.
public struct ExternalBytes: @unchecked Sendable {
    /// What the bytes are, for error messages ("weights.bin at offset 4096").
    public let description: String
    private let loader: () throws -> ByteBuffer

    public init(description: String, loader: @escaping () throws -> ByteBuffer) {
        self.description = description
        self.loader = loader
    }

    /// Bytes already in memory.
    public init(memory: ByteBuffer) {
        self.description = "in memory"
        self.loader = { memory }
    }

    /// Maps or fetches the bytes. Errors say which file and why.
    public func load() throws -> ByteBuffer { try loader() }
}

/// `SparseTensorProto`: non-zero values and their indices.
public struct SparseTensor: Equatable {
    public var values: Tensor?
    public var indices: Tensor?
    public var dims: [Int64] = []
    public var unknownFields = UnknownFields()
    public init(values: Tensor?, indices: Tensor?, dims: [Int64]) {
        self.values = values; self.indices = indices; self.dims = dims
    }
}
