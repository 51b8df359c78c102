/// The element type of a tensor, as the ONNX `TensorProto.DataType` number.
///
/// A struct rather than an enum so that a type newer than bnfold (or a
/// nonsense number in a hostile file) is carried through unchanged instead of
/// being lost or crashing the reader.
public struct DataType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let undefined = DataType(rawValue: 0)
    public static let float = DataType(rawValue: 1)
    public static let uint8 = DataType(rawValue: 2)
    public static let int8 = DataType(rawValue: 3)
    public static let uint16 = DataType(rawValue: 4)
    public static let int16 = DataType(rawValue: 5)
    public static let int32 = DataType(rawValue: 6)
    public static let int64 = DataType(rawValue: 7)
    public static let string = DataType(rawValue: 8)
    public static let bool = DataType(rawValue: 9)
    public static let float16 = DataType(rawValue: 10)
    public static let double = DataType(rawValue: 11)
    public static let uint32 = DataType(rawValue: 12)
    public static let uint64 = DataType(rawValue: 13)
    public static let complex64 = DataType(rawValue: 14)
    public static let complex128 = DataType(rawValue: 15)
    public static let bfloat16 = DataType(rawValue: 16)
    public static let float8e4m3fn = DataType(rawValue: 17)
    public static let float8e4m3fnuz = DataType(rawValue: 18)
    public static let float8e5m2 = DataType(rawValue: 19)
    public static let float8e5m2fnuz = DataType(rawValue: 20)
    public static let uint4 = DataType(rawValue: 21)
    public static let int4 = DataType(rawValue: 22)
    public static let float4e2m1 = DataType(rawValue: 23)
    public static let float8e8m0 = DataType(rawValue: 24)
    public static let uint2 = DataType(rawValue: 25)
    public static let int2 = DataType(rawValue: 26)
    public static let float6e2m3 = DataType(rawValue: 27)
    public static let float6e3m2 = DataType(rawValue: 28)

    /// Bits one element occupies in `raw_data`; nil for strings and unknown types.
    public var bitWidth: Int? {
        switch rawValue {
        case 1, 6, 12: return 32
        case 2, 3, 9, 17, 18, 19, 20, 24: return 8
        case 4, 5, 10, 16: return 16
        case 7, 11, 13, 14: return 64
        case 15: return 128
        case 21, 22, 23: return 4
        case 25, 26: return 2
        case 27, 28: return 6
        default: return nil
        }
    }

    /// Bytes `count` elements occupy in `raw_data` (sub-byte types are packed
    /// and rounded up to whole bytes); nil when the width is unknown or the
    /// size does not fit in an Int.
    public func byteCount(elements count: Int) -> Int? {
        guard let bits = bitWidth, count >= 0 else { return nil }
        let (product, overflow) = count.multipliedReportingOverflow(by: bits)
        return overflow ? nil : product / 8 + (product % 8 == 0 ? 0 : 1)
    }

    /// The floating-point types bnfold can fold: arithmetic is done in Double
    /// and rounded once into one of these.
    public var isFoldableFloat: Bool { self == .float || self == .double || self == .float16 || self == .bfloat16 }

    public var name: String {
        switch rawValue {
        case 0: "undefined"; case 1: "float"; case 2: "uint8"; case 3: "int8"; case 4: "uint16"
        case 5: "int16"; case 6: "int32"; case 7: "int64"; case 8: "string"; case 9: "bool"
        case 10: "float16"; case 11: "double"; case 12: "uint32"; case 13: "uint64"
        case 14: "complex64"; case 15: "complex128"; case 16: "bfloat16"
        case 17: "float8e4m3fn"; case 18: "float8e4m3fnuz"; case 19: "float8e5m2"; case 20: "float8e5m2fnuz"
        case 21: "uint4"; case 22: "int4"; case 23: "float4e2m1"; case 24: "float8e8m0"
        case 25: "uint2"; case 26: "int2"; case 27: "float6e2m3"; case 28: "float6e3m2"
        default: "type#\(rawValue)"
        }
    }
    public var description: String { name }
}
