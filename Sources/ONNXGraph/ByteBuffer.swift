import Synchronization
/// A read-only run of bytes that may live in memory bnfold does not own.
///
/// Model weights are most of a model file. To keep to one copy of every
/// tensor's bytes, the IR does not convert them into Swift arrays: a
/// `ByteBuffer` points at the bytes where they already are — in the mapped
/// model file, in the message tree protobuf-c unpacked, in a mapped
/// external-data file, or in memory that a pass allocated — and holds a
/// reference to whatever keeps that memory alive (`owner`). Copying a
/// `ByteBuffer` copies the pointer, never the bytes.
///
/// A buffer can also be *produced*: computed piece by piece when read (see
/// ``ByteProducer``). A fold of a 150 MB weight then costs no memory until
/// the writer streams it, 1 MiB at a time, straight into the output file.
/// For such a buffer `baseAddress` is nil; ``withUnsafeBytes(_:)`` computes
/// (and keeps) the whole contents on first use.
public struct ByteBuffer: @unchecked Sendable {
    /// Start of the bytes; nil when `count` is 0 or the bytes are produced on demand.
    public let baseAddress: UnsafeRawPointer?
    /// Number of bytes.
    public let count: Int
    /// Keeps the memory at `baseAddress` valid for as long as this value
    /// lives; for produced bytes, the ``ProducedBytes`` that computes them.
    public let owner: AnyObject?

    /// Wraps memory that `owner` keeps alive. The caller promises that the
    /// memory is not modified while any copy of this buffer exists.
    public init(borrowing baseAddress: UnsafeRawPointer?, count: Int, owner: AnyObject?) {
        self.baseAddress = count > 0 ? baseAddress : nil
        self.count = count
        self.owner = owner
    }

    /// Bytes computed by `producer` when they are read.
    public init(producedBy producer: any ByteProducer) {
        self.baseAddress = nil
        self.count = producer.count
        self.owner = ProducedBytes(producer)
    }

    /// Copies `bytes` into new memory owned by the buffer.
    public init<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        let storage = OwnedBytes(count: bytes.count)
        if bytes.count > 0 {
            let target = UnsafeMutableRawBufferPointer(start: storage.pointer, count: bytes.count)
            target.copyBytes(from: bytes)
        }
        self.init(borrowing: storage.pointer, count: bytes.count, owner: storage)
    }

    /// The empty buffer.
    public static let empty = ByteBuffer(borrowing: nil, count: 0, owner: nil)

    /// Allocates `count` bytes, lets `initialize` fill them, and wraps them.
    public static func make(count: Int, _ initialize: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows -> ByteBuffer {
        let storage = OwnedBytes(count: count)
        try initialize(UnsafeMutableRawBufferPointer(start: storage.pointer, count: count))
        return ByteBuffer(borrowing: storage.pointer, count: count, owner: storage)
    }

    /// The producer, if the bytes are computed on demand.
    public var producer: (any ByteProducer)? { (owner as? ProducedBytes)?.producer }

    /// Calls `body` with a view of the bytes (computing produced bytes first).
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        if baseAddress == nil, count > 0, let produced = owner as? ProducedBytes {
            return try produced.materialized.withUnsafeBytes(body)
        }
        return try withExtendedLifetime(owner) {
            try body(UnsafeRawBufferPointer(start: baseAddress, count: count))
        }
    }

    /// The bytes as an array (a copy; for small data and tests).
    public var array: [UInt8] { withUnsafeBytes { Array($0) } }

    /// A sub-range of the bytes sharing the same owner.
    public func slice(offset: Int, count: Int) -> ByteBuffer {
        precondition(offset >= 0 && count >= 0 && offset + count <= self.count, "slice out of range")
        if baseAddress == nil, count > 0, let produced = owner as? ProducedBytes {
            return produced.materialized.slice(offset: offset, count: count)
        }
        return ByteBuffer(borrowing: baseAddress.map { $0 + offset }, count: count, owner: owner)
    }
}

extension ByteBuffer: Equatable {
    /// Byte-wise equality (not identity).
    public static func == (lhs: ByteBuffer, rhs: ByteBuffer) -> Bool {
        guard lhs.count == rhs.count else { return false }
        if lhs.count == 0 || (lhs.baseAddress != nil && lhs.baseAddress == rhs.baseAddress) { return true }
        return lhs.withUnsafeBytes { a in rhs.withUnsafeBytes { b in memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0 } }
    }
}

/// Computes bytes on demand, in pieces: what a lazily folded tensor holds
/// instead of its new data.
public protocol ByteProducer: AnyObject {
    /// Total number of bytes.
    var count: Int { get }
    /// Writes bytes `offset ..< offset + buffer.count` into `buffer`. Pieces
    /// may be asked for in any order and more than once; the answer must
    /// always be the same.
    func produce(offset: Int, into buffer: UnsafeMutableRawBufferPointer)
}

/// The owner of a produced `ByteBuffer`: the producer, and the whole
/// contents once someone needed them in one piece.
public final class ProducedBytes {
    public let producer: any ByteProducer
    /// Behind a lock: verification may read one folded weight from two
    /// threads (a pair check and the whole-model check); the second waits
    /// and shares the first's bytes.
    private let cache = Mutex<ByteBuffer?>(nil)

    init(_ producer: any ByteProducer) { self.producer = producer }

    /// The whole contents, computed on first use and kept.
    public var materialized: ByteBuffer {
        cache.withLock { cache in
            if let cache { return cache }
            let bytes = ByteBuffer.make(count: producer.count) { producer.produce(offset: 0, into: $0) }
            cache = bytes
            return bytes
        }
    }
}

/// Heap memory owned by a `ByteBuffer`, 16-byte aligned so that typed views
/// (Float, Double, Int64) of it are aligned.
///
/// Large buffers (folded weights of big layers) are 2 MiB aligned and asked
/// for transparent huge pages: the kernel then faults and zeroes them 2 MiB
/// at a time instead of 4 KiB, which is most of the cost of filling a new
/// buffer of hundreds of megabytes.
final class OwnedBytes {
    static let hugePageSize = 2 << 20
    let pointer: UnsafeMutableRawPointer

    init(count: Int) {
        if count >= 2 * OwnedBytes.hugePageSize {
            let size = (count + OwnedBytes.hugePageSize - 1) / OwnedBytes.hugePageSize * OwnedBytes.hugePageSize
            if let p = aligned_alloc(OwnedBytes.hugePageSize, size) {
                #if os(Linux)
                madvise(p, size, Int32(MADV_HUGEPAGE))
                #endif
                pointer = p
                return
            }
        }
        pointer = UnsafeMutableRawPointer(malloc(max(count, 1))!)  // malloc is 16-byte aligned on 64-bit
    }

    deinit { free(pointer) }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
