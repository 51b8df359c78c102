import ONNXGraph

/// Checks that a tensor holds as much data as its shape says, before any
/// pass or writer trusts it. Sizes are compared without reading the data,
/// so a small file claiming a huge tensor is rejected without allocating.
///
/// The data must be in exactly one place — `raw_data`, the one typed field
/// that belongs to the element type, or an external file (checked by
/// ``ExternalDataResolver``) — so that "the" data of a tensor is never a
/// matter of which field a reader looks at first. Segments (one slice of a
/// larger tensor) are refused: their data is not the whole shape, and a
/// segment would otherwise switch every length check off.
enum TensorValidation {
    static func check(_ tensor: Tensor, file: String) throws {
        func fail(_ problem: String) -> ModelFileError {
            ModelFileError(file: file, "tensor '\(tensor.name ?? "<unnamed>")' \(problem)")
        }
        if tensor.segment != nil { throw segmentRefusal(tensor, file: file) }
        guard let count = tensor.elementCount else {
            throw fail("has invalid dimensions \(tensor.dims)")
        }
        let type = tensor.elementType
        let fields = fieldsHoldingData(tensor)
        if tensor.location == .external {
            // Bytes in two places would make "the" data ambiguous (and an
            // attacker's offset would decide which one a tool writes back).
            if !fields.isEmpty {
                throw fail("is marked as external data but also holds data in the model file (\(fields.joined(separator: ", ")))")
            }
            return  // the rest is checked by ExternalDataResolver
        }
        if fields.count > 1 {
            throw fail("holds data in more than one field (\(fields.joined(separator: ", "))); only one may hold it")
        }
        if let raw = tensor.rawData {
            if type == .string {
                throw fail("is a string tensor with raw_data; strings are stored in string_data")
            }
            if type.bitWidth != nil && type.byteCount(elements: count) == nil {
                throw fail("has dimensions \(tensor.dims) whose size in bytes does not fit in memory")
            }
            if let expected = type.byteCount(elements: count), raw.count != expected {
                throw fail("has \(raw.count) bytes of raw_data but its shape \(tensor.dims) of \(type) needs \(expected)")
            }
            return
        }
        guard let field = typedField(of: type) else {
            if type.bitWidth != nil && count > 0 {
                // 2- and 6-bit types: known width, no agreed packing in the typed fields.
                throw fail("of \(type) must keep its \(count) elements in raw_data (bnfold does not read \(type) from typed fields)")
            }
            return  // unknown type: carried through as it is
        }
        if let held = fields.first, held != field {
            throw fail("holds \(held) but \(type) elements belong in \(field)")
        }
        let typedCount: Int
        switch type {
        case .float: typedCount = tensor.floatData.count / 4
        case .complex64: typedCount = tensor.floatData.count / 8
        case .double: typedCount = tensor.doubleData.count / 8
        case .complex128: typedCount = tensor.doubleData.count / 16
        case .int64: typedCount = tensor.int64Data.count / 8
        case .uint64, .uint32: typedCount = tensor.uint64Data.count / 8
        case .string: typedCount = tensor.stringData.count
        case .int4, .uint4, .float4e2m1:
            // Two 4-bit elements per int32 entry.
            let entries = tensor.int32Data.count / 4
            let needed = count / 2 + count % 2
            if entries != needed {
                throw fail("has \(entries) int32_data entries but its shape \(tensor.dims) of \(type) needs \(needed)")
            }
            return
        default:
            typedCount = tensor.int32Data.count / 4
        }
        // Complex types store two numbers per element: an odd count is short too.
        let exact = type == .complex64 ? tensor.floatData.count % 8 == 0
            : type == .complex128 ? tensor.doubleData.count % 16 == 0 : true
        if typedCount != count || !exact {
            throw fail("has \(typedCount) elements of data but its shape \(tensor.dims) needs \(count)")
        }
    }

    /// The error for a tensor with a `segment` field.
    static func segmentRefusal(_ tensor: Tensor, file: String) -> ModelFileError {
        let range = "\(tensor.segment?.begin.map(String.init) ?? "?")..\(tensor.segment?.end.map(String.init) ?? "?")"
        return ModelFileError(file: file, "tensor '\(tensor.name ?? "<unnamed>")' is a segment (\(range)); segmented tensors are not supported")
    }

    /// The typed field ONNX keeps elements of `type` in (when not in
    /// raw_data); nil for types without one.
    static func typedField(of type: DataType) -> String? {
        switch type {
        case .float, .complex64: "float_data"
        case .double, .complex128: "double_data"
        case .int64: "int64_data"
        case .uint64, .uint32: "uint64_data"
        case .string: "string_data"
        case .int32, .int16, .uint16, .int8, .uint8, .bool, .float16, .bfloat16,
             .float8e4m3fn, .float8e4m3fnuz, .float8e5m2, .float8e5m2fnuz, .float8e8m0,
             .int4, .uint4, .float4e2m1:
            "int32_data"
        default: nil
        }
    }

    /// Names of the fields of `tensor` that hold data (raw_data counts when
    /// present, even empty; a typed field when it has an entry).
    static func fieldsHoldingData(_ tensor: Tensor) -> [String] {
        var fields: [String] = []
        if tensor.rawData != nil { fields.append("raw_data") }
        if tensor.floatData.count > 0 { fields.append("float_data") }
        if tensor.int32Data.count > 0 { fields.append("int32_data") }
        if !tensor.stringData.isEmpty { fields.append("string_data") }
        if tensor.int64Data.count > 0 { fields.append("int64_data") }
        if tensor.doubleData.count > 0 { fields.append("double_data") }
        if tensor.uint64Data.count > 0 { fields.append("uint64_data") }
        return fields
    }
}
