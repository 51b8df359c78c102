/// Reading a tensor's numbers and making tensors from numbers.
///
/// Folding arithmetic is done in Double whatever the model's element type,
/// then rounded once into that type: reading widens exactly (every float16,
/// bfloat16 and float value is a Double), and writing rounds to nearest even
/// directly from Double — never through Float first, which would round twice.

/// Why a tensor's data could not be read.
public struct TensorDataError: Error, CustomStringConvertible, Sendable {
    public let tensor: String
    public let problem: String
    public init(tensor: String?, _ problem: String) {
        self.tensor = tensor ?? "<unnamed>"
        self.problem = problem
    }
    public var description: String { "tensor '\(tensor)': \(problem)" }
}

extension Tensor {
    /// The tensor's elements as little-endian bytes in `raw_data` layout,
    /// whichever field holds them. No copy for `raw_data`, external data, and
    /// typed fields whose layout equals the raw layout (float, double, int32,
    /// int64, uint64); a conversion for types that ONNX widens into
    /// `int32_data` (float16, bfloat16, 8/16-bit integers, bool).
    public func dataBytes() throws -> ByteBuffer {
        let type = elementType
        guard let count = elementCount else {
            throw TensorDataError(tensor: name, "has an invalid shape \(dims)")
        }
        guard let expected = type.byteCount(elements: count) else {
            throw TensorDataError(tensor: name, "has element type \(type), which bnfold cannot read as numbers")
        }
        let bytes: ByteBuffer
        if location == .external {
            guard let external = externalBytes else {
                throw TensorDataError(tensor: name, "is stored externally but its data file was not resolved")
            }
            bytes = try external.load()
        } else if let raw = rawData {
            bytes = raw
        } else {
            bytes = try typedFieldBytes(type: type, count: count)
        }
        guard bytes.count == expected else {
            throw TensorDataError(
                tensor: name,
                "holds \(bytes.count) bytes of data but its shape \(dims) of \(type) needs \(expected)")
        }
        return bytes
    }

    private func typedFieldBytes(type: DataType, count: Int) throws -> ByteBuffer {
        switch type {
        case .float, .complex64: return floatData
        case .double, .complex128: return doubleData
        case .int64: return int64Data
        case .uint64, .uint32: 
            if type == .uint64 { return uint64Data }
            // uint32 values are stored widened in uint64_data.
            return try narrow(uint64Data, from: 8, to: 4, count: count)
        case .int32: return int32Data
        case .float16, .bfloat16, .int16, .uint16:
            return try narrow(int32Data, from: 4, to: 2, count: count)
        case .int8, .uint8, .bool, .float8e4m3fn, .float8e4m3fnuz, .float8e5m2, .float8e5m2fnuz, .float8e8m0:
            return try narrow(int32Data, from: 4, to: 1, count: count)
        default:
            if count == 0 { return .empty }
            throw TensorDataError(tensor: name, "stores \(type) in a typed field, which bnfold cannot read")
        }
    }

    /// Takes the low `to` bytes of each `from`-byte little-endian element.
    private func narrow(_ wide: ByteBuffer, from: Int, to: Int, count: Int) throws -> ByteBuffer {
        guard wide.count == count * from else {
            throw TensorDataError(
                tensor: name,
                "holds \(wide.count / from) typed elements but its shape \(dims) needs \(count)")
        }
        return wide.withUnsafeBytes { src in
            ByteBuffer.make(count: count * to) { dst in
                for i in 0..<count {
                    for b in 0..<to { dst[i * to + b] = src[i * from + b] }
                }
            }
        }
    }

    /// The elements widened to Double (exact for every float type bnfold
    /// folds and for integers up to 2^53).
    public func doubles() throws -> [Double] {
        let type = elementType
        let bytes = try dataBytes()
        let count = elementCount ?? 0
        return try bytes.withUnsafeBytes { raw -> [Double] in
            func read<T>(_: T.Type, _ convert: (T) -> Double) -> [Double] {
                (0..<count).map { convert(raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self)) }
            }
            switch type {
            case .float: return read(UInt32.self) { Double(Float(bitPattern: UInt32(littleEndian: $0))) }
            case .double: return read(UInt64.self) { Double(bitPattern: UInt64(littleEndian: $0)) }
            case .float16: return read(UInt16.self) { halfToDouble(UInt16(littleEndian: $0)) }
            case .bfloat16: return read(UInt16.self) { Double(Float(bitPattern: UInt32(UInt16(littleEndian: $0)) << 16)) }
            case .int8: return read(Int8.self) { Double($0) }
            case .uint8, .bool: return read(UInt8.self) { Double($0) }
            case .int16: return read(Int16.self) { Double(Int16(littleEndian: $0)) }
            case .uint16: return read(UInt16.self) { Double(UInt16(littleEndian: $0)) }
            case .int32: return read(Int32.self) { Double(Int32(littleEndian: $0)) }
            case .uint32: return read(UInt32.self) { Double(UInt32(littleEndian: $0)) }
            case .int64: return read(Int64.self) { Double(Int64(littleEndian: $0)) }
            case .uint64: return read(UInt64.self) { Double(UInt64(littleEndian: $0)) }
            default:
                throw TensorDataError(tensor: name, "has element type \(type), which bnfold cannot read as numbers")
            }
        }
    }

    /// The elements as Int64 (for shape-like integer tensors).
    public func int64s() throws -> [Int64] {
        let type = elementType
        if type == .int64 {
            let bytes = try dataBytes()
            return bytes.withUnsafeBytes { raw in
                (0..<(bytes.count / 8)).map { Int64(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self)) }
            }
        }
        return try doubles().map { Int64($0) }
    }

    /// Encodes `values` as `elementType`, each rounded once to nearest even.
    /// Returns nil if the type is not one bnfold can write from numbers.
    public static func encode(_ values: [Double], as elementType: DataType) -> ByteBuffer? {
        func write<T>(_ size: Int, _ convert: @escaping (Double) -> T) -> ByteBuffer {
            ByteBuffer.make(count: values.count * size) { dst in
                for (i, v) in values.enumerated() {
                    dst.storeBytes(of: convert(v), toByteOffset: i * size, as: T.self)
                }
            }
        }
        switch elementType {
        case .float: return write(4) { Float($0).bitPattern.littleEndian }
        case .double: return write(8) { $0.bitPattern.littleEndian }
        case .float16: return write(2) { doubleToHalf($0).littleEndian }
        case .bfloat16: return write(2) { doubleToBFloat16($0).littleEndian }
        default: return nil
        }
    }

    /// A new inline tensor holding `values` rounded into `elementType`.
    /// Returns nil for element types bnfold cannot write from numbers.
    public init?(name: String?, elementType: DataType, dims: [Int64], values: [Double]) {
        guard let bytes = Tensor.encode(values, as: elementType) else { return nil }
        self.init(name: name, elementType: elementType, dims: dims)
        self.rawData = bytes
    }

    /// The same tensor (name, type, shape, doc string, metadata, storage
    /// location) with new values rounded into its element type. An external
    /// tensor stays external: its new bytes are kept in memory until the
    /// writer places them. Nil for element types bnfold cannot encode.
    public func replacingData(with values: [Double]) -> Tensor? {
        guard let bytes = Tensor.encode(values, as: elementType) else { return nil }
        return replacingBytes(with: bytes)
    }
}

extension DataType {
    /// True when `value` rounds (to nearest even) to a finite value of this
    /// floating-point type; false for non-float types.
    public func roundsToFinite(_ value: Double) -> Bool {
        guard value.isFinite else { return false }
        switch self {
        case .double: return true
        case .float: return Float(value).isFinite
        case .float16: return doubleToHalf(value) & 0x7C00 != 0x7C00
        case .bfloat16: return doubleToBFloat16(value) & 0x7F80 != 0x7F80
        default: return false
        }
    }
}

// MARK: - Half-precision conversions

/// IEEE binary16 bits to Double (exact).
func halfToDouble(_ bits: UInt16) -> Double {
    let sign: Double = (bits & 0x8000) != 0 ? -1 : 1
    let exponent = Int((bits >> 10) & 0x1F)
    let fraction = Double(bits & 0x3FF)
    switch exponent {
    case 0: return sign * fraction * 0x1p-24
    case 31: return fraction == 0 ? sign * .infinity : .nan
    default: return sign * (1 + fraction / 1024) * Double(sign: .plus, exponent: exponent - 15, significand: 1)
    }
}

/// Double to IEEE binary16 bits, rounded once to nearest even; overflow
/// gives infinity, as the IEEE rules say.
func doubleToHalf(_ value: Double) -> UInt16 {
    if value.isNaN { return 0x7E00 }
    let signBit: UInt16 = value.sign == .minus ? 0x8000 : 0
    let magnitude = value.magnitude
    // Largest finite half is 65504; halfway to the next (65520) rounds to inf.
    if magnitude >= 65520 { return signBit | 0x7C00 }
    if magnitude < 0x1p-14 {
        // Subnormal range: units of 2^-24, rounded to nearest even.
        let units = (magnitude * 0x1p24).rounded(.toNearestOrEven)
        return signBit | UInt16(units)  // 1024 units carries into the smallest normal
    }
    let exponent = Int(magnitude.exponent)           // -14 ... 15
    let scaled = magnitude * Double(sign: .plus, exponent: 10 - exponent, significand: 1)  // [1024, 2048)
    var mantissa = Int(scaled.rounded(.toNearestOrEven))
    var e = exponent
    if mantissa == 2048 { mantissa = 1024; e += 1 }
    if e > 15 { return signBit | 0x7C00 }
    return signBit | UInt16(e + 15) << 10 | UInt16(mantissa - 1024)
}

/// Double to bfloat16 bits, rounded once to nearest even.
///
/// Rounding Double → Float → bfloat16 with nearest-even twice can be off by
/// one unit. Instead round to Float with round-to-odd (truncate, then set
/// the lowest bit if anything was lost); Float has 16 more bits than
/// bfloat16, so the final nearest-even step is then exact.
func doubleToBFloat16(_ value: Double) -> UInt16 {
    if value.isNaN { return 0x7FC0 }
    var f = Float(value)  // nearest even
    var bits: UInt32
    if Double(f) == value {
        bits = f.bitPattern
    } else {
        if f.isInfinite || Double(f).magnitude > value.magnitude {
            // Step one unit towards zero to get the truncated value.
            f = f.isInfinite ? (value > 0 ? .greatestFiniteMagnitude : -.greatestFiniteMagnitude)
                : (value > 0 ? f.nextDown : f.nextUp)
        }
        bits = f.bitPattern | 1
    }
    let rounding: UInt32 = 0x7FFF + ((bits >> 16) & 1)
    return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
}

/// bfloat16 bits to Double (exact).
func bfloat16ToDouble(_ bits: UInt16) -> Double { Double(Float(bitPattern: UInt32(bits) << 16)) }
