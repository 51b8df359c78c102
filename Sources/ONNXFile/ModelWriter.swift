#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CONNX
import ONNXGraph

/// How tensor data is laid out in the written model.
public enum ExternalDataMode: String, CaseIterable, Sendable {
    /// Each tensor where it was: external tensors go to the output's data
    /// file, inline ones stay inline (new tensors are inline).
    case keep
    /// Everything in the .onnx file (still switched to external if the
    /// model would pass protobuf's 2 GiB limit).
    case inline
    /// Every initializer of at least `externalThreshold` bytes in the data file.
    case external
}

/// Options for ``ModelWriter/write(_:to:options:)``.
public struct WriteOptions: Sendable {
    public var externalData: ExternalDataMode = .keep
    /// Name of the external data file, next to the output; defaults to the
    /// output's file name plus ".data".
    public var externalDataFileName: String?
    /// Tensors smaller than this stay inline when placing data externally
    /// (the same default as the onnx Python package).
    public var externalThreshold = 1024
    /// Largest serialized model written as one protobuf message. Protobuf
    /// cannot read messages of 2 GiB or more, and protobuf-c writes their
    /// length silently truncated; injectable so tests can exercise the switch.
    public var protobufSizeLimit = Int(Int32.max)
    /// External data offsets are multiples of this. 1 (contiguous, as the
    /// onnx package writes) keeps a round trip's offsets equal to the input's
    /// when the input was laid out the same way; raise it for page-aligned data.
    public var externalAlignment = 1
    /// Files that must not be replaced, typically the input model's own
    /// external data files: if the data file name would be one of them, the
    /// writer picks a free name instead (`OUT-1.data`, …), so that writing
    /// can never change the model the data was read from.
    public var protectedFiles: [String] = []

    public init(externalData: ExternalDataMode = .keep) { self.externalData = externalData }
}

/// What the writer did.
public struct WriteSummary: Sendable {
    /// Bytes in the .onnx file.
    public var modelBytes: Int
    /// The external data file's name (relative to the output's directory), if one was written.
    public var externalDataFile: String?
    public var externalTensors: Int
    public var externalDataBytes: Int
    /// Set when the requested layout would have passed the protobuf size
    /// limit and the writer moved tensors to external data instead.
    public var switchedToExternalData: Bool
}

/// Writes the IR to `.onnx` files, safely.
///
/// The model is packed by protobuf-c straight into a temporary file in the
/// output's directory (tensor bytes stream from wherever they are — the
/// input's unpacked tree, a mapped external file, or a pass's new buffer —
/// with no copy), flushed with fsync, and renamed over the output only when
/// complete. On any error the temporary files are removed and the output is
/// untouched. A model that would exceed the protobuf size limit is written
/// with external data instead of as a corrupt file.
public enum ModelWriter {
    public static func write(_ model: Model, to path: String, options: WriteOptions = WriteOptions()) throws -> WriteSummary {
        let directory = parentDirectory(of: path)
        let dataName = availableDataName(options.externalDataFileName ?? baseName(of: path) + ".data",
                                         directory: parentDirectory(of: path), protected: options.protectedFiles)

        // Plan: place every tensor, build the message tree, measure it. If it
        // is over the limit, move initializers to external data, then
        // everything that can move; past that the model cannot be written.
        var attempts: [(mode: ExternalDataMode, forceAll: Bool)] = [(options.externalData, false)]
        if options.externalData != .external { attempts.append((.external, false)) }
        attempts.append((.external, true))
        var built: (plan: DataPlan, arena: CArena, tree: UnsafeMutablePointer<Onnx__ModelProto>, checksums: ChecksumSlots,
                    attempt: Int)?
        var size = 0
        for (i, attempt) in attempts.enumerated() {
            let plan = DataPlan(mode: attempt.mode, forceAll: attempt.forceAll, fileName: dataName,
                                threshold: options.externalThreshold, alignment: options.externalAlignment,
                                modelFile: path)
            let arena = CArena()
            let checksums = ChecksumSlots()
            let tree = try ProtoEncoder(arena: arena, placement: plan.place, checksums: checksums).model(model)
            size = onnx__model_proto__get_packed_size(tree)
            if size <= options.protobufSizeLimit {
                built = (plan, arena, tree, checksums, i)
                break
            }
        }
        guard let (plan, arena, tree, checksums, attempt) = built else {
            throw ModelFileError(
                file: path,
                "cannot be written: even with all tensor data external the model needs \(size) bytes, over protobuf's limit of \(options.protobufSizeLimit)")
        }
        let switched = attempt > 0

        let temps = TemporaryFiles()
        defer { temps.removeAll() }
        var dataBytes = 0
        if !plan.entries.isEmpty {
            let dataPath = directory + "/" + dataName
            // Errors name the data file as the user would: next to the output as given.
            let dataDisplayName = path.lastIndex(of: "/").map { String(path[...$0]) + dataName } ?? dataName
            let dataTemp = try temps.create(near: dataPath, displayName: dataDisplayName)
            let sink = FileSink(fd: dataTemp.fd, displayName: dataDisplayName)
            if !checksums.slots.isEmpty { sink.hasher = SHA1() }
            for entry in plan.entries {
                try sink.pad(to: entry.offset)
                try sink.write(entry.bytes)
            }
            try sink.finish()
            if var hasher = sink.hasher {
                // The input's tensors carried checksums: give the new file's.
                checksums.fill(with: hasher.finishHex())
            }
            dataBytes = sink.written
        }
        let modelTemp = try temps.create(near: path, displayName: path)
        let sink = FileSink(fd: modelTemp.fd, displayName: path)
        try sink.pack(tree)
        try sink.finish()
        withExtendedLifetime(arena) {}

        pauseBeforeCommitForTests()
        // Data first, then the model that refers to it.
        try temps.commitAll(directory: directory)
        return WriteSummary(modelBytes: sink.written,
                            externalDataFile: plan.entries.isEmpty ? nil : dataName,
                            externalTensors: plan.entries.count,
                            externalDataBytes: dataBytes,
                            switchedToExternalData: switched)
    }

    /// Test hook, not a feature: when the environment variable
    /// `BNFOLD_TEST_PAUSE_BEFORE_COMMIT` holds a number of milliseconds, the
    /// writer sleeps that long once the temporary files are complete and
    /// before they are renamed, so that tests can interrupt it at a known
    /// point (Tests/BnfoldCLITests/NothingLostTests.swift). Unset, or not a
    /// positive number: does nothing.
    private static func pauseBeforeCommitForTests() {
        guard let value = getenv("BNFOLD_TEST_PAUSE_BEFORE_COMMIT"),
              let milliseconds = Int(String(cString: value)), milliseconds > 0 else { return }
        var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: milliseconds % 1000 * 1_000_000)
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}

extension ModelWriter {
    /// `name` unless a file of that name in `directory` is one of the
    /// protected files; then the first free `stem-N.ext`.
    static func availableDataName(_ name: String, directory: String, protected: [String]) -> String {
        let protectedIDs = Set(protected.compactMap(fileIdentity))
        func isProtected(_ candidate: String) -> Bool {
            fileIdentity(directory + "/" + candidate).map(protectedIDs.contains) ?? false
        }
        guard isProtected(name) else { return name }
        let (stem, ext) = name.lastIndex(of: ".").map { (String(name[..<$0]), String(name[$0...])) } ?? (name, "")
        var n = 1
        while true {
            let candidate = "\(stem)-\(n)\(ext)"
            if !isProtected(candidate) && fileIdentity(directory + "/" + candidate) == nil { return candidate }
            n += 1
        }
    }

    /// Writes the model message with every tensor's fields exactly as they
    /// are in the IR — external_data entries included, data files untouched —
    /// straight to `path`. For tests that need files with hand-made external
    /// data entries; not atomic, no size checks.
    static func writeMessageAsIs(_ model: Model, to path: String) throws {
        let arena = CArena()
        let tree = try ProtoEncoder(arena: arena, placement: { _, _ in .asIs }).model(model)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ModelFileError(file: path, "cannot write: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let sink = FileSink(fd: fd, displayName: path)
        try sink.pack(tree)
        try sink.finish()
        withExtendedLifetime(arena) {}
    }

    /// Bytes the model would take as one protobuf message with every tensor
    /// where it is now (what `--external-data keep` would write, before the
    /// 2 GiB switch). Builds the message tree without writing anything.
    public static func packedSize(_ model: Model) throws -> Int {
        let arena = CArena()
        let tree = try ProtoEncoder(arena: arena, placement: { tensor, _ in
            tensor.location == .external ? .external(location: "data", offset: 0, length: 0) : .asIs
        }).model(model)
        return withExtendedLifetime(arena) { onnx__model_proto__get_packed_size(tree) }
    }
}

/// Decides where each tensor's data goes and lays out the external file.
final class DataPlan {
    struct Entry {
        let bytes: ByteBuffer
        let offset: Int
    }
    let mode: ExternalDataMode
    let fileName: String
    let threshold: Int
    let alignment: Int
    let modelFile: String
    /// Also move tensors inside attributes (Constant values) and small ones.
    let forceAll: Bool
    private(set) var entries: [Entry] = []
    private var end = 0

    init(mode: ExternalDataMode, forceAll: Bool, fileName: String, threshold: Int, alignment: Int, modelFile: String) {
        self.mode = mode
        self.forceAll = forceAll
        self.fileName = fileName
        self.threshold = threshold
        self.alignment = max(alignment, 1)
        self.modelFile = modelFile
    }

    func place(_ tensor: Tensor, isInitializer: Bool) throws -> TensorPlacement {
        let wasExternal = tensor.location == .external
        let external: Bool
        switch mode {
        case .keep: external = wasExternal
        case .inline: external = false
        case .external:
            if wasExternal { external = true; break }
            guard isInitializer || forceAll, tensor.segment == nil, tensor.elementType != .string,
                  let count = tensor.elementCount, let bytes = tensor.elementType.byteCount(elements: count),
                  bytes >= (forceAll ? 1 : threshold) else { return .asIs }
            external = true
        }
        if !external {
            guard wasExternal else { return .asIs }
            return .inline(try loadBytes(tensor))
        }
        let bytes = try loadBytes(tensor)
        let offset = (end + alignment - 1) / alignment * alignment
        entries.append(Entry(bytes: bytes, offset: offset))
        end = offset + bytes.count
        return .external(location: fileName, offset: offset, length: bytes.count)
    }

    private func loadBytes(_ tensor: Tensor) throws -> ByteBuffer {
        do { return try tensor.dataBytes() } catch let e as TensorDataError {
            throw ModelFileError(file: modelFile, "cannot write \(e)")
        }
    }
}

/// Device and inode of an existing file (symlinks followed), nil if there is none.
struct FileIdentity: Hashable {
    let device: UInt64
    let inode: UInt64
}

func fileIdentity(_ path: String) -> FileIdentity? {
    var st = stat()
    guard stat(path, &st) == 0 else { return nil }
    return FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
}

extension ModelReader {
    /// The external data files a model read from `modelPath` refers to
    /// (every tensor with `data_location = EXTERNAL`, in graphs, subgraphs,
    /// attributes and functions), as paths next to the model.
    public static func externalDataFiles(of model: Model, modelPath: String) -> [String] {
        var locations: Set<String> = []
        func visit(_ tensor: Tensor) {
            if tensor.location == .external, let location = tensor.externalData.first(where: { $0.key == "location" })?.value {
                locations.insert(location)
            }
        }
        func visit(_ sparse: SparseTensor) {
            sparse.values.map(visit)
            sparse.indices.map(visit)
        }
        func visit(_ nodes: [Node]) {
            for node in nodes {
                for a in node.attributes {
                    a.t.map(visit); a.tensors.forEach(visit)
                    a.sparseTensor.map(visit); a.sparseTensors.forEach(visit)
                    a.g.map(visit); a.graphs.forEach(visit)
                }
            }
        }
        func visit(_ graph: Graph) {
            graph.initializers.forEach(visit)
            graph.sparseInitializers.forEach(visit)
            visit(graph.nodes)
        }
        model.graph.map(visit)
        model.functions.forEach { visit($0.nodes) }
        model.trainingInfo.forEach { info in info.initialization.map(visit); info.algorithm.map(visit) }
        let directory = parentDirectory(of: modelPath)
        return locations.sorted().map { directory + "/" + $0 }
    }
}
