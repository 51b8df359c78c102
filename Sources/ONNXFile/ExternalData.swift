#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import ONNXGraph

/// Finds the bytes of `data_location = EXTERNAL` tensors, safely.
///
/// The `location` key names a file relative to the model's directory. A
/// model file can come from anywhere, so the location is refused when it is
/// absolute or contains `..`, and each file is opened once, beneath a
/// descriptor of the model's directory (``OpenBeneath``: no symbolic link
/// may lead out of it, a FIFO cannot block the open), checked to be a
/// regular file on that descriptor, and from then on read only through it —
/// size, checksum and bytes all come from the same open file, so swapping
/// the file on disk after the model was read changes nothing. The offset and
/// length must lie within the file. Files are mapped lazily (from the kept
/// descriptor), once each, and shared by all tensors in them.
///
/// Tensors may share a region (tied weights), but every tensor is its own
/// copy once a pass or the writer materialises it, so the total the
/// tensors reference is bounded by the data on disk: see
/// ``checkReferencedTotal()``.
final class ExternalDataResolver {
    let modelFile: String
    /// The model's directory, opened on first use (most models have no external data).
    private var directoryDescriptor: Int32?
    /// Data files by location as written, and by file identity (two
    /// spellings of one file, or a link to it, share one entry).
    private var filesByLocation: [String: ExternalDataFile] = [:]
    private var filesByIdentity: [FileIdentity: ExternalDataFile] = [:]
    /// Bytes all external tensors read so far reference together (saturating).
    private(set) var referencedBytes = 0

    /// How many times over the external tensors may reference the bytes
    /// their files hold: exporters write each tensor once (1×); tied
    /// weights (an embedding reused as the output projection) share a
    /// region a few times.
    static let sharingFactor = 4
    /// Allowed on top of ``sharingFactor`` × the files' sizes, so that small
    /// models sharing small regions many times (a bias, a scale) still read.
    /// An attacker gains at most this much over what is on disk.
    static let sharingSlack = 16 << 20

    /// False: tensors keep their `external_data` entries but no file is
    /// opened, hashed or mapped (``ModelReader/externalDataLocations(path:)``).
    let resolves: Bool
    /// Why the model cannot have external data at all (it came from a
    /// stream, which has no directory to look in); nil when it may.
    let refusal: String?

    init(modelFile: String, resolving: Bool = true, refusal: String? = nil) {
        self.modelFile = modelFile
        self.resolves = resolving
        self.refusal = refusal
    }

    deinit {
        if let directoryDescriptor { close(directoryDescriptor) }
    }

    private func directory() throws -> Int32 {
        if let directoryDescriptor { return directoryDescriptor }
        let dir = parentDirectory(of: modelFile)
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else {
            throw ModelFileError(file: modelFile, "cannot open its directory '\(dir)' to look for external data: \(String(cString: strerror(errno)))")
        }
        directoryDescriptor = fd
        return fd
    }

    func resolve(_ tensor: Tensor) throws -> ExternalBytes {
        let name = tensor.name ?? "<unnamed>"
        func fail(_ problem: String) -> ModelFileError {
            ModelFileError(file: modelFile, "tensor '\(name)': external data \(problem)")
        }
        if let refusal { throw fail(refusal) }
        if tensor.segment != nil { throw TensorValidation.segmentRefusal(tensor, file: modelFile) }
        if tensor.elementType == .string {
            // ONNX keeps strings in string_data only: their raw bytes have no layout.
            throw fail("belongs to a string tensor; strings cannot be stored externally")
        }
        var location: String?
        var offset = 0
        var length: Int?
        var checksum: String?
        for entry in tensor.externalData {
            switch entry.key {
            case "location": location = entry.value
            case "offset":
                guard let v = entry.value.flatMap({ Int($0) }), v >= 0 else {
                    throw fail("has an invalid offset '\(entry.value ?? "")'")
                }
                offset = v
            case "length":
                guard let v = entry.value.flatMap({ Int($0) }), v >= 0 else {
                    throw fail("has an invalid length '\(entry.value ?? "")'")
                }
                length = v
            case "checksum": checksum = entry.value
            default: break
            }
        }
        guard let location, !location.isEmpty else { throw fail("has no location") }
        if location.hasPrefix("/") { throw fail("location '\(location)' is an absolute path; only paths inside the model's directory are allowed") }
        if location.contains("\0") { throw fail("location contains a NUL byte") }
        if location.split(separator: "/").contains("..") || location.split(separator: "\\").contains("..") {
            throw fail("location '\(location)' contains '..'; only paths inside the model's directory are allowed")
        }
        let file = try dataFile(location, fail: fail)
        let fileSize = file.size
        guard let count = tensor.elementCount else { throw fail("belongs to a tensor with invalid dimensions \(tensor.dims)") }
        let expected = tensor.elementType.byteCount(elements: count)
        if tensor.elementType.bitWidth != nil && expected == nil {
            throw fail("belongs to a tensor whose size in bytes does not fit in memory")
        }
        guard offset <= fileSize else {
            throw fail("of \(length ?? expected ?? 0) bytes at offset \(offset) lies past the end of '\(location)' (\(fileSize) bytes)")
        }
        let size = length ?? expected ?? (fileSize - offset)
        if let expected, size != expected {
            throw fail("length \(size) does not match its shape \(tensor.dims) of \(tensor.elementType), which needs \(expected) bytes")
        }
        guard size <= fileSize - offset else {
            throw fail("of \(size) bytes at offset \(offset) lies past the end of '\(location)' (\(fileSize) bytes)")
        }
        if let checksum {
            let actual = try file.digest()
            guard checksum.lowercased() == actual else {
                throw fail("checksum mismatch: '\(location)' has SHA-1 \(actual), the model expects \(checksum)")
            }
        }
        let (total, overflow) = referencedBytes.addingReportingOverflow(size)
        referencedBytes = overflow ? Int.max : total
        let description = "'\(location)' at offset \(offset)"
        return ExternalBytes(description: description) {
            try file.bytes(offset: offset, count: size, tensor: name)
        }
    }

    /// The open data file for `location`, opened beneath the model's
    /// directory on first use.
    private func dataFile(_ location: String, fail: (String) -> ModelFileError) throws -> ExternalDataFile {
        if let known = filesByLocation[location] { return known }
        let fd: Int32
        do {
            fd = try OpenBeneath.open(location, beneath: try directory())
        } catch let failure as OpenBeneath.Failure {
            switch failure {
            case .leadsOutside:
                throw fail("location '\(location)' leads outside the model's directory (through a symbolic link)")
            case .missing: throw fail("file '\(location)' does not exist next to the model")
            case .isDirectory: throw fail("file '\(location)' is not a regular file")
            case .tooManyLinks: throw fail("location '\(location)' goes through more than \(OpenBeneath.maxLinks) symbolic links")
            case .system(let code): throw fail("file '\(location)' cannot be opened: \(String(cString: strerror(code)))")
            }
        }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw fail("file '\(location)' is not a regular file")
        }
        let identity = FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
        if let known = filesByIdentity[identity] {
            close(fd)
            filesByLocation[location] = known
            return known
        }
        let file = ExternalDataFile(descriptor: fd, size: Int(st.st_size), location: location, modelFile: modelFile)
        filesByIdentity[identity] = file
        filesByLocation[location] = file
        return file
    }

    /// Refuses the model when its external tensors together reference more
    /// than ``sharingFactor`` × (the bytes their files hold) + ``sharingSlack``.
    ///
    /// Without this bound, 2000 tensors pointing at one 1 MiB region read as
    /// 2 GB of weights (each materialised on its own by passes, `check` and
    /// the writer) from a 1 MiB file. Called once all tensors are resolved.
    func checkReferencedTotal() throws {
        guard resolves else { return }
        var held = 0
        for file in filesByIdentity.values {
            let (sum, overflow) = held.addingReportingOverflow(file.size)
            held = overflow ? Int.max : sum
        }
        let (scaled, scaleOverflow) = held.multipliedReportingOverflow(by: Self.sharingFactor)
        let (allowed, slackOverflow) = scaled.addingReportingOverflow(Self.sharingSlack)
        guard !scaleOverflow, !slackOverflow else { return }
        guard referencedBytes <= allowed else {
            throw ModelFileError(file: modelFile, "external tensors reference \(referencedBytes) bytes but their data files hold \(held) bytes; bnfold allows at most \(Self.sharingFactor)× the data plus \(Self.sharingSlack >> 20) MiB (tensors sharing regions), since every tensor becomes its own copy in memory and in the output")
        }
    }
}

/// One external data file, open from the moment the model was read.
///
/// Everything about the file — its size, its checksum, its bytes — comes
/// from this one descriptor; the file is never opened again by name. The
/// mapping is made lazily from it (``MappedFile/init(duplicating:displayName:)``).
final class ExternalDataFile {
    /// Size when opened (`fstat` of the descriptor).
    let size: Int
    let location: String
    private let descriptor: Int32
    private let modelFile: String
    private var mapping: MappedFile?
    private var knownDigest: String?

    init(descriptor: Int32, size: Int, location: String, modelFile: String) {
        self.descriptor = descriptor
        self.size = size
        self.location = location
        self.modelFile = modelFile
    }

    deinit { close(descriptor) }

    private func mapped() throws -> MappedFile {
        if let mapping { return mapping }
        let file = try MappedFile(duplicating: descriptor, displayName: location)
        mapping = file
        return file
    }

    /// SHA-1 of the whole file, computed once.
    func digest() throws -> String {
        if let knownDigest { return knownDigest }
        let file = try mapped()
        try requireUnshrunk(file, end: size, tensor: nil)
        let hex = SHA1.hex(of: UnsafeRawBufferPointer(start: file.size > 0 ? file.base : nil, count: size))
        knownDigest = hex
        return hex
    }

    func bytes(offset: Int, count: Int, tensor: String) throws -> ByteBuffer {
        if count == 0 { return .empty }
        let file = try mapped()
        try requireUnshrunk(file, end: offset + count, tensor: tensor)
        // A slice per load: pages it was given back are simply re-read from
        // the file if another load of the same range still uses them.
        return MappedSlice(file: file, offset: offset, length: count).buffer
    }

    /// The mapping covers `[0, end)`: the file may have been truncated
    /// between the open and the mapping (bytes past the end would fault).
    private func requireUnshrunk(_ file: MappedFile, end: Int, tensor: String?) throws {
        guard end <= file.size else {
            let subject = tensor.map { "tensor '\($0)': external data file" } ?? "external data file"
            throw ModelFileError(file: modelFile, "\(subject) '\(location)' shrank while being read")
        }
    }
}

/// A whole file mapped read-only; unmapped when the last buffer into it goes.
///
/// The descriptor stays open while the mapping lives so that the writer can
/// copy unchanged bytes from it in the kernel (`copy_file_range`) instead of
/// through the mapping; live mappings are listed in ``MappedFiles``.
final class MappedFile {
    let base: UnsafeRawPointer
    let size: Int
    let fd: Int32

    /// Maps the file open as `descriptor`, through a duplicate of it (the
    /// mapping owns the duplicate; the caller keeps `descriptor`).
    convenience init(duplicating descriptor: Int32, displayName: String) throws {
        let fd = fcntl(descriptor, F_DUPFD_CLOEXEC, 0)
        guard fd >= 0 else {
            throw ModelFileError(file: displayName, "cannot open: \(String(cString: strerror(errno)))")
        }
        try self.init(owning: fd, displayName: displayName)
    }

    /// Maps the file open as `fd`, which it owns (and closes) from now on.
    init(owning fd: Int32, displayName: String) throws {
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw ModelFileError(file: displayName, "cannot stat: \(reason)")
        }
        size = Int(st.st_size)
        if size == 0 {
            close(fd)
            self.fd = -1
            base = UnsafeRawPointer(bitPattern: 1)!  // never dereferenced
            return
        }
        let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let p, p != MAP_FAILED else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw ModelFileError(file: displayName, "cannot map into memory: \(reason)")
        }
        self.fd = fd
        base = UnsafeRawPointer(p)
        MappedFiles.add(self)
    }

    deinit {
        if size > 0 {
            MappedFiles.remove(self)
            munmap(UnsafeMutableRawPointer(mutating: base), size)
            close(fd)
        }
    }
}

/// The live read-only file mappings, so that the writer can tell whether a
/// payload it is asked to write lies in one (and at which file offset).
enum MappedFiles {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var live: [ObjectIdentifier: (base: UInt, size: Int, fd: Int32)] = [:]

    static func add(_ file: MappedFile) {
        lock.lock(); defer { lock.unlock() }
        live[ObjectIdentifier(file)] = (UInt(bitPattern: file.base), file.size, file.fd)
    }

    static func remove(_ file: MappedFile) {
        lock.lock(); defer { lock.unlock() }
        live[ObjectIdentifier(file)] = nil
    }

    /// The descriptor and file offset of `[pointer, pointer + count)` if it
    /// lies wholly inside a live mapping.
    static func locate(_ pointer: UnsafeRawPointer, count: Int) -> (fd: Int32, offset: Int)? {
        let p = UInt(bitPattern: pointer)
        lock.lock(); defer { lock.unlock() }
        for entry in live.values where p >= entry.base && p + UInt(count) <= entry.base + UInt(entry.size) {
            return (entry.fd, Int(p - entry.base))
        }
        return nil
    }
}

/// The directory part of a path ("." for a bare file name).
func parentDirectory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    let dir = String(path[..<slash])
    return dir.isEmpty ? "/" : dir
}

/// The last component of a path.
func baseName(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return path }
    return String(path[path.index(after: slash)...])
}
