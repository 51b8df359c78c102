#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CONNX
import ONNXGraph

/// Reads `.onnx` files into the IR.
///
/// The file is memory-mapped. Large tensor payloads stay in the mapping and
/// the IR borrows them (see `Compaction`); the rest of the message is
/// unpacked by protobuf-c. Peak memory is about one model's size, and less
/// when a pass replaces tensors (their old pages are released).
/// External data files are opened (beneath the model's directory) and
/// checked now, kept open, and mapped from that descriptor only when a
/// tensor's bytes are first needed.
public enum ModelReader {
    /// Reads the model at `path`.
    ///
    /// - Throws: ``ModelFileError`` naming the file and the problem: missing,
    ///   a directory, empty, not protobuf, truncated, not an ONNX model, a
    ///   tensor whose data does not match its shape, unsafe or broken
    ///   external data.
    public static func read(path: String) throws -> Model {
        try read(path: path, resolvingExternalData: true)
    }

    /// The data files the model at `path` names (as ``externalDataFiles(of:modelPath:)``
    /// gives them), read without opening, hashing or mapping any of them:
    /// the writer asks this of an output it is about to replace, whose data
    /// may be large and is not going to be used. Nil when `path` does not
    /// read as a model.
    static func externalDataLocations(path: String) -> [String]? {
        guard let model = try? read(path: path, resolvingExternalData: false) else { return nil }
        return externalDataFiles(of: model, modelPath: path)
    }

    private static func read(path: String, resolvingExternalData: Bool) throws -> Model {
        // Opened once, without blocking (a FIFO put in the model's place
        // would otherwise hold the open forever), and checked on the
        // descriptor, so what is checked is what is mapped.
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            let reason = errno == ENOENT ? "no such file" : String(cString: strerror(errno))
            throw ModelFileError(file: path, "cannot read: \(reason)")
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw ModelFileError(file: path, "cannot read: \(reason)")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            if (st.st_mode & S_IFMT) == S_IFDIR { throw ModelFileError(file: path, "is a directory, not a model file") }
            throw ModelFileError(file: path, "is not a regular file")
        }
        let file = try MappedFile(owning: fd, displayName: path)
        guard file.size > 0 else { throw ModelFileError(file: path, "is empty") }
        return try decode(UnsafeRawBufferPointer(start: file.base, count: file.size), name: path,
                          externalDataDirectoryOf: path, resolvingExternalData: resolvingExternalData) { offset, length in
            MappedSlice(file: file, offset: offset, length: length).buffer
        }
    }

    /// Reads a model from bytes the reader takes a copy of, so tensors stay
    /// valid however long they live (used for `.pb` TensorProto inputs and
    /// other models built in memory). External data is looked up next to `name`.
    public static func read<Bytes: Collection>(contents: Bytes, name: String) throws -> Model where Bytes.Element == UInt8 {
        let copy = ByteBuffer(contents)
        return try copy.withUnsafeBytes { try read(bytes: $0, name: name, owner: copy.owner) }
    }

    /// Reads a model from standard input (the CLI's `-`). A stream has no
    /// directory, so a tensor with external data is an error naming it —
    /// never a lookup in the current directory.
    public static func readStandardInput() throws -> Model {
        let name = "standard input"
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { systemRead(STDIN_FILENO, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw ModelFileError(file: name, "cannot read: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            bytes += chunk[..<n]
        }
        guard !bytes.isEmpty else { throw ModelFileError(file: name, "is empty") }
        let copy = ByteBuffer(bytes)
        return try copy.withUnsafeBytes { raw in
            try decode(raw, name: name, externalDataDirectoryOf: name,
                       externalDataRefusal: "cannot be read: the model comes from standard input, which has no directory for data files") { offset, length in
                ByteBuffer(borrowing: raw.baseAddress! + offset, count: length, owner: copy.owner)
            }
        }
    }

    /// Reads a model held in memory without copying it (used by the fuzzer).
    /// Tensor payloads of 1 KiB or more borrow `bytes`, which must stay valid
    /// and unchanged while the returned model (or any tensor taken from it)
    /// lives: pass the object that keeps them alive as `owner` (tensors keep
    /// it), or use ``read(contents:name:)``, which owns its copy.
    /// External data is looked up next to `name`.
    public static func read(bytes: UnsafeRawBufferPointer, name: String, owner: AnyObject? = nil) throws -> Model {
        guard bytes.count > 0 else { throw ModelFileError(file: name, "is empty") }
        return try decode(bytes, name: name, externalDataDirectoryOf: name) { offset, length in
            ByteBuffer(borrowing: bytes.baseAddress! + offset, count: length, owner: owner)
        }
    }

    /// Unpacks and decodes. `payload` makes the buffer for a payload that
    /// ``Compaction`` left in `bytes`. `forcePlainUnpack` skips the
    /// compaction (for tests of the fallback).
    static func decode(_ bytes: UnsafeRawBufferPointer, name path: String, externalDataDirectoryOf modelPath: String,
                       resolvingExternalData: Bool = true, externalDataRefusal: String? = nil,
                       forcePlainUnpack: Bool = false,
                       payload: (_ offset: Int, _ length: Int) -> ByteBuffer) throws -> Model {
        // Preferred: unpack a compacted copy and borrow large tensor payloads
        // from `bytes` (no copy); graph initializers are unpacked one by one
        // from `bytes` as the graph is decoded. Fallback: unpack the bytes as
        // they are.
        return try withoutActuallyEscaping(payload) { payload in
            var slices: [ByteBuffer]?
            var graphRanges: [Range<Int>] = []
            var unpacked: UnsafeMutablePointer<Onnx__ModelProto>?
            switch forcePlainUnpack ? .usePlainUnpack : Compaction.compact(bytes) {
            case .compacted(let compaction):
                unpacked = compaction.bytes.withUnsafeBufferPointer {
                    onnx__model_proto__unpack(nil, $0.count, $0.baseAddress)
                }
                if unpacked != nil {
                    slices = compaction.slices.map { payload($0.offset, $0.length) }
                    graphRanges = compaction.graphs
                }
            case .usePlainUnpack:
                unpacked = onnx__model_proto__unpack(nil, bytes.count, bytes.baseAddress!.assumingMemoryBound(to: UInt8.self))
            case .malformed:
                break  // diagnosed below
            case .tooDeep:
                throw ModelFileError(file: path, "nests messages more than \(Compaction.maxDepth) levels deep (graphs inside attributes, or types inside types); bnfold refuses it rather than risk running out of stack")
            }
            guard let unpacked else {
                throw ModelFileError(file: path, WireScan.diagnose(bytes))
            }
            // The IR keeps no pointer into the tree (see ProtoDecoder): it is
            // freed when this returns.
            defer { onnx__model_proto__free_unpacked(unpacked, nil) }
            guard unpacked.pointee.graph != nil else {
                throw ModelFileError(file: path, WireScan.foreignFormat(bytes) ?? "is not an ONNX model: it is protobuf, but has no graph")
            }
            guard unpacked.pointee.has_ir_version != 0 else {
                throw ModelFileError(file: path, WireScan.foreignFormat(bytes) ?? "is not an ONNX model: it has no ir_version")
            }
            let external = ExternalDataResolver(modelFile: modelPath, resolving: resolvingExternalData, refusal: externalDataRefusal)
            var decoder = ProtoDecoder(external: external, fileName: path, slices: slices)
            decoder.file = bytes
            decoder.graphRanges = graphRanges
            decoder.payload = payload
            let model = try decoder.model(unpacked)
            try external.checkReferencedTotal()
            return model
        }
    }
}

/// Says why protobuf-c refused a file. protobuf-c only returns NULL, so this
/// walks the wire format itself to find the first thing that is wrong.
enum WireScan {
    static func diagnose(_ bytes: UnsafeRawBufferPointer) -> String {
        if let format = foreignFormat(bytes) { return format }
        if let problem = firstProblem(bytes) { return problem }
        return "is not an ONNX model: protobuf cannot decode it as a ModelProto (a field has the wrong type or a nested message is malformed)"
    }

    /// Formats people pass by mistake, recognised by their first bytes (some
    /// of them even unpack as protobuf, without a graph).
    static func foreignFormat(_ bytes: UnsafeRawBufferPointer) -> String? {
        if bytes.starts(with: [0x50, 0x4B, 0x03, 0x04]) {
            return "is a zip archive, not an ONNX model (a PyTorch .pt/.pth checkpoint is one: export the model with torch.onnx.export first)"
        }
        if bytes.starts(with: [0x80]) && bytes.count > 1 && (2...5).contains(bytes[1]) {
            return "is a Python pickle, not an ONNX model (an old PyTorch checkpoint? export the model with torch.onnx.export first)"
        }
        if bytes.starts(with: [0x89, 0x48, 0x44, 0x46]) {
            return "is an HDF5 file (a Keras .h5 model?), not an ONNX model: convert it with tf2onnx first"
        }
        return nil
    }

    /// The first malformed or truncated top-level field. A file cut short
    /// always shows here: its last top-level field (usually the graph) claims
    /// more bytes than remain.
    private static func firstProblem(_ bytes: UnsafeRawBufferPointer) -> String? {
        let base = 0
        var pos = 0
        let end = bytes.count
        func varint() -> UInt64? {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while pos < end && shift < 64 {
                let b = bytes[pos]
                pos += 1
                value |= UInt64(b & 0x7F) << shift
                if b & 0x80 == 0 { return value }
                shift += 7
            }
            return nil
        }
        while pos < end {
            let start = pos
            guard let key = varint() else {
                return pos >= end ? "is truncated: it ends inside a field header at byte \(base + start)"
                    : "is not protobuf: invalid field header at byte \(base + start)"
            }
            let field = key >> 3
            let wire = key & 7
            if field == 0 { return "is not protobuf: field number 0 at byte \(base + start)" }
            switch wire {
            case 0:
                guard varint() != nil else { return "is truncated: it ends inside field \(field) at byte \(base + start)" }
            case 1, 5:
                let n = wire == 1 ? 8 : 4
                guard end - pos >= n else { return "is truncated: it ends inside field \(field) at byte \(base + start)" }
                pos += n
            case 2:
                guard let len = varint() else { return "is truncated: it ends inside field \(field) at byte \(base + start)" }
                guard len <= UInt64(end - pos) else {
                    return "is truncated or corrupt: field \(field) at byte \(base + start) claims \(len) bytes but only \(end - pos) remain"
                }
                pos += Int(len)
            default:
                return "is not protobuf: invalid wire type \(wire) at byte \(base + start)"
            }
        }
        return nil
    }
}

/// read(2), under a name that ModelReader's own `read` methods do not hide.
private func systemRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int {
    #if canImport(Glibc)
    Glibc.read(fd, buffer, count)
    #else
    Darwin.read(fd, buffer, count)
    #endif
}
