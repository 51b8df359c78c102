/// A read-only run of bytes that may live in memory bnfold does not own.
///
/// Model weights are most of a model file. To keep to one copy of every
/// tensor's bytes, the IR does not convert them into Swift arrays: a
/// `ByteBuffer` points at the bytes where they already are — in the message
/// tree the protobuf reader unpacked, in a memory-mapped external-data file,
/// or in memory that a pass allocated — and holds a reference to whatever
/// keeps that memory alive (`owner`). Copying a `ByteBuffer` copies the
/// pointer, never the bytes.
public struct ByteBuffer: @unchecked Sendable {
    /// Start of the bytes; `nil` only when `count` is 0.
    public let baseAddress: UnsafeRawPointer?
    /// Number of bytes.
    public let count: Int
    /// Keeps the memory at `baseAddress` valid for as long as this value lives.
    public let owner: AnyObject?

    /// Wraps memory that `owner` keeps alive. The caller promises that the
    /// memory is not modified while any copy of this buffer exists.
    public init(borrowing baseAddress: UnsafeRawPointer?, count: Int, owner: AnyObject?) {
        self.baseAddress = count > 0 ? baseAddress : nil
        self.count = count
        self.owner = owner
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

    /// Calls `body` with a view of the bytes.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withExtendedLifetime(owner) {
            try body(UnsafeRawBufferPointer(start: baseAddress, count: count))
        }
    }

    /// The bytes as an array (a copy; for small data and tests).
    public var array: [UInt8] { withUnsafeBytes { Array($0) } }

    /// A sub-range of the bytes sharing the same owner.
    public func slice(offset: Int, count: Int) -> ByteBuffer {
        precondition(offset >= 0 && count >= 0 && offset + count <= self.count, "slice out of range")
        return ByteBuffer(borrowing: baseAddress.map { $0 + offset }, count: count, owner: owner)
    }
}

extension ByteBuffer: Equatable {
    /// Byte-wise equality (not identity).
    public static func == (lhs: ByteBuffer, rhs: ByteBuffer) -> Bool {
        guard lhs.count == rhs.count else { return false }
        if lhs.count == 0 || lhs.baseAddress == rhs.baseAddress { return true }
        return lhs.withUnsafeBytes { a in rhs.withUnsafeBytes { b in memcmp(a.baseAddress!, b.baseAddress!, a.count) == 0 } }
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
