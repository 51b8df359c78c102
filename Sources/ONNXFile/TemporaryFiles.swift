#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Temporary files that become the output only when everything is written.
///
/// Each file is created next to its final path (same directory, so the
/// final rename is atomic and never crosses file systems). Files not
/// committed are removed when the set goes away, on error, and — through
/// ``SignalCleanup`` — when the process is interrupted.
final class TemporaryFiles {
    struct File {
        let fd: Int32
        let path: String
        let finalPath: String
    }
    private var files: [File] = []

    func create(near finalPath: String, displayName: String) throws -> File {
        let template = parentDirectory(of: finalPath) + "/." + baseName(of: finalPath) + ".bnfold-tmp.XXXXXX"
        var chars = Array(template.utf8CString)
        let fd = chars.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else {
            let reason = errno == EACCES || errno == EROFS || errno == EPERM
                ? "the directory '\(parentDirectory(of: finalPath))' is not writable"
                : errno == ENOENT ? "the directory '\(parentDirectory(of: finalPath))' does not exist"
                : errno == ENOSPC ? "no space left on the device"
                : String(cString: strerror(errno))
            throw ModelFileError(file: displayName, "cannot write: \(reason)")
        }
        let path = String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        fchmod(fd, 0o644 & ~currentUmask())
        SignalCleanup.register(path)
        let file = File(fd: fd, path: path, finalPath: finalPath)
        files.append(file)
        return file
    }

    /// Closes and renames every file into place, in creation order.
    func commitAll(directory: String) throws {
        for file in files { close(file.fd) }
        for (i, file) in files.enumerated() {
            guard rename(file.path, file.finalPath) == 0 else {
                let reason = String(cString: strerror(errno))
                files = Array(files[i...])
                throw ModelFileError(file: file.finalPath, "cannot write: rename failed: \(reason)")
            }
            SignalCleanup.unregister(file.path)
        }
        files = []
        // Make the renames durable.
        let dfd = open(directory, O_RDONLY | O_DIRECTORY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }

    /// Removes every file not committed.
    func removeAll() {
        for file in files {
            close(file.fd)
            unlink(file.path)
            SignalCleanup.unregister(file.path)
        }
        files = []
    }

    deinit { removeAll() }
}

private func currentUmask() -> mode_t {
    let mask = umask(0)
    umask(mask)
    return mask
}

/// Removes registered temporary files when the process gets SIGINT or
/// SIGTERM, then exits with the conventional 128 + signal status.
///
/// The handler may only call async-signal-safe functions, so paths are kept
/// as C strings in a fixed table that it reads without locks.
public enum SignalCleanup {
    private static let slots = 16
    nonisolated(unsafe) private static let table: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> = {
        let t = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: 16)
        t.initialize(repeating: nil, count: 16)
        return t
    }()

    /// Installs the handlers (idempotent). The CLI calls this at start-up.
    public static func install() {
        _ = table
        let handler: @convention(c) (Int32) -> Void = { sig in
            for i in 0..<SignalCleanup.slots {
                if let p = SignalCleanup.table[i] { unlink(p) }
            }
            signal(sig, SIG_DFL)
            raise(sig)
        }
        signal(SIGINT, handler)
        signal(SIGTERM, handler)
        signal(SIGHUP, handler)
    }

    static func register(_ path: String) {
        for i in 0..<slots where table[i] == nil {
            table[i] = strdup(path)
            return
        }
    }

    static func unregister(_ path: String) {
        for i in 0..<slots {
            if let p = table[i], String(cString: p) == path {
                table[i] = nil
                free(p)
                return
            }
        }
    }
}
