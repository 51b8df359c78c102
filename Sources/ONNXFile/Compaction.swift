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
/// The walk covers every message kind that can nest (graphs, nodes,
/// attributes, tensors, value infos and types), so it is also where nesting
/// is bounded: deeper than ``maxDepth`` is an error, before protobuf-c or
/// the decoder recurse (a few kilobytes of nested types would otherwise
/// overflow the stack). Malformed wire data is an error too (protobuf-c
/// would refuse it as well). Inputs that are valid but unusual — one that
/// already uses the marker's field number, or repeats a singular field that
/// holds tensors (protobuf merges the two copies, which would lose a
/// marker) — are walked to the end and then read by a plain unpack.
struct Compaction {
    /// Field number of the marker. The largest legal protobuf field number,
    /// far beyond anything ONNX defines.
    static let markerField: UInt64 = 536_870_911
    /// raw_data payloads at least this long are left in the file.
    static let threshold = 1024
    static let maxDepth = 100

    /// The small message to unpack.
    var bytes: [UInt8] = []
    /// Offset and length in the file of each stripped payload, by marker index.
    var slices: [(offset: Int, length: Int)] = []
    /// The file range of every graph whose initializers were left out of
    /// `bytes`, by marker index (see ``initializers(ofGraph:in:_:)``).
    var graphs: [Range<Int>] = []

    private enum Kind {
        case model, graph, node, attribute, tensor, sparseTensor, function, trainingInfo
        case valueInfo, typeProto, typeWrapper
    }

    /// Where nested messages are: message kind → field number → child kind.
    /// `typeWrapper` stands for TypeProto's Sequence, Map and Optional, whose
    /// element types are at fields 1 and 2.
    private static let children: [Kind: [UInt64: Kind]] = [
        .model: [7: .graph, 20: .trainingInfo, 25: .function],
        .trainingInfo: [1: .graph, 2: .graph],
        .function: [7: .node, 11: .attribute, 12: .valueInfo],
        .graph: [1: .node, 5: .tensor, 15: .sparseTensor, 11: .valueInfo, 12: .valueInfo, 13: .valueInfo],
        .node: [5: .attribute],
        .attribute: [5: .tensor, 6: .graph, 10: .tensor, 11: .graph, 22: .sparseTensor, 23: .sparseTensor,
                     14: .typeProto, 15: .typeProto],
        .sparseTensor: [1: .tensor, 2: .tensor],
        .valueInfo: [2: .typeProto],
        .typeProto: [4: .typeWrapper, 5: .typeWrapper, 9: .typeWrapper],
        .typeWrapper: [1: .typeProto, 2: .typeProto],
    ]

    /// Singular message fields that lead to tensors: if one occurs twice,
    /// protobuf merges the copies and keeps only the later copy's unknown
    /// fields (a marker in the earlier one would be lost).
    private static let singularTensorCarriers: [Kind: Set<UInt64>] = [
        .model: [7], .trainingInfo: [1, 2], .attribute: [5, 6, 22], .sparseTensor: [1, 2],
    ]

    private struct Malformed: Error {}
    /// Nesting beyond ``maxDepth``.
    struct TooDeep: Error {}

    enum Outcome {
        case compacted(Compaction)
        /// Valid, but to be read by a plain unpack.
        case usePlainUnpack
        /// Malformed wire data (protobuf-c would refuse it too).
        case malformed
        case tooDeep
    }

    /// Compacts the model in `file`.
    static func compact(_ file: UnsafeRawBufferPointer) -> Outcome {
        var c = Compaction()
        var out: [UInt8] = []
        out.reserveCapacity(min(file.count, 1 << 20))
        do {
            try c.message(file, 0..<file.count, .model, depth: 0, into: &out)
        } catch is TooDeep {
            return .tooDeep
        } catch {
            return .malformed
        }
        if c.plainUnpackNeeded { return .usePlainUnpack }
        c.bytes = out
        return .compacted(c)
    }

    /// Set by the walk for valid inputs the marker scheme cannot handle.
    private var plainUnpackNeeded = false

    private struct Field {
        var number: UInt64
        var wire: UInt64
        /// The whole field, header included.
        var range: Range<Int>
        /// For wire type 2: the payload.
        var payload: Range<Int>
    }

    /// Calls `body` with every field of the message at `range`, in order,
    /// without collecting them (a graph of a million initializers has a
    /// million fields).
    private static func forEachField(_ file: UnsafeRawBufferPointer, _ range: Range<Int>,
                                     _ body: (Field) throws -> Void) throws {
        var pos = range.lowerBound
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
            try body(Field(number: number, wire: wire, range: start..<pos, payload: payload))
        }
    }

    /// Walks the message at `range` and writes its compacted copy to `out`.
    ///
    /// Graph initializers are walked (so that they are checked like the
    /// rest) but not copied: a graph that has any gets one marker field
    /// instead, whose value indexes ``graphs``, and the decoder unpacks its
    /// initializers one at a time from the file (``initializers(ofGraph:in:_:)``).
    /// Unpacked all at once, the C structs of a million tiny initializers
    /// were 300 MB — eight times their file — for as long as the model was
    /// being read.
    private mutating func message(_ file: UnsafeRawBufferPointer, _ range: Range<Int>, _ kind: Kind,
                                  depth: Int, into out: inout [UInt8]) throws {
        guard depth < Self.maxDepth else { throw TooDeep() }
        // First pass: what decides how the fields are copied.
        let singular = Self.singularTensorCarriers[kind] ?? []
        var rawDataCount = 0, hasMarker = false
        var singularSeen: [UInt64: Int] = [:]
        try Self.forEachField(file, range) { field in
            if field.number == Self.markerField { hasMarker = true }
            if field.number == 9 { rawDataCount += 1 }
            if singular.contains(field.number) { singularSeen[field.number, default: 0] += 1 }
        }
        if (kind == .tensor || kind == .graph) && hasMarker { plainUnpackNeeded = true }
        if singularSeen.values.contains(where: { $0 > 1 }) { plainUnpackNeeded = true }
        let stripRawData = kind == .tensor && rawDataCount == 1
        let childKinds = Self.children[kind] ?? [:]
        var hasInitializers = false
        var discarded: [UInt8] = []
        try Self.forEachField(file, range) { field in
            if stripRawData, field.number == 9, field.wire == 2, field.payload.count >= Self.threshold {
                Self.appendVarint(Self.markerField << 3, to: &out)  // wire type 0
                Self.appendVarint(UInt64(slices.count), to: &out)
                slices.append((field.payload.lowerBound, field.payload.count))
            } else if kind == .graph, field.number == 5, field.wire == 2 {
                // An initializer: checked here, unpacked later on its own.
                let stripped = slices.count
                discarded.removeAll(keepingCapacity: true)
                try message(file, field.payload, .tensor, depth: depth + 1, into: &discarded)
                slices.removeSubrange(stripped...)
                hasInitializers = true
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
        if hasInitializers {
            Self.appendVarint(Self.markerField << 3, to: &out)  // wire type 0
            Self.appendVarint(UInt64(graphs.count), to: &out)
            graphs.append(range)
        }
    }

    /// Calls `body` with the compacted bytes of every initializer of the
    /// graph at `range` (one that ``compact(_:)`` walked and left out), in
    /// order, and the file ranges of the payloads stripped from it (by the
    /// tensor's own marker indices). The bytes are only valid during the call.
    /// How many initializer fields the graph at `range` has (headers only).
    static func initializerCount(ofGraph range: Range<Int>, in file: UnsafeRawBufferPointer) -> Int {
        var n = 0
        try? forEachField(file, range) { field in if field.number == 5, field.wire == 2 { n += 1 } }
        return n
    }

    static func initializers(ofGraph range: Range<Int>, in file: UnsafeRawBufferPointer,
                             _ body: (UnsafeBufferPointer<UInt8>, [(offset: Int, length: Int)]) throws -> Void) throws {
        var scratch: [UInt8] = []
        try forEachField(file, range) { field in
            guard field.number == 5, field.wire == 2 else { return }
            var c = Compaction()
            scratch.removeAll(keepingCapacity: true)
            try c.message(file, field.payload, .tensor, depth: 0, into: &scratch)
            try scratch.withUnsafeBufferPointer { try body($0, c.slices) }
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
