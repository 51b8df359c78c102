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
/// absolute, contains `..`, or resolves (through symlinks) outside that
/// directory; the offset and length must lie within the file. Files are
/// mapped lazily, once each, and shared by all tensors in them.
final class ExternalDataResolver {
    let modelFile: String
    private var mapped: [String: MappedFile] = [:]
    /// The model's directory with symlinks resolved, found on first use
    /// (most models have no external data).
    private var resolvedDirectory: String?

    init(modelFile: String) {
        self.modelFile = modelFile
    }

    private func directory() throws -> String {
        if let resolvedDirectory { return resolvedDirectory }
        let dir = parentDirectory(of: modelFile)
        guard let real = realPath(dir) else {
            throw ModelFileError(file: modelFile, "cannot resolve its directory '\(dir)' to look for external data")
        }
        resolvedDirectory = real
        return real
    }

    struct Entry {
        var location: String
        var offset: Int
        var length: Int?
    }

    func resolve(_ tensor: Tensor) throws -> ExternalBytes {
        let name = tensor.name ?? "<unnamed>"
        func fail(_ problem: String) -> ModelFileError {
            ModelFileError(file: modelFile, "tensor '\(name)': external data \(problem)")
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
        let directory = try directory()
        let joined = directory + "/" + location
        guard let real = realPath(joined) else {
            throw fail("file '\(location)' does not exist next to the model")
        }
        guard real.hasPrefix(directory == "/" ? "/" : directory + "/") else {
            throw fail("location '\(location)' leads outside the model's directory (through a symbolic link)")
        }
        var st = stat()
        guard stat(real, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            throw fail("file '\(location)' is not a regular file")
        }
        let fileSize = Int(st.st_size)
        guard let count = tensor.elementCount else { throw fail("belongs to a tensor with invalid dimensions \(tensor.dims)") }
        let expected = tensor.elementType.byteCount(elements: count)
        if tensor.elementType.bitWidth != nil && expected == nil {
            throw fail("belongs to a tensor whose size in bytes does not fit in memory")
        }
        let size = length ?? expected ?? (fileSize - offset)
        if let expected, size != expected {
            throw fail("length \(size) does not match its shape \(tensor.dims) of \(tensor.elementType), which needs \(expected) bytes")
        }
        guard offset <= fileSize, size <= fileSize - offset else {
            throw fail("of \(size) bytes at offset \(offset) lies past the end of '\(location)' (\(fileSize) bytes)")
        }
        if let checksum {
            let actual = try digest(of: real, location: location)
            guard checksum.lowercased() == actual else {
                throw fail("checksum mismatch: '\(location)' has SHA-1 \(actual), the model expects \(checksum)")
            }
        }
        let description = "'\(location)' at offset \(offset)"
        return ExternalBytes(description: description) { [self] in
            try self.bytes(real: real, location: location, offset: offset, count: size, tensor: name)
        }
    }

    private var digests: [String: String] = [:]

    /// SHA-1 of a whole data file, computed once per file.
    private func digest(of real: String, location: String) throws -> String {
        if let known = digests[real] { return known }
        let file = try mappedFile(real: real, location: location)
        let hex = SHA1.hex(of: UnsafeRawBufferPointer(start: file.size > 0 ? file.base : nil, count: file.size))
        digests[real] = hex
        return hex
    }

    private func mappedFile(real: String, location: String) throws -> MappedFile {
        if let m = mapped[real] { return m }
        let file = try MappedFile(path: real, displayName: location)
        mapped[real] = file
        return file
    }

    private func bytes(real: String, location: String, offset: Int, count: Int, tensor: String) throws -> ByteBuffer {
        if count == 0 { return .empty }
        let file = try mappedFile(real: real, location: location)
        guard offset + count <= file.size else {
            throw ModelFileError(file: modelFile, "tensor '\(tensor)': external data file '\(location)' shrank while being read")
        }
        // A slice per load: pages it was given back are simply re-read from
        // the file if another load of the same range still uses them.
        return MappedSlice(file: file, offset: offset, length: count).buffer
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

    init(path: String, displayName: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            throw ModelFileError(file: displayName, "cannot open: \(String(cString: strerror(errno)))")
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            close(fd)
            throw ModelFileError(file: displayName, "cannot stat: \(String(cString: strerror(errno)))")
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
            close(fd)
            throw ModelFileError(file: displayName, "cannot map into memory: \(String(cString: strerror(errno)))")
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

/// realpath(3): the absolute path with symlinks resolved, or nil if it does not exist.
func realPath(_ path: String) -> String? {
    guard let r = realpath(path, nil) else { return nil }
    defer { free(r) }
    return String(cString: r)
}
