import ONNXGraph
import ReferenceRuntime

/// Reads NumPy `.npy` files (format versions 1–3): little-endian or
/// byte-sized element types, C order. Anything else is an error naming the
/// problem, never a guess.
public enum NumPyFile {
    /// Element types by `descr` (without the byte-order character).
    static let types: [String: (DataType, Int)] = [
        "f4": (.float, 4), "f8": (.double, 8), "f2": (.float16, 2),
        "i8": (.int64, 8), "i4": (.int32, 4), "i2": (.int16, 2), "i1": (.int8, 1),
        "u1": (.uint8, 1), "u2": (.uint16, 2), "u4": (.uint32, 4), "b1": (.bool, 1),
    ]

    /// Parses the bytes of a `.npy` file.
    public static func parse(_ bytes: [UInt8]) throws -> RuntimeTensor {
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // \x93NUMPY
        guard bytes.count >= 10, Array(bytes[0..<6]) == magic else {
            throw EquivalenceError("is not a NumPy .npy file (no \\x93NUMPY magic)")
        }
        let major = bytes[6]
        let headerLength: Int, headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else { throw EquivalenceError("is truncated in its .npy header") }
            headerLength = (0..<4).reduce(0) { $0 | Int(bytes[8 + $1]) << (8 * $1) }
            headerStart = 12
        default:
            throw EquivalenceError("has .npy format version \(major), which is not supported (1–3 are)")
        }
        guard headerLength <= bytes.count - headerStart else { throw EquivalenceError("is truncated in its .npy header") }
        let header = String(decoding: bytes[headerStart..<(headerStart + headerLength)], as: UTF8.self)
        let dataStart = headerStart + headerLength

        guard let descr = field("descr", in: header).flatMap(quoted) else {
            throw EquivalenceError("has no 'descr' in its .npy header")
        }
        guard let order = field("fortran_order", in: header) else {
            throw EquivalenceError("has no 'fortran_order' in its .npy header")
        }
        if order.hasPrefix("True") {
            throw EquivalenceError("is in Fortran order; only C-order arrays are supported (save np.ascontiguousarray(x))")
        }
        guard order.hasPrefix("False") else { throw EquivalenceError("has an unreadable 'fortran_order' in its .npy header") }
        guard let shapeText = field("shape", in: header), shapeText.hasPrefix("(") , let close = shapeText.firstIndex(of: ")") else {
            throw EquivalenceError("has no readable 'shape' in its .npy header")
        }
        var shape: [Int] = []
        for part in shapeText[shapeText.index(after: shapeText.startIndex)..<close].split(separator: ",") {
            let trimmed = part.strippingNumPySpace()
            if trimmed.isEmpty { continue }
            guard let d = Int(trimmed), d >= 0, d <= Int(Int32.max) else {
                throw EquivalenceError("has an invalid dimension '\(trimmed)' in its .npy shape")
            }
            shape.append(d)
        }
        guard let order = descr.first, let (type, width) = types[String(descr.dropFirst())] else {
            throw EquivalenceError("has element type '\(descr)', which is not supported")
        }
        if order == ">" && width > 1 {
            throw EquivalenceError("is big-endian ('\(descr)'); only little-endian data is supported (save x.astype(x.dtype.newbyteorder('<')))")
        }
        guard order == "<" || order == "|" || (order == "=" && width == 1) || (order == ">" && width == 1) else {
            throw EquivalenceError("has element type '\(descr)' without a byte order, which is not supported")
        }
        var count = 1
        for d in shape {
            let (p, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow, p <= Int(Int32.max) else { throw EquivalenceError("has shape \(shape), which is too large") }
            count = p
        }
        guard bytes.count - dataStart == count * width else {
            throw EquivalenceError("holds \(bytes.count - dataStart) data bytes, but shape \(shape) of '\(descr)' needs \(count * width)")
        }
        return bytes.withUnsafeBytes { raw -> RuntimeTensor in
            func load<T: FixedWidthInteger>(_: T.Type, _ i: Int) -> T {
                T(littleEndian: raw.loadUnaligned(fromByteOffset: dataStart + i * width, as: T.self))
            }
            switch type {
            case .float:
                return RuntimeTensor(shape: shape, floats: (0..<count).map { Float(bitPattern: load(UInt32.self, $0)) })
            case .double:
                return RuntimeTensor(shape: shape, doubles: (0..<count).map { Double(bitPattern: load(UInt64.self, $0)) })
            case .float16:
                return RuntimeTensor(shape: shape, floats: (0..<count).map { Float(Float16(bitPattern: load(UInt16.self, $0))) }, elementType: .float16)
            default:
                let values: [Int64] = (0..<count).map { i in
                    switch type {
                    case .int64: Int64(load(Int64.self, i))
                    case .int32: Int64(load(Int32.self, i))
                    case .int16: Int64(load(Int16.self, i))
                    case .int8: Int64(load(Int8.self, i))
                    case .uint8: Int64(load(UInt8.self, i))
                    case .uint16: Int64(load(UInt16.self, i))
                    case .uint32: Int64(load(UInt32.self, i))
                    default: load(UInt8.self, i) != 0 ? 1 : 0   // bool
                    }
                }
                return RuntimeTensor(shape: shape, ints: values, elementType: type)
            }
        }
    }

    /// The text after `'key':` in a Python dict literal.
    static func field(_ key: String, in header: String) -> Substring? {
        guard let range = header.range(of: "'\(key)'") else { return nil }
        var rest = header[range.upperBound...].drop { $0 == " " }
        guard rest.first == ":" else { return nil }
        rest = rest.dropFirst().drop { $0 == " " }
        return rest
    }

    /// The contents of a leading '…' string literal.
    static func quoted(_ text: Substring) -> String? {
        guard text.first == "'" else { return nil }
        let body = text.dropFirst()
        guard let end = body.firstIndex(of: "'") else { return nil }
        return String(body[..<end])
    }
}

extension StringProtocol {
    func strippingNumPySpace() -> String {
        let set: Set<Character> = [" ", "\t"]
        return String(self.drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }
}
