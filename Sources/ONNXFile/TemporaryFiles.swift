#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Temporary files that become the output only when everything is written.
///
/// Each file is created next to its final path (same directory, so the
/// final rename is atomic and never crosses file systems). On Linux it is
/// created *without a name* (`O_TMPFILE`): until the commit links it into
/// the directory (`linkat` through `/proc/self/fd`) and renames it over the
/// target, nothing can see it and nothing can outlive the process — a
/// `kill -9` mid-write leaves no file at all. Where the file system or the
/// kernel does not offer that (or `/proc` is not mounted), a named
/// `mkstemp` file is used, as it is between the link and the rename; files
/// not committed are removed when the set goes away, on error, and —
/// through ``SignalCleanup`` — when the process is interrupted, and a later
/// run removes what a killed one left (``removeStale(in:)``).
final class TemporaryFiles {
    struct File {
        /// -1 once closed.
        fileprivate(set) var fd: Int32
        /// Empty while the file is anonymous (O_TMPFILE, not yet linked).
        fileprivate(set) var path: String
        let finalPath: String
        var isAnonymous: Bool { path.isEmpty }
    }
    private var files: [File] = []

    /// Creates a temporary for `finalPath` with permission bits `mode`
    /// (given to the file as they are: the caller has applied the umask)
    /// and, when `owner` is given and the process may, that owner.
    func create(near finalPath: String, displayName: String, mode: mode_t = 0o644 & ~currentUmask(),
                owner: (uid: uid_t, gid: gid_t)? = nil) throws -> File {
        let directory = parentDirectory(of: finalPath)
        var info = stat()
        if finalPath.hasSuffix("/") || (stat(finalPath, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR) {
            throw ModelFileError(file: displayName, "cannot write: is a directory")
        }
        TemporaryFiles.removeStale(in: directory)
        if let fd = TemporaryFiles.anonymousFile(in: directory) {
            if let owner { _ = fchown(fd, owner.uid, owner.gid) }
            fchmod(fd, mode)
            let file = File(fd: fd, path: "", finalPath: finalPath)
            files.append(file)
            return file
        }
        let template = TemporaryFiles.template(for: finalPath)
        var chars = Array(template.utf8CString)
        // Created and registered with the clean-up signals held back, so that
        // an interrupt cannot fall between the two and leave the file behind.
        let (fd, error) = SignalCleanup.deferringSignals { () -> (Int32, Int32) in
            let fd = chars.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
            guard fd >= 0 else { return (fd, errno) }
            chars.withUnsafeBufferPointer { SignalCleanup.register($0.baseAddress!) }
            return (fd, 0)
        }
        guard fd >= 0 else {
            throw ModelFileError(file: displayName, "cannot write: \(TemporaryFiles.describeCreateError(error, directory: directory))")
        }
        let path = String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if let owner { _ = fchown(fd, owner.uid, owner.gid) }  // as editors do; refused unless root or our own
        fchmod(fd, mode)
        let file = File(fd: fd, path: path, finalPath: finalPath)
        files.append(file)
        return file
    }

    /// What every temporary's name carries after `.NAME`, followed by the
    /// creating process's id: `.out.onnx.bnfold-tmp-1234-a8Xk2q`.
    static let marker = ".bnfold-tmp-"

    /// `DIR/.NAME.bnfold-tmp-PID-XXXXXX`, for mkstemp.
    static func template(for finalPath: String) -> String {
        parentDirectory(of: finalPath) + "/." + baseName(of: finalPath) + marker + "\(getpid())-XXXXXX"
    }

    /// An unnamed file in `directory` (O_TMPFILE), or nil where that is not
    /// available — or where it could not be named later (no /proc).
    static func anonymousFile(in directory: String) -> Int32? {
        #if os(Linux)
        // O_TMPFILE is __O_TMPFILE | O_DIRECTORY; the C macro does not import.
        let flags = Int32(0o20000000) | O_DIRECTORY | O_WRONLY | O_CLOEXEC
        let fd = open(directory, flags, mode_t(0o600))
        guard fd >= 0 else { return nil }
        guard access("/proc/self/fd/\(fd)", F_OK) == 0 else { close(fd); return nil }
        return fd
        #else
        return nil
        #endif
    }

    /// Gives an anonymous file a temporary name of bnfold's pattern next to
    /// its target (a fresh one: the six characters are random), registered
    /// for clean-up. Called with the clean-up signals held back.
    private static func link(_ fd: Int32, for finalPath: String) -> (path: String?, error: Int32) {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".utf8)
        let base = String(template(for: finalPath).dropLast(6))
        for _ in 0..<100 {
            let suffix = String(decoding: (0..<6).map { _ in alphabet.randomElement()! }, as: UTF8.self)
            let path = base + suffix
            if linkat(AT_FDCWD, "/proc/self/fd/\(fd)", AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0 {
                path.utf8CString.withUnsafeBufferPointer { SignalCleanup.register($0.baseAddress!) }
                return (path, 0)
            }
            if errno != EEXIST { return (nil, errno) }
        }
        return (nil, EEXIST)
    }

    /// Removes temporaries that a process killed without a chance to clean
    /// up (`kill -9`, a power cut) left in `directory`: names of bnfold's
    /// pattern whose process no longer exists. Another live run's
    /// temporaries are left alone (its pid answers `kill(pid, 0)`).
    static func removeStale(in directory: String) {
        guard let dir = opendir(directory) else { return }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard name.hasPrefix("."), let range = name.range(of: marker, options: .backwards) else { continue }
            let rest = name[range.upperBound...]
            guard let dash = rest.firstIndex(of: "-"), let pid = Int32(rest[..<dash]), pid > 0,
                  rest[rest.index(after: dash)...].count == 6 else { continue }
            if kill(pid, 0) != 0 && errno == ESRCH {
                unlink(directory + "/" + name)
            }
        }
    }

    /// Why a file could not be created in `directory`, as the end of a sentence.
    static func describeCreateError(_ error: Int32, directory: String) -> String {
        var info = stat()
        let directoryExists = stat(directory, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
        switch error {
        case EACCES, EPERM:
            return "the directory '\(directory)' is not writable"
        case EROFS:
            return "the directory '\(directory)' is on a read-only file system"
        case ENOENT where directoryExists:
            // /proc and the like: the directory is there but takes no new files.
            return "the directory '\(directory)' is not writable"
        case ENOENT:
            return "the directory '\(directory)' does not exist"
        case ENOTDIR:
            return "'\(firstNonDirectory(in: directory) ?? directory)' is not a directory"
        case ENOSPC:
            return "no space left on the device"
        case EDQUOT:
            return "the disk quota is exhausted"
        case ENAMETOOLONG:
            return "the file name is too long"
        default:
            return String(cString: strerror(error))
        }
    }

    /// The first leading part of `path` that exists and is not a directory.
    private static func firstNonDirectory(in path: String) -> String? {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += (prefix.isEmpty || prefix.hasSuffix("/") ? "" : "/") + component
            var info = stat()
            guard stat(prefix, &info) == 0 else { return nil }
            if (info.st_mode & S_IFMT) != S_IFDIR { return prefix }
        }
        return nil
    }

    /// Closes and renames every file into place, in creation order.
    ///
    /// SIGINT, SIGTERM and SIGHUP are held back during the renames, so an
    /// interrupt cannot leave the data file renamed but not the model that
    /// refers to it; a signal that arrives meanwhile takes effect after.
    func commitAll(directory: String) throws {
        var failure: (path: String, error: Int32)?
        SignalCleanup.deferringSignals {
            for i in files.indices where files[i].isAnonymous {
                let (path, error) = TemporaryFiles.link(files[i].fd, for: files[i].finalPath)
                guard let path else {
                    failure = (files[i].finalPath, error)
                    return
                }
                files[i].path = path
            }
        }
        closeAll()
        if let failure {
            throw ModelFileError(file: failure.path, "cannot write: \(TemporaryFiles.describeCreateError(failure.error, directory: directory))")
        }
        SignalCleanup.deferringSignals {
            while let file = files.first {
                guard rename(file.path, file.finalPath) == 0 else {
                    failure = (file.finalPath, errno)
                    return
                }
                SignalCleanup.unregister(file.path)
                files.removeFirst()
            }
        }
        if let failure {
            let reason = failure.error == EISDIR ? "is a directory" : String(cString: strerror(failure.error))
            throw ModelFileError(file: failure.path, "cannot write: rename failed: \(reason)")
        }
        // Make the renames durable.
        let dfd = open(directory, O_RDONLY | O_DIRECTORY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }

    /// Removes every file not committed.
    func removeAll() {
        closeAll()
        for file in files where !file.isAnonymous {
            unlink(file.path)
            SignalCleanup.unregister(file.path)
        }
        files = []
    }

    private func closeAll() {
        for i in files.indices where files[i].fd >= 0 {
            close(files[i].fd)
            files[i].fd = -1
        }
    }

    deinit { removeAll() }
}

func currentUmask() -> mode_t {
    let mask = umask(0)
    umask(mask)
    return mask
}

/// Removes registered temporary files when the process gets SIGINT, SIGTERM
/// or SIGHUP, then dies of that signal (the shell reports 128 + signal).
///
/// The handler may only call async-signal-safe functions, so paths are kept
/// as C strings in a fixed table that it reads without locks; writers of the
/// table take a lock and hold the signals back on their thread.
public enum SignalCleanup {
    private static let slots = 16
    nonisolated(unsafe) private static let table: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> = {
        let t = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: 16)
        t.initialize(repeating: nil, count: 16)
        return t
    }()
    nonisolated(unsafe) private static let lock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()
    /// The signals after which temporary files are removed.
    private static let cleanupSignals: [Int32] = [SIGINT, SIGTERM, SIGHUP]

    /// Installs the handlers (idempotent). The CLI calls this at start-up,
    /// on the main thread.
    ///
    /// A signal that was ignored when the process started stays ignored
    /// (`nohup bnfold …` must survive a hang-up). SIGXFSZ is ignored, so that
    /// a write past a file size limit (`ulimit -f`) fails with EFBIG and is
    /// reported, and the temporary file removed, instead of killing the process.
    public static func install() {
        _ = table
        _ = lock
        let handler: @convention(c) (Int32) -> Void = { sig in
            for i in 0..<SignalCleanup.slots {
                if let p = SignalCleanup.table[i] { unlink(p) }
            }
            signal(sig, SIG_DFL)
            raise(sig)
        }
        var caught = sigset_t()
        sigemptyset(&caught)
        for sig in cleanupSignals where !isIgnored(sig) {
            signal(sig, handler)
            sigaddset(&caught, sig)
        }
        // A blocked mask survives exec: a parent that spawns bnfold from a
        // thread that blocks signals (libdispatch's workers block most;
        // Foundation's Process does not reset the mask) would otherwise make
        // it deaf to SIGTERM. The signals caught here are unblocked.
        pthread_sigmask(SIG_UNBLOCK, &caught, nil)
        signal(SIGXFSZ, SIG_IGN)
        // A crash (a bug, or an input file truncated under us: SIGBUS) must
        // not leave temporary files behind either. The handler removes them
        // and re-raises with the default action, so the crash itself is
        // reported as before (minus the Swift backtrace).
        for sig in [SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT] {
            signal(sig, handler)
        }
    }

    private static func isIgnored(_ sig: Int32) -> Bool {
        var current = sigaction()
        guard sigaction(sig, nil, &current) == 0, let handler = current.__sigaction_handler.sa_handler else { return false }
        return unsafeBitCast(handler, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self)
    }

    /// Runs `body` with the clean-up signals blocked on this thread; one that
    /// arrives meanwhile is delivered when they are unblocked.
    static func deferringSignals<T>(_ body: () throws -> T) rethrows -> T {
        var set = sigset_t(), previous = sigset_t()
        sigemptyset(&set)
        for sig in cleanupSignals { sigaddset(&set, sig) }
        pthread_sigmask(SIG_BLOCK, &set, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        return try body()
    }

    static func register(_ path: UnsafePointer<CChar>) {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        for i in 0..<slots where table[i] == nil {
            table[i] = strdup(path)
            return
        }
    }

    static func unregister(_ path: String) {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        for i in 0..<slots {
            if let p = table[i], String(cString: p) == path {
                table[i] = nil
                free(p)
                return
            }
        }
    }
}

/// An exclusive `flock` on a directory, held while a writer plans, writes
/// and renames its files there: two runs writing the same output take turns
/// instead of interleaving their renames (which paired one run's model with
/// the other's data). Advisory: it orders bnfold runs, not other programs.
/// A directory that cannot be opened or locked is written without the lock.
final class DirectoryLock {
    private var fd: Int32

    init(_ directory: String) {
        fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            while flock(fd, LOCK_EX) != 0 && errno == EINTR {}
        }
    }

    func release() {
        if fd >= 0 { close(fd); fd = -1 }
    }

    deinit { release() }
}
