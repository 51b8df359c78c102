#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ONNXGraph

/// Opens files named by a model (external data locations) so that what is
/// opened is guaranteed to lie inside the model's directory.
///
/// Checking a path first (realpath, stat) and opening it later lets anyone
/// who can write to the directory swap the file in between — for a symbolic
/// link to a file outside, or a FIFO that blocks `open` forever. So nothing
/// here is opened by a full path: the walk starts at a descriptor of the
/// directory and opens one component at a time with `openat` and
/// `O_NOFOLLOW`, which never follows a symbolic link. When a component is a
/// symbolic link, its target is read (`readlinkat`) and walked the same way,
/// relative to the directory holding the link: a link that stays inside the
/// model's directory works as before, one whose target is absolute or climbs
/// (`..`) above the directory is refused. Magic links (`/proc/<pid>/fd/N`)
/// read as absolute targets or as names that do not exist, so they are
/// refused too. The last component is opened with `O_NONBLOCK`, so a FIFO
/// cannot hold the open; the caller checks the descriptor (`fstat`) is a
/// regular file and reads only through it.
///
/// Why not `openat2(RESOLVE_BENEATH)`: glibc has no wrapper and Swift cannot
/// call the variadic `syscall`; the walk gives the same guarantee on every
/// kernel.
enum OpenBeneath {
    enum Failure: Error, Equatable {
        /// An absolute symbolic link, or `..` above the starting directory.
        case leadsOutside
        /// A component does not exist.
        case missing
        /// The name resolves to the directory itself.
        case isDirectory
        /// More than ``maxLinks`` symbolic links on the way (a loop).
        case tooManyLinks
        /// Any other `openat` failure, with its errno.
        case system(Int32)
    }

    /// Symbolic links followed at most in one walk (Linux's own limit is 40).
    static let maxLinks = 40

    /// Opens `relativePath` read-only beneath the directory `root`.
    ///
    /// - Returns: a descriptor (`O_RDONLY | O_NONBLOCK | O_CLOEXEC`) the
    ///   caller owns and must close. It may be a directory, a FIFO or a
    ///   device: the caller checks its type.
    static func open(_ relativePath: String, beneath root: Int32) throws(Failure) -> Int32 {
        // Components still to walk, the next one last.
        var pending = relativePath.split(separator: "/", omittingEmptySubsequences: true).reversed().map(String.init)
        // Directories opened on the way down, below `root`; `..` pops one.
        var directories: [Int32] = []
        defer { directories.forEach { _ = close($0) } }
        var linksFollowed = 0
        while let component = pending.popLast() {
            if component == "." { continue }
            if component == ".." {
                guard let up = directories.popLast() else { throw .leadsOutside }
                close(up)
                continue
            }
            let current = directories.last ?? root
            let isLast = pending.isEmpty
            let flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW | (isLast ? O_NONBLOCK : O_DIRECTORY)
            let fd = withPathBytes(component) { openat(current, $0, flags) }
            if fd >= 0 {
                if isLast { return fd }
                directories.append(fd)
                continue
            }
            let openError = errno
            // A symbolic link under O_NOFOLLOW fails with ELOOP (last
            // component) or ENOTDIR (with O_DIRECTORY); anything else that
            // fails that way is not a link and readlinkat says so.
            if openError == ELOOP || openError == ENOTDIR, let target = linkTarget(component, in: current) {
                linksFollowed += 1
                guard linksFollowed <= maxLinks else { throw .tooManyLinks }
                guard !target.hasPrefix("/") else { throw .leadsOutside }
                pending.append(contentsOf: target.split(separator: "/", omittingEmptySubsequences: true)
                    .reversed().map(String.init))
                continue
            }
            throw openError == ENOENT ? .missing : .system(openError)
        }
        // Nothing but "." (or a link to "."): the directory itself.
        throw .isDirectory
    }

    /// The target of the symbolic link `name` in `directory`, or nil if it is
    /// not a link (or the target is longer than PATH_MAX).
    private static func linkTarget(_ name: String, in directory: Int32) -> String? {
        let capacity = Int(PATH_MAX)
        var buffer = [CChar](repeating: 0, count: capacity + 1)
        let length = buffer.withUnsafeMutableBufferPointer { raw -> Int in
            guard let base = raw.baseAddress else { return -1 }
            return withPathBytes(name) { readlinkat(directory, $0, base, capacity) }
        }
        guard length >= 0, length < capacity else { return nil }
        return buffer.withUnsafeBufferPointer { raw in
            String(protoBytes: UnsafeRawBufferPointer(start: raw.baseAddress, count: length))
        }
    }

    /// `name` as the C path of the bytes it stands for: a location read from
    /// a model keeps its bytes (``ProtoBytes``), invalid UTF-8 included.
    private static func withPathBytes<R>(_ name: String, _ body: (UnsafePointer<CChar>) -> R) -> R {
        (name.protoBytes + [0]).withUnsafeBufferPointer { bytes in
            bytes.baseAddress!.withMemoryRebound(to: CChar.self, capacity: bytes.count, body)
        }
    }
}
