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

    // Inline: what every tensor has (name, type, shape, raw_data). Every
    // other field is rare — typed data arrays, segment, doc string, external
    // data, metadata, unknown fields — and lives in one immutable box
    // (``Rare``), absent while they all hold their defaults. Inline, those
    // fields made a Tensor 304 bytes: a model of 1,000,000 tiny initializers
    // spent 304 MB on them, 8x its file. The boxed fields are computed
    // properties that read and write like stored ones (a write stores a new
    // box, so value semantics are unchanged), and a box is dropped as soon as
    // every field in it is back at its default, so `==` and the size bound
    // hold whatever order fields were set in.
    public var name: String?
    /// The raw `data_type` field; `nil` when absent. See ``elementType``.
    public var dataType: Int32?
    public var dims: [Int64]
    public var rawData: ByteBuffer?
    private var rare: Boxed<Rare>?

    /// The fields of a tensor that are usually absent (see above).
    struct Rare: Equatable {
        var segment: Segment?
        var floatData: ByteBuffer = .empty
        var int32Data: ByteBuffer = .empty
        var stringData: [ByteBuffer] = []
        var int64Data: ByteBuffer = .empty
        var docString: String?
        var externalData: [StringPair] = []
        var dataLocation: Int32?
        var doubleData: ByteBuffer = .empty
        var uint64Data: ByteBuffer = .empty
        var metadataProps: [StringPair] = []
        var unknownFields = UnknownFields()
        /// Not part of the message, so not compared.
        var externalBytes: ExternalBytes?

        static let none = Rare()

        var isEmpty: Bool {
            segment == nil && floatData.count == 0 && int32Data.count == 0 && stringData.isEmpty
                && int64Data.count == 0 && docString == nil && externalData.isEmpty && dataLocation == nil
                && doubleData.count == 0 && uint64Data.count == 0 && metadataProps.isEmpty && unknownFields.isEmpty
                && externalBytes == nil
        }

        static func == (a: Rare, b: Rare) -> Bool {
            a.segment == b.segment && a.floatData == b.floatData && a.int32Data == b.int32Data
                && a.stringData == b.stringData && a.int64Data == b.int64Data && a.docString == b.docString
                && a.externalData == b.externalData && a.dataLocation == b.dataLocation
                && a.doubleData == b.doubleData && a.uint64Data == b.uint64Data
                && a.metadataProps == b.metadataProps && a.unknownFields == b.unknownFields
        }
    }

    // Getters read one field of the box (a key path or a copy of the whole
    // `Rare` would retain and release every field in it: a third of the
    // time of reading a million tiny tensors).
    private mutating func setRare<T>(_ key: WritableKeyPath<Rare, T>, _ newValue: T, isDefault: Bool) {
        if rare == nil && isDefault { return }  // the common case: nothing to store
        var r = rare?.value ?? Rare()
        r[keyPath: key] = newValue
        rare = r.isEmpty ? nil : Boxed(r)
    }

    /// Whether any of the rarely set fields (everything but name, data type,
    /// dims and raw_data) is set: then the tensor holds one extra allocation.
    public var hasRareFields: Bool { rare != nil }

    public var segment: Segment? {
        get { rare?.value.segment } set { setRare(\.segment, newValue, isDefault: newValue == nil) }
    }
    /// `float_data` as little-endian Float32 bytes.
    public var floatData: ByteBuffer {
        get { rare?.value.floatData ?? .empty } set { setRare(\.floatData, newValue, isDefault: newValue.count == 0) }
    }
    /// `int32_data` as Int32 bytes (also holds float16/bfloat16/int8/… widened).
    public var int32Data: ByteBuffer {
        get { rare?.value.int32Data ?? .empty } set { setRare(\.int32Data, newValue, isDefault: newValue.count == 0) }
    }
    public var stringData: [ByteBuffer] {
        get { rare?.value.stringData ?? [] } set { setRare(\.stringData, newValue, isDefault: newValue.isEmpty) }
    }
    /// `int64_data` as Int64 bytes.
    public var int64Data: ByteBuffer {
        get { rare?.value.int64Data ?? .empty } set { setRare(\.int64Data, newValue, isDefault: newValue.count == 0) }
    }
    public var docString: String? {
        get { rare?.value.docString } set { setRare(\.docString, newValue, isDefault: newValue == nil) }
    }
    public var externalData: [StringPair] {
        get { rare?.value.externalData ?? [] } set { setRare(\.externalData, newValue, isDefault: newValue.isEmpty) }
    }
    /// The raw `data_location` field; `nil` when absent. See ``location``.
    public var dataLocation: Int32? {
        get { rare?.value.dataLocation } set { setRare(\.dataLocation, newValue, isDefault: newValue == nil) }
    }
    /// `double_data` as Float64 bytes.
    public var doubleData: ByteBuffer {
        get { rare?.value.doubleData ?? .empty } set { setRare(\.doubleData, newValue, isDefault: newValue.count == 0) }
    }
    /// `uint64_data` as UInt64 bytes.
    public var uint64Data: ByteBuffer {
        get { rare?.value.uint64Data ?? .empty } set { setRare(\.uint64Data, newValue, isDefault: newValue.count == 0) }
    }
    public var metadataProps: [StringPair] {
        get { rare?.value.metadataProps ?? [] } set { setRare(\.metadataProps, newValue, isDefault: newValue.isEmpty) }
    }
    public var unknownFields: UnknownFields {
        get { rare?.value.unknownFields ?? UnknownFields() } set { setRare(\.unknownFields, newValue, isDefault: newValue.isEmpty) }
    }

    /// For an external tensor: how to get its bytes (set by the reader, or by
    /// a pass that replaced the data). Not part of the message.
    public var externalBytes: ExternalBytes? {
        get { rare?.value.externalBytes } set { setRare(\.externalBytes, newValue, isDefault: newValue == nil) }
    }

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
        lhs.name == rhs.name && lhs.dataType == rhs.dataType && lhs.dims == rhs.dims && lhs.rawData == rhs.rawData
            && (lhs.rare === rhs.rare || (lhs.rare?.value ?? .none) == (rhs.rare?.value ?? .none))
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
