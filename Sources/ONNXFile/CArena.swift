#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CONNX
import Foundation
import ONNXGraph

/// Memory for a protobuf-c message tree built from the IR for packing.
///
/// Every struct, string and array is allocated here and freed together when
/// the arena goes. Tensor payloads are not copied: `bytes(_:)` points the C
/// field at the IR's own buffer and keeps its owner alive until the arena is
/// freed, so packing streams weights from wherever they already are.
final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []
    private var keepAlive: [AnyObject] = []
    private var placeholders: [(UnsafeMutableRawPointer, Int)] = []
    /// For a tree that is only measured, never packed: produced bytes get no
    /// placeholder (protobuf-c's size computation reads only their length).
    private let measuring: Bool

    init(measuring: Bool = false) { self.measuring = measuring }

    deinit { reset() }

    /// Frees everything allocated so far (the arena can be used again).
    func reset() {
        for p in allocations { free(p) }
        allocations.removeAll(keepingCapacity: true)
        keepAlive.removeAll(keepingCapacity: true)
        for (p, size) in placeholders {
            ProducedRegions.remove(p)
            munmap(p, size)
        }
        placeholders.removeAll(keepingCapacity: true)
    }

    /// Zeroed memory for `count` values of `T`.
    func allocate<T>(_: T.Type, count: Int = 1) -> UnsafeMutablePointer<T> {
        let raw = calloc(max(count, 1), MemoryLayout<T>.stride)!
        allocations.append(raw)
        return raw.bindMemory(to: T.self, capacity: max(count, 1))
    }

    /// A message initialised by its generated `init` function (which sets the descriptor).
    func message<T>(_ initialize: (UnsafeMutablePointer<T>) -> Void) -> UnsafeMutablePointer<T> {
        let p = allocate(T.self)
        initialize(p)
        return p
    }

    // Text fields are `bytes` in Proto/onnx.proto (see the comment there):
    // a String goes back to the exact bytes it was read from through
    // ``ProtoBytes`` (`.protoBytes`), NULs and invalid UTF-8 included.

    /// An optional text field: (has, bytes); absent when `s` is nil.
    func string(_ s: String?) -> (protobuf_c_boolean, ProtobufCBinaryData) {
        guard let s else { return (0, ProtobufCBinaryData(len: 0, data: nil)) }
        return (1, text(s))
    }

    /// The bytes `s` stands for, copied.
    func text(_ s: String) -> ProtobufCBinaryData {
        copiedBytes(s.protoBytes)
    }

    /// A repeated text field.
    func strings(_ list: [String]) -> (Int, UnsafeMutablePointer<ProtobufCBinaryData>?) {
        scalars(list.map(text))
    }

    func scalars<T>(_ list: [T]) -> (Int, UnsafeMutablePointer<T>?) {
        guard !list.isEmpty else { return (0, nil) }
        let array = allocate(T.self, count: list.count)
        for (i, v) in list.enumerated() { array[i] = v }
        return (list.count, array)
    }

    /// A repeated message field built from `list`.
    func messages<S, T>(_ list: [S], _ encode: (S) throws -> UnsafeMutablePointer<T>) rethrows
        -> (Int, UnsafeMutablePointer<UnsafeMutablePointer<T>?>?) {
        guard !list.isEmpty else { return (0, nil) }
        let array = allocate(UnsafeMutablePointer<T>?.self, count: list.count)
        for (i, item) in list.enumerated() { array[i] = try encode(item) }
        return (list.count, array)
    }

    /// Points at `buffer`'s bytes without copying them.
    ///
    /// Produced bytes (``ByteProducer``) have no address: they get a
    /// placeholder — a reserved, inaccessible address range of their size,
    /// registered in ``ProducedRegions``. protobuf-c only measures a bytes
    /// field and hands its pointer to the output callback, never reading it,
    /// so the ``FileSink`` recognises the placeholder and streams the producer
    /// instead.
    func bytes(_ buffer: ByteBuffer) -> ProtobufCBinaryData {
        if let owner = buffer.owner { keepAlive.append(owner) }
        if buffer.baseAddress == nil, buffer.count > 0, let producer = buffer.producer {
            if measuring {
                return ProtobufCBinaryData(len: buffer.count, data: UnsafeMutablePointer(bitPattern: 0x1000))
            }
            let region = mmap(nil, buffer.count, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
            if let region, region != MAP_FAILED {
                placeholders.append((region, buffer.count))
                ProducedRegions.add(region, count: buffer.count, producer: producer)
                return ProtobufCBinaryData(len: buffer.count, data: region.assumingMemoryBound(to: UInt8.self))
            }
            // No address space for a placeholder: compute the bytes now.
            return bytes(ProducedBytesMaterializer.materialize(buffer))
        }
        return ProtobufCBinaryData(len: buffer.count,
                                   data: UnsafeMutablePointer(mutating: buffer.baseAddress?.assumingMemoryBound(to: UInt8.self)))
    }

    /// A typed view of `buffer` for a packed repeated field, without copying.
    func typed<T>(_ buffer: ByteBuffer, as _: T.Type) -> (Int, UnsafeMutablePointer<T>?) {
        guard buffer.count > 0, let base = buffer.baseAddress else { return (0, nil) }
        if let owner = buffer.owner { keepAlive.append(owner) }
        let stride = MemoryLayout<T>.stride
        if Int(bitPattern: base) % MemoryLayout<T>.alignment == 0 {
            return (buffer.count / stride, UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: T.self)))
        }
        // Misaligned source (never produced by the reader): copy to aligned memory.
        let copy = allocate(T.self, count: buffer.count / stride)
        memcpy(copy, base, buffer.count)
        return (buffer.count / stride, copy)
    }

    /// Small bytes (attribute strings): copied.
    func copiedBytes(_ bytes: [UInt8]) -> ProtobufCBinaryData {
        guard !bytes.isEmpty else { return ProtobufCBinaryData(len: 0, data: nil) }
        let p = allocate(UInt8.self, count: bytes.count)
        bytes.withUnsafeBufferPointer { _ = memcpy(p, $0.baseAddress!, bytes.count) }
        return ProtobufCBinaryData(len: bytes.count, data: p)
    }

    /// Attaches unknown fields to a message so that pack writes them back.
    func attach(_ unknown: UnknownFields, to base: inout ProtobufCMessage) {
        guard !unknown.isEmpty else { return }
        let fields = allocate(ProtobufCMessageUnknownField.self, count: unknown.fields.count)
        for (i, f) in unknown.fields.enumerated() {
            let data = copiedBytes(f.payload)
            fields[i] = ProtobufCMessageUnknownField(
                tag: f.number, wire_type: ProtobufCWireType(rawValue: UInt32(f.wireType)),
                len: data.len, data: data.data)
        }
        base.n_unknown_fields = UInt32(unknown.fields.count)
        base.unknown_fields = fields
    }
}

/// Computes a produced buffer in full (the fallback when no placeholder can be made).
enum ProducedBytesMaterializer {
    static func materialize(_ buffer: ByteBuffer) -> ByteBuffer {
        (buffer.owner as? ProducedBytes)?.materialized ?? buffer
    }
}

/// Placeholder address ranges standing for produced bytes while a model is
/// being packed (see ``CArena/bytes(_:)``).
enum ProducedRegions {
    private typealias Entry = (base: UInt, count: Int, producer: any ByteProducer)
    private static let lock = NSLock()
    nonisolated(unsafe) private static var live: [UInt: (count: Int, producer: any ByteProducer)] = [:]
    /// `live` sorted by base address, rebuilt on the first lookup after a
    /// change. The sink asks once per write callback — a model with many
    /// produced tensors makes thousands of regions and many more callbacks,
    /// so a linear scan made packing quadratic; registration all happens
    /// before packing starts, so one sort serves every lookup.
    nonisolated(unsafe) private static var sorted: [Entry]?

    static func add(_ base: UnsafeMutableRawPointer, count: Int, producer: any ByteProducer) {
        lock.lock(); defer { lock.unlock() }
        live[UInt(bitPattern: base)] = (count, producer)
        sorted = nil
    }

    static func remove(_ base: UnsafeMutableRawPointer) {
        lock.lock(); defer { lock.unlock() }
        live[UInt(bitPattern: base)] = nil
        sorted = nil
    }

    /// The producer and the offset into its bytes that `pointer` stands for.
    static func locate(_ pointer: UnsafeRawPointer, count: Int) -> (producer: any ByteProducer, offset: Int)? {
        let p = UInt(bitPattern: pointer)
        lock.lock(); defer { lock.unlock() }
        if live.isEmpty { return nil }
        if sorted == nil {
            sorted = live.map { (base: $0.key, count: $0.value.count, producer: $0.value.producer) }
                .sorted { $0.base < $1.base }
        }
        let regions = sorted!
        // The last region starting at or before `p` (regions never overlap:
        // each is its own mapping).
        var lo = 0, hi = regions.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if regions[mid].base <= p { lo = mid + 1 } else { hi = mid }
        }
        guard lo > 0 else { return nil }
        let r = regions[lo - 1]
        guard p + UInt(count) <= r.base + UInt(r.count) else { return nil }
        return (r.producer, Int(p - r.base))
    }
}
