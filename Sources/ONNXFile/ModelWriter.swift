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
    /// Permission bits for a new output file (the caller's umask still
    /// applies), typically the input model's, as `cp` does; an existing
    /// output keeps its own mode and owner. Nil: 0644.
    public var newFileMode: UInt32?
    /// Check the model with `Model.validate()` before writing anything, and
    /// refuse to write one that fails: a pass that drops a node without
    /// rewiring its readers must not turn into a file that no runtime loads.
    /// Off only for tools that mean to write invalid models (test and fuzz
    /// generators).
    public var validatesModel = true
    /// Called once every temporary file is complete and before any is
    /// renamed into place: the last moment at which stopping leaves every
    /// existing file as it was. Drivers that test interruption (a signal, a
    /// competing writer) pause here; nil for everything else.
    public var beforeCommit: (@Sendable () -> Void)?

    public init(externalData: ExternalDataMode = .keep, validatesModel: Bool = true) {
        self.externalData = externalData
        self.validatesModel = validatesModel
    }
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
    public static func write(_ model: Model, to outputPath: String, options: WriteOptions = WriteOptions()) throws -> WriteSummary {
        if options.validatesModel {
            do {
                try model.validate()
            } catch let error as ModelValidationError {
                throw ModelFileError(file: outputPath, "not written: the model is not valid: \(error.message)")
            }
        }
        let target = try OutputTarget.resolve(outputPath, displayName: outputPath)
        switch target {
        case .stream(let fd, let owned):
            defer { if owned { close(fd) } }
            return try writeStream(model, fd: fd, displayName: outputPath == "-" ? "standard output" : outputPath,
                                   options: options)
        case .file(let path, let existing):
            // Writers of one directory take turns (an exclusive flock on the
            // directory), so that a model and its data file always come from
            // the same run.
            let lock = DirectoryLock(parentDirectory(of: path))
            defer { lock.release() }
            return try writeFile(model, to: path, displayName: outputPath, existing: existing, options: options)
        }
    }

    /// To standard output or a device/FIFO: one stream, so no external data.
    private static func writeStream(_ model: Model, fd: Int32, displayName: String, options: WriteOptions) throws -> WriteSummary {
        guard options.externalData != .external else {
            throw ModelFileError(file: displayName, "cannot be written with external data: a stream or device has no directory for the data file")
        }
        let plan = DataPlan(mode: .inline, forceAll: false, fileName: "", threshold: options.externalThreshold,
                            alignment: options.externalAlignment, modelFile: displayName)
        let arena = CArena()
        let tree = try ProtoEncoder(arena: arena, placement: plan.place, checksums: ChecksumSlots()).encode(model)
        let size = tree.packedSize
        guard size <= options.protobufSizeLimit else {
            throw ModelFileError(file: displayName, "cannot be written: the model needs \(size) bytes, over protobuf's limit of \(options.protobufSizeLimit), and a stream cannot carry an external data file; write to a regular file")
        }
        let sink = FileSink(fd: fd, displayName: displayName)
        try tree.pack(to: sink)
        try sink.finish()
        withExtendedLifetime(arena) {}
        return WriteSummary(modelBytes: sink.written, externalDataFile: nil, externalTensors: 0, externalDataBytes: 0,
                            switchedToExternalData: false)
    }

    private static func writeFile(_ model: Model, to path: String, displayName: String, existing: stat?,
                                  options: WriteOptions) throws -> WriteSummary {
        let directory = parentDirectory(of: path)
        let defaultDataName = options.externalDataFileName ?? baseName(of: path) + ".data"
        // Replacing an existing output: its data file (if the new model has
        // one) gets a name no file has yet, so that the old model never
        // meets new data — if the run dies between the two renames, the old
        // model still reads its own data. The old data file is removed after.
        let replacedDataFiles = existing == nil ? [] : replacedOutputDataFiles(path)
        let dataName = availableDataName(defaultDataName, directory: directory,
                                         protected: options.protectedFiles + replacedDataFiles)
        let mode = existing.map { mode_t($0.st_mode) & 0o7777 } ?? (mode_t(options.newFileMode ?? 0o644) & 0o777 & ~currentUmask())
        let owner = existing.map { (uid: $0.st_uid, gid: $0.st_gid) }

        // Plan: place every tensor, build the message tree, measure it. If it
        // is over the limit, move initializers to external data, then
        // everything that can move; past that the model cannot be written.
        var attempts: [(mode: ExternalDataMode, forceAll: Bool)] = [(options.externalData, false)]
        if options.externalData != .external { attempts.append((.external, false)) }
        attempts.append((.external, true))
        var built: (plan: DataPlan, arena: CArena, tree: EncodedModel, checksums: ChecksumSlots,
                    attempt: Int)?
        var size = 0
        for (i, attempt) in attempts.enumerated() {
            let plan = DataPlan(mode: attempt.mode, forceAll: attempt.forceAll, fileName: dataName,
                                threshold: options.externalThreshold, alignment: options.externalAlignment,
                                modelFile: path)
            let arena = CArena()
            let checksums = ChecksumSlots()
            let tree = try ProtoEncoder(arena: arena, placement: plan.place, checksums: checksums).encode(model)
            size = tree.packedSize
            if size <= options.protobufSizeLimit {
                built = (plan, arena, tree, checksums, i)
                break
            }
        }
        guard let (plan, arena, tree, checksums, attempt) = built else {
            throw ModelFileError(
                file: displayName,
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
            let dataTemp = try temps.create(near: dataPath, displayName: dataDisplayName, mode: mode, owner: owner)
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
        let modelTemp = try temps.create(near: path, displayName: displayName, mode: mode, owner: owner)
        let sink = FileSink(fd: modelTemp.fd, displayName: displayName)
        try tree.pack(to: sink)
        try sink.finish()
        withExtendedLifetime(arena) {}

        options.beforeCommit?()
        // Data first, then the model that refers to it.
        try temps.commitAll(directory: directory)
        // The replaced output's own data files, now read by nothing bnfold wrote.
        let protectedIDs = Set(options.protectedFiles.compactMap(fileIdentity))
        for old in replacedDataFiles where baseName(of: old) != dataName {
            if let id = fileIdentity(old), !protectedIDs.contains(id) { unlink(old) }
        }
        return WriteSummary(modelBytes: sink.written,
                            externalDataFile: plan.entries.isEmpty ? nil : dataName,
                            externalTensors: plan.entries.count,
                            externalDataBytes: dataBytes,
                            switchedToExternalData: switched)
    }
}

extension ModelWriter {
    /// The data files the existing output at `path` refers to that look like
    /// bnfold's own (`NAME.data`, `NAME-N.data` next to it): these are
    /// replaced along with the model. A file that does not read as a model
    /// has none.
    static func replacedOutputDataFiles(_ path: String) -> [String] {
        guard let files = ModelReader.externalDataLocations(path: path) else { return [] }
        let stem = baseName(of: path)
        return files.filter { file in
            guard parentDirectory(of: file) == parentDirectory(of: path) else { return false }
            let name = baseName(of: file)
            if name == stem + ".data" { return true }
            guard name.hasPrefix(stem + "-"), name.hasSuffix(".data") else { return false }
            let number = name.dropFirst(stem.count + 1).dropLast(5)
            return !number.isEmpty && number.allSatisfy(\.isNumber)
        }
    }

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
        let tree = try ProtoEncoder(arena: arena, placement: { _, _ in .asIs }).encode(model)
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw ModelFileError(file: path, "cannot write: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let sink = FileSink(fd: fd, displayName: path)
        try tree.pack(to: sink)
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
        }).encode(model)
        return withExtendedLifetime(arena) { tree.packedSize }
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
