import ONNXGraph

/// Checks that a tensor holds as much data as its shape says, before any
/// pass or writer trusts it. Sizes are compared without reading the data,
/// so a small file claiming a huge tensor is rejected without allocating.
enum TensorValidation {
    static func check(_ tensor: Tensor, file: String) throws {
        func fail(_ problem: String) -> ModelFileError {
            ModelFileError(file: file, "tensor '\(tensor.name ?? "<unnamed>")' \(problem)")
        }
        // A segment is one slice of a larger tensor: its data is not the whole shape.
        if tensor.segment != nil { return }
        guard let count = tensor.elementCount else {
            throw fail("has invalid dimensions \(tensor.dims)")
        }
        let type = tensor.elementType
        if tensor.location == .external {
            // Bytes in two places would make "the" data ambiguous (and an
            // attacker's offset would decide which one a tool writes back).
            let typedBytes = tensor.floatData.count + tensor.int32Data.count + tensor.int64Data.count
                + tensor.doubleData.count + tensor.uint64Data.count
            if tensor.rawData != nil || typedBytes > 0 {
                throw fail("is marked as external data but also holds data in the model file")
            }
            return  // the rest is checked by ExternalDataResolver
        }
        if let raw = tensor.rawData {
            if type.bitWidth != nil && type.byteCount(elements: count) == nil {
                throw fail("has dimensions \(tensor.dims) whose size in bytes does not fit in memory")
            }
            if let expected = type.byteCount(elements: count), raw.count != expected {
                throw fail("has \(raw.count) bytes of raw_data but its shape \(tensor.dims) of \(type) needs \(expected)")
            }
            return
        }
        let typedCount: Int?
        switch type {
        case .float: typedCount = tensor.floatData.count / 4
        case .complex64: typedCount = tensor.floatData.count / 8
        case .double: typedCount = tensor.doubleData.count / 8
        case .complex128: typedCount = tensor.doubleData.count / 16
        case .int64: typedCount = tensor.int64Data.count / 8
        case .uint64, .uint32: typedCount = tensor.uint64Data.count / 8
        case .string: typedCount = tensor.stringData.count
        case .int32, .int16, .uint16, .int8, .uint8, .bool, .float16, .bfloat16,
             .float8e4m3fn, .float8e4m3fnuz, .float8e5m2, .float8e5m2fnuz, .float8e8m0:
            typedCount = tensor.int32Data.count / 4
        case .int4, .uint4, .float4e2m1:
            // Two 4-bit elements per int32 entry.
            typedCount = nil
            let entries = tensor.int32Data.count / 4
            let needed = count / 2 + count % 2
            if entries != needed {
                throw fail("has \(entries) int32_data entries but its shape \(tensor.dims) of \(type) needs \(needed)")
            }
        default:
            typedCount = nil  // unknown type: carried through as it is
        }
        if let typedCount, typedCount != count {
            throw fail("has \(typedCount) elements of data but its shape \(tensor.dims) needs \(count)")
        }
    }
}
