#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What an output path names, decided once before anything is written.
///
/// A file-rewriting tool must never replace what is not a regular file:
/// renaming a temporary over `/dev/null` (as root) destroys the device, and
/// over a symbolic link it replaces the link with a file. So:
/// - `-` is standard output and a character/block device, FIFO or socket
///   receives the bytes written straight into it (opened without `O_CREAT`,
///   so nothing new can appear in `/dev`);
/// - a symbolic link is followed to its final target, which is replaced
///   atomically in its own directory; the link stays a link;
/// - anything else is a regular file (existing or new), replaced through a
///   temporary in its directory.
enum OutputTarget {
    /// Bytes go straight to `fd` (standard output or a device/FIFO); `close` says whether the writer owns it.
    case stream(fd: Int32, close: Bool)
    /// A regular file (existing or not) at `path`, symbolic links resolved;
    /// `existing` is its status when it exists (mode and owner are kept).
    case file(path: String, existing: stat?)

    /// The most symbolic links followed from an output path (Linux's own limit is 40).
    static let maxLinks = 40

    static func resolve(_ path: String, displayName: String) throws -> OutputTarget {
        if path == "-" { return .stream(fd: STDOUT_FILENO, close: false) }
        guard !path.isEmpty else { throw ModelFileError(file: displayName, "cannot write: the output path is empty") }
        var current = path
        for _ in 0...maxLinks {
            var info = stat()
            guard lstat(current, &info) == 0 else {
                // Nothing there (or a dangling link's missing target): a new regular file.
                return .file(path: current, existing: nil)
            }
            switch info.st_mode & S_IFMT {
            case S_IFLNK:
                guard let target = linkTarget(current) else {
                    throw ModelFileError(file: displayName, "cannot write: cannot read the symbolic link '\(current)'")
                }
                // A relative target is relative to the link's directory.
                current = target.hasPrefix("/") ? target : parentDirectory(of: current) + "/" + target
            case S_IFREG:
                return .file(path: current, existing: info)
            case S_IFDIR:
                throw ModelFileError(file: displayName, "cannot write: is a directory")
            default:
                let fd = open(current, O_WRONLY | O_CLOEXEC | O_NOCTTY)
                guard fd >= 0 else {
                    throw ModelFileError(file: displayName, "cannot write: \(String(cString: strerror(errno)))")
                }
                return .stream(fd: fd, close: true)
            }
        }
        throw ModelFileError(file: displayName, "cannot write: too many levels of symbolic links")
    }

    private static func linkTarget(_ path: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = buffer.withUnsafeMutableBufferPointer { readlink(path, $0.baseAddress!, Int(PATH_MAX)) }
        guard length > 0, length < Int(PATH_MAX) else { return nil }
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
