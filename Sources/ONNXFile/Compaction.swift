#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ONNXGraph

/// Reads a model without copying its tensor payloads.
///
/// protobuf-c's unpack copies every `bytes` field, so unpacking a mapped
/// 500 MB model holds the mapping and the copy at once (2× the file in
/// memory). Instead, this walks the wire format first — reading only field
/// headers, never the payload pages — and builds a small copy of the message
/// in which each large `TensorProto.raw_data` is replaced by a marker field
/// (an unknown field carrying an index). protobuf-c unpacks that small
/// message; the decoder swaps each marker for a `ByteBuffer` pointing into
/// the mapped file. Tensor bytes are then read from the page cache on demand,
/// never copied, and pages of a tensor a pass replaced are given back (see
/// ``MappedSlice``).
///
/// Anything unusual — malformed wire data, nesting deeper than
/// ``maxDepth``, a tensor that repeats `raw_data`, or an input that already
/// uses the marker's field number — makes `compact` return nil, and the
/// reader falls back to a plain unpack (which also diagnoses the error).
struct Compaction {
    /// Field number of the marker. The largest legal protobuf field number,
    /// far beyond anything ONNX defines.
    static let markerField: UInt64 = 536_870_911
    /// raw_data payloads at least this long are left in the file.
    static let threshold = 1024
    static let maxDepth = 64

    /// The small message to unpack.
    var bytes: [UInt8] = []
    /// Offset and length in the file of each stripped payload, by marker index.
    var slices: [(offset: Int, length: Int)] = []

    private enum Kind { case model, graph, node, attribute, tensor, sparseTensor, function, trainingInfo }

    /// Where TensorProto can occur: message kind → field number → child kind.
    private static let children: [Kind: [UInt64: Kind]] = [
        .model: [7: .graph, 20: .trainingInfo, 25: .function],
        .trainingInfo: [1: .graph, 2: .graph],
        .function: [7: .node, 11: .attribute],
        .graph: [1: .node, 5: .tensor, 15: .sparseTensor],
        .node: [5: .attribute],
        .attribute: [5: .tensor, 6: .graph, 10: .tensor, 11: .graph, 22: .sparseTensor, 23: .sparseTensor],
        .sparseTensor: [1: .tensor, 2: .tensor],
    ]

    private struct Malformed: Error {}

    /// Compacts the model in `file`, or returns nil when the plain path should be used.
    static func compact(_ file: UnsafeRawBufferPointer) -> Compaction? {
        var c = Compaction()
        c.bytes.reserveCapacity(min(file.count, 1 << 20))
        do {
            var out: [UInt8] = []
            out.reserveCapacity(min(file.count, 1 << 20))
            try c.message(file, 0..<file.count, .model, depth: 0, into: &out)
            c.bytes = out
        } catch {
            return nil
        }
        return c
    }

    private struct Field {
        var number: UInt64
        var wire: UInt64
        /// The whole field, header included.
        var range: Range<Int>
        /// For wire type 2: the payload.
        var payload: Range<Int>
    }

    private static func fields(_ file: UnsafeRawBufferPointer, _ range: Range<Int>) throws -> [Field] {
        var pos = range.lowerBound
        var result: [Field] = []
        func varint() throws -> UInt64 {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while true {
                guard pos < range.upperBound, shift < 64 else { throw Malformed() }
                let b = file[pos]
                pos += 1
                value |= UInt64(b & 0x7F) << shift
                if b & 0x80 == 0 { return value }
                shift += 7
            }
        }
        while pos < range.upperBound {
            let start = pos
            let key = try varint()
            let number = key >> 3, wire = key & 7
            guard number > 0 else { throw Malformed() }
            var payload = pos..<pos
            switch wire {
            case 0: _ = try varint()
            case 1: guard range.upperBound - pos >= 8 else { throw Malformed() }; pos += 8
            case 5: guard range.upperBound - pos >= 4 else { throw Malformed() }; pos += 4
            case 2:
                let length = try varint()
                guard length <= UInt64(range.upperBound - pos) else { throw Malformed() }
                payload = pos..<(pos + Int(length))
                pos += Int(length)
            default: throw Malformed()
            }
            result.append(Field(number: number, wire: wire, range: start..<pos, payload: payload))
        }
        return result
    }

    private mutating func message(_ file: UnsafeRawBufferPointer, _ range: Range<Int>, _ kind: Kind,
                                  depth: Int, into out: inout [UInt8]) throws {
        guard depth < Self.maxDepth else { throw Malformed() }
        let list = try Self.fields(file, range)
        var stripRawData = false
        if kind == .tensor {
            guard !list.contains(where: { $0.number == Self.markerField }) else { throw Malformed() }
            stripRawData = list.filter { $0.number == 9 }.count == 1
        }
        let childKinds = Self.children[kind] ?? [:]
        for field in list {
            if stripRawData, field.number == 9, field.wire == 2, field.payload.count >= Self.threshold {
                Self.appendVarint(Self.markerField << 3, to: &out)  // wire type 0
                Self.appendVarint(UInt64(slices.count), to: &out)
                slices.append((field.payload.lowerBound, field.payload.count))
            } else if field.wire == 2, let child = childKinds[field.number] {
                var inner: [UInt8] = []
                try message(file, field.payload, child, depth: depth + 1, into: &inner)
                Self.appendVarint(field.number << 3 | 2, to: &out)
                Self.appendVarint(UInt64(inner.count), to: &out)
                out.append(contentsOf: inner)
            } else {
                out.append(contentsOf: UnsafeRawBufferPointer(rebasing: file[field.range]))
            }
        }
    }

    private static func appendVarint(_ value: UInt64, to out: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }
}

/// A tensor's bytes inside a mapped model file.
///
/// When the last `ByteBuffer` referring to it goes — typically because a
/// pass replaced the tensor — the pages lying wholly inside the tensor are
/// returned to the kernel (`MADV_DONTNEED`), so the old weights stop counting
/// against memory while their folded replacements are built. The pages are
/// clean file pages: touching them again would simply re-read the file.
final class MappedSlice: ReclaimableStorage {
    let file: MappedFile
    let offset: Int
    let length: Int

    init(file: MappedFile, offset: Int, length: Int) {
        self.file = file
        self.offset = offset
        self.length = length
    }

    var buffer: ByteBuffer { ByteBuffer(borrowing: file.base + offset, count: length, owner: self) }

    deinit { dropPages(from: offset, to: offset + length) }

    func reclaim(base: UnsafeRawPointer, offset: Int, length: Int) {
        let start = self.offset + offset
        dropPages(from: start, to: min(start + length, self.offset + self.length))
    }

    func prefetch(base: UnsafeRawPointer, offset: Int, length: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (self.offset + offset) / page * page
        let end = min(self.offset + offset + length, file.size)
        guard end > start else { return }
        // MADV_POPULATE_READ (Linux 5.14) maps the pages in one call; older
        // kernels reject it and the pages fault in as they are read.
        _ = madvise(UnsafeMutableRawPointer(mutating: file.base + start), end - start, 22 /* MADV_POPULATE_READ */)
    }

    /// MADV_DONTNEED on the pages lying wholly inside [from, to) of the file.
    private func dropPages(from: Int, to: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (from + page - 1) / page * page
        let end = to / page * page
        if end > start {
            madvise(UnsafeMutableRawPointer(mutating: file.base + start), end - start, Int32(MADV_DONTNEED))
        }
    }
}
