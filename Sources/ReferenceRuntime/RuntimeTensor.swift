import ONNXGraph

/// A dense row-major array with a shape and an ONNX element type: the values
/// the reference runtime computes with.
///
/// Storage is chosen by element type:
/// - `float`, `float16`, `bfloat16`: `Float` (half types are widened exactly
///   on load; every kernel result is rounded back to the declared type, so a
///   float16 graph sees float16 values between operators, as a float16
///   runtime would);
/// - `double`: `Double`;
/// - `int64`, `int32`, `int16`, `int8`, `uint8`, `uint16`, `uint32`, `bool`:
///   `Int64` (shape arithmetic, indices, masks).
public struct RuntimeTensor: Equatable, Sendable, CustomStringConvertible {
    public enum Storage: Equatable, Sendable {
        case float([Float])
        case double([Double])
        case int([Int64])

        public var count: Int {
            switch self {
            case .float(let v): v.count
            case .double(let v): v.count
            case .int(let v): v.count
            }
        }

        /// Elements at `indices`; a negative index gives `fill` (pads).
        func gathered(_ indices: [Int], fill: Double = 0) -> Storage {
            switch self {
            case .float(let v): let f = Float(fill); return .float(indices.map { $0 < 0 ? f : v[$0] })
            case .double(let v): return .double(indices.map { $0 < 0 ? fill : v[$0] })
            case .int(let v): let f = Int64(fill); return .int(indices.map { $0 < 0 ? f : v[$0] })
            }
        }
    }

    public var shape: [Int]
    public var elementType: DataType
    public var storage: Storage

    /// Number of elements (1 for a scalar).
    public var count: Int { shape.reduce(1, *) }
    public var rank: Int { shape.count }

    public init(shape: [Int], elementType: DataType, storage: Storage) {
        self.shape = shape
        self.elementType = elementType
        self.storage = storage
    }

    /// A float32 (or float16/bfloat16, whose values are then rounded) tensor.
    public init(shape: [Int], floats: [Float], elementType: DataType = .float) {
        self.init(shape: shape, elementType: elementType, storage: .float(floats))
        roundToElementType()
    }

    public init(shape: [Int], doubles: [Double]) {
        self.init(shape: shape, elementType: .double, storage: .double(doubles))
    }

    public init(shape: [Int], ints: [Int64], elementType: DataType = .int64) {
        self.init(shape: shape, elementType: elementType, storage: .int(ints))
    }

    /// A tensor of any supported element type made from Double values
    /// (rounded into the type; integers truncated toward zero).
    public init(shape: [Int], values: [Double], elementType: DataType) throws {
        switch RuntimeTensor.storageKind(of: elementType) {
        case .float?: self.init(shape: shape, floats: values.map { Float($0) }, elementType: elementType)
        case .double?: self.init(shape: shape, doubles: values)
        case .int?:
            self.init(shape: shape, ints: values.map(saturatingInt64), elementType: elementType)
            wrapToElementType()
        case nil: throw KernelError("element type \(elementType) is not supported by the reference runtime")
        }
    }

    enum StorageKind { case float, double, int }

    static func storageKind(of type: DataType) -> StorageKind? {
        switch type {
        case .float, .float16, .bfloat16: .float
        case .double: .double
        case .int64, .int32, .int16, .int8, .uint8, .uint16, .uint32, .bool: .int
        default: nil
        }
    }

    public static func isSupported(_ type: DataType) -> Bool { storageKind(of: type) != nil }

    /// The values widened to Double (exact for floats; integers up to 2^53).
    public func doubles() -> [Double] {
        switch storage {
        case .float(let v): v.map(Double.init)
        case .double(let v): v
        case .int(let v): v.map(Double.init)
        }
    }

    /// The same values as a float64 tensor when the type is float, float16
    /// or bfloat16 (exact); anything else unchanged.
    public func widenedToDouble() -> RuntimeTensor {
        guard case .float(let v) = storage else { return self }
        return RuntimeTensor(shape: shape, elementType: .double, storage: .double(v.map(Double.init)))
    }

    /// Moves the storage out (leaving an empty one), so that the caller may
    /// hold the only reference to the buffer and write into it.
    mutating func takeStorage() -> Storage {
        let s = storage
        storage = .int([])
        return s
    }

    /// The values as integers (floats truncated toward zero).
    public func int64s() -> [Int64] {
        switch storage {
        case .int(let v): return v
        case .float(let v): return v.map { saturatingInt64(Double($0)) }
        case .double(let v): return v.map(saturatingInt64)
        }
    }

    /// Same values, new shape (the element count must match; checked by callers).
    func reshaped(_ newShape: [Int]) -> RuntimeTensor {
        RuntimeTensor(shape: newShape, elementType: elementType, storage: storage)
    }

    /// Rounds float storage to float16/bfloat16 when that is the declared type.
    mutating func roundToElementType() {
        guard case .float(var v) = storage else { return }
        if elementType == .float16 {
            for i in v.indices { v[i] = roundToHalf(v[i]) }
        } else if elementType == .bfloat16 {
            for i in v.indices { v[i] = roundToBFloat16(v[i]) }
        } else {
            return
        }
        storage = .float(v)
    }

    /// Wraps integer storage into narrower integer types (two's complement),
    /// and bool to 0/1, as a cast into those types does.
    mutating func wrapToElementType() {
        guard case .int(var v) = storage else { return }
        let wrap: ((Int64) -> Int64)?
        switch elementType {
        case .int32: wrap = { Int64(Int32(truncatingIfNeeded: $0)) }
        case .int16: wrap = { Int64(Int16(truncatingIfNeeded: $0)) }
        case .int8: wrap = { Int64(Int8(truncatingIfNeeded: $0)) }
        case .uint8: wrap = { Int64(UInt8(truncatingIfNeeded: $0)) }
        case .uint16: wrap = { Int64(UInt16(truncatingIfNeeded: $0)) }
        case .uint32: wrap = { Int64(UInt32(truncatingIfNeeded: $0)) }
        case .bool: wrap = { $0 != 0 ? 1 : 0 }
        default: wrap = nil
        }
        guard let wrap else { return }
        for i in v.indices { v[i] = wrap(v[i]) }
        storage = .int(v)
    }

    public var description: String { "RuntimeTensor(\(elementType), \(shape))" }
}

// MARK: - Conversion from and to the IR

extension RuntimeTensor {
    /// Loads an IR tensor (initializer, Constant value, or a caller's input).
    public init(_ tensor: Tensor) throws {
        try self.init(tensor, releasingSource: false)
    }

    /// Loads an IR tensor; with `releasingSource`, bytes that live in a
    /// mapped file are handed back to the kernel once copied (they are clean
    /// file pages and are re-read if touched again), so a loaded model does
    /// not count twice against memory.
    init(_ tensor: Tensor, releasingSource: Bool) throws {
        defer {
            if releasingSource, let bytes = tensor.rawData, let storage = bytes.owner as? ReclaimableStorage,
               let base = bytes.baseAddress {
                storage.reclaim(base: base, offset: 0, length: bytes.count)
            }
        }
        let type = tensor.elementType
        guard let kind = RuntimeTensor.storageKind(of: type) else {
            throw KernelError("tensor '\(tensor.name ?? "")' has element type \(type), which the reference runtime does not support")
        }
        var shape: [Int] = []
        for d in tensor.dims {
            guard d >= 0, d <= Int64(Int32.max) else {
                throw KernelError("tensor '\(tensor.name ?? "")' has an invalid dimension \(d)")
            }
            shape.append(Int(d))
        }
        guard let count = tensor.elementCount else {
            throw KernelError("tensor '\(tensor.name ?? "")' has an invalid shape \(tensor.dims)")
        }
        switch kind {
        case .float:
            if type == .float {
                let bytes = try tensor.dataBytes()
                guard bytes.count == count * 4 else {
                    throw KernelError("tensor '\(tensor.name ?? "")' holds \(bytes.count) bytes for shape \(tensor.dims)")
                }
                // Little-endian host (x86-64, arm64): the bytes are the floats.
                // A folded (produced) tensor computes straight into the array
                // instead of materialising — and keeping — a copy of its bytes.
                let values = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                    let destination = UnsafeMutableRawBufferPointer(buffer)
                    if count > 0 {
                        if let producer = bytes.producer {
                            producer.produce(offset: 0, into: destination)
                        } else {
                            bytes.withUnsafeBytes { destination.copyMemory(from: $0) }
                        }
                    }
                    initialized = count
                }
                self.init(shape: shape, elementType: type, storage: .float(values))
            } else {
                // float16/bfloat16 → Double is exact (ONNXGraph's conversions), and so is Double → Float.
                self.init(shape: shape, elementType: type, storage: .float(try tensor.doubles().map { Float($0) }))
            }
        case .double:
            self.init(shape: shape, elementType: type, storage: .double(try tensor.doubles()))
        case .int:
            let values = type == .int64 ? try tensor.int64s() : try tensor.doubles().map(saturatingInt64)
            guard values.count == count else {
                throw KernelError("tensor '\(tensor.name ?? "")' holds \(values.count) values for shape \(tensor.dims)")
            }
            self.init(shape: shape, elementType: type, storage: .int(values))
        }
    }

    /// An IR tensor with these values in `raw_data`. Float storage of a
    /// float16/bfloat16 tensor is rounded once into that type (Float → Double
    /// is exact, then ONNXGraph's encoder rounds to nearest even).
    public func tensor(name: String? = nil) throws -> Tensor {
        let dims = shape.map(Int64.init)
        switch storage {
        case .float(let v) where elementType == .float && UInt32(1).littleEndian == 1:
            // Float storage is float32 raw data as it is (a little-endian host).
            var t = Tensor(name: name, elementType: .float, dims: dims)
            t.rawData = v.withUnsafeBytes { ByteBuffer(Array($0)) }
            return t
        case .float(let v):
            guard let t = Tensor(name: name, elementType: elementType, dims: dims, values: v.map(Double.init)) else {
                throw KernelError("cannot encode \(elementType)")
            }
            return t
        case .double(let v):
            guard let t = Tensor(name: name, elementType: .double, dims: dims, values: v) else {
                throw KernelError("cannot encode double")
            }
            return t
        case .int(let v):
            let width: Int
            switch elementType {
            case .int64: width = 8
            case .int32, .uint32: width = 4
            case .int16, .uint16: width = 2
            case .int8, .uint8, .bool: width = 1
            default: throw KernelError("cannot encode \(elementType)")
            }
            var t = Tensor(name: name, elementType: elementType, dims: dims)
            t.rawData = ByteBuffer.make(count: v.count * width) { dst in
                for (i, x) in v.enumerated() {
                    withUnsafeBytes(of: x.littleEndian) { src in
                        for b in 0..<width { dst[i * width + b] = src[b] }
                    }
                }
            }
            return t
        }
    }
}

// MARK: - Safe sizes and conversions (shapes can come from hostile files)

/// The most elements one tensor may have in this runtime (2^31 − 1, so
/// that every BLAS dimension fits its 32-bit integers; 8 GiB of float32). Shapes computed from data (Reshape, Expand, ConstantOfShape,
/// Pad, Resize, pools, convolutions) are checked against it before anything
/// is allocated, and products are computed without overflow.
let maxElements = Int(Int32.max)

/// The element count of `shape`, or an error if a dimension is negative or
/// the count exceeds ``maxElements``.
func checkedCount(_ shape: [Int]) throws -> Int {
    var count = 1
    for d in shape {
        guard d >= 0 else { throw KernelError("negative dimension in shape \(shape)") }
        let (p, overflow) = count.multipliedReportingOverflow(by: d)
        guard !overflow, p <= maxElements else {
            throw KernelError("shape \(shape) has more than \(maxElements) elements, the reference runtime's limit")
        }
        count = p
    }
    return count
}

/// Double → Int64 toward zero, saturating at the Int64 range; NaN gives 0.
func saturatingInt64(_ d: Double) -> Int64 {
    if d.isNaN { return 0 }
    if d >= 0x1p63 { return .max }
    if d <= -0x1p63 { return .min }
    return Int64(d)
}

// MARK: - Rounding to the half-precision types (from Float: one rounding)

/// Float → float16 → Float, nearest even (overflow to infinity).
@inline(__always)
func roundToHalf(_ x: Float) -> Float { Float(Float16(x)) }

/// Float → bfloat16 → Float, nearest even on the top 16 bits.
@inline(__always)
func roundToBFloat16(_ x: Float) -> Float {
    if x.isNaN { return x }
    let bits = x.bitPattern
    let rounded = (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000
    return Float(bitPattern: rounded)
}
