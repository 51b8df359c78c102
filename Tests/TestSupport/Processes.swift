import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Runs `executable` with `arguments` (and `environment` added to this
/// process's environment), waits for it, and returns its status and streams.
public func runCommand(_ executable: String, _ arguments: [String],
                       environment: [String: String] = [:]) throws -> CommandResult {
    let process = BackgroundProcess(executable, arguments, environment: environment)
    try process.start()
    return try process.wait()
}

/// Runs `bnfold` from `/bin/sh` after `ulimit -f blocks`, so that writing
/// past `blocks` blocks (512 or 1024 bytes, depending on the shell) fails.
public func runBnfold(_ arguments: [String], fileSizeLimitBlocks blocks: Int) throws -> CommandResult {
    try runCommand("/bin/sh", ["-c", "ulimit -f \(blocks) && exec \"$0\" \"$@\"", TestPaths.bnfoldBinary] + arguments)
}

/// A process started in the background, to be watched and signalled.
public final class BackgroundProcess: @unchecked Sendable {
    public let process = Process()
    private let out = Pipe(), err = Pipe()
    private var outData = Data(), errData = Data()
    private let readers = DispatchGroup()

    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.standardOutput = out
        process.standardError = err
    }

    /// `bnfold` with `arguments`.
    public convenience init(bnfold arguments: [String], environment: [String: String] = [:]) {
        self.init(TestPaths.bnfoldBinary, arguments, environment: environment)
    }

    /// `bnfold` with test hooks (``TestPaths/testDriverBinary``) and `arguments`.
    public convenience init(testDriver arguments: [String], environment: [String: String]) {
        self.init(TestPaths.testDriverBinary, arguments, environment: environment)
    }

    /// Starts the process with SIGINT, SIGTERM, SIGHUP and SIGXFSZ unblocked,
    /// as from a shell, except those in `blocking`, which it starts with
    /// blocked. (A child inherits the signal mask of the thread that spawns
    /// it, and the test runner's threads — libdispatch workers — block most
    /// signals.)
    public func start(blocking: [Int32] = []) throws {
        var unblock = sigset_t(), block = sigset_t(), previous = sigset_t()
        sigemptyset(&unblock)
        sigemptyset(&block)
        for sig in [SIGINT, SIGTERM, SIGHUP, SIGXFSZ] { sigaddset(&unblock, sig) }
        for sig in blocking { sigaddset(&block, sig) }
        pthread_sigmask(SIG_UNBLOCK, &unblock, &previous)
        pthread_sigmask(SIG_BLOCK, &block, nil)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        try process.run()
        // Drain both pipes while the process runs, so it can never block on a full pipe.
        for (pipe, keyPath) in [(out, \BackgroundProcess.outData), (err, \BackgroundProcess.errData)] {
            readers.enter()
            DispatchQueue.global().async {
                let data = pipe.fileHandleForReading.readDataToEndOfFile()
                self[keyPath: keyPath] = data
                self.readers.leave()
            }
        }
    }

    public var processIdentifier: Int32 { process.processIdentifier }

    /// Sends `signal` to the process.
    public func send(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// Waits for the process to end; after `timeout` it is killed and this throws.
    public func wait(timeout: Duration = .seconds(600)) throws -> CommandResult {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now >= deadline {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                throw ProcessTimeout(description: "\(process.executableURL?.path ?? "?") did not end within \(timeout)")
            }
            usleep(5_000)
        }
        process.waitUntilExit()
        readers.wait()
        let signalled = process.terminationReason == .uncaughtSignal
        return CommandResult(status: process.terminationStatus,
                             stdout: String(decoding: outData, as: UTF8.self),
                             stderr: String(decoding: errData, as: UTF8.self),
                             signal: signalled ? process.terminationStatus : nil)
    }
}

public struct ProcessTimeout: Error, CustomStringConvertible {
    public var description: String
}

/// Polls `condition` every few milliseconds until it holds (true) or
/// `timeout` passes (false).
public func waitUntil(timeout: Duration, _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        if ContinuousClock.now >= deadline { return false }
        usleep(2_000)
    }
    return true
}

/// bnfold's temporary files for outputs in `directory` while `process`
/// runs: named ones (`.NAME.bnfold-tmp-PID-XXXXXX`) and unnamed ones
/// (`O_TMPFILE`), which exist only as the process's open descriptors —
/// `/proc/PID/fd/N` reads `DIR/#INODE (deleted)` for them.
public func temporaryFiles(of process: BackgroundProcess, in directory: String) -> [String] {
    let named = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
        .filter { $0.hasPrefix(".") && $0.contains(".bnfold-tmp-") }
    let fdDirectory = "/proc/\(process.processIdentifier)/fd"
    let resolved = URL(fileURLWithPath: directory).resolvingSymlinksInPath().path
    let unnamed = ((try? FileManager.default.contentsOfDirectory(atPath: fdDirectory)) ?? []).compactMap { fd -> String? in
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: fdDirectory + "/" + fd),
              target.hasSuffix(" (deleted)"), target.hasPrefix(resolved + "/#") || target.hasPrefix(directory + "/#") else { return nil }
        return target
    }
    return named + unnamed
}
