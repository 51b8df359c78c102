import Foundation

/// Paths the tests share: the bundled fixtures, the built `bnfold` binary,
/// and scratch directories that clean up after themselves.
public enum TestPaths {
    /// The repository root (this file is Tests/TestSupport/FixturePaths.swift).
    public static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `Fixtures/` in the repository.
    public static var fixtures: URL { root.appendingPathComponent("Fixtures") }

    /// The path of a fixture, e.g. `fixture("conv2d_bn.onnx")`.
    public static func fixture(_ name: String) -> String { fixtures.appendingPathComponent(name).path }

    /// The `bnfold` executable built alongside the tests (BNFOLD_BIN overrides).
    public static var bnfoldBinary: String {
        if let env = ProcessInfo.processInfo.environment["BNFOLD_BIN"] { return env }
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("bnfold").path,
            root.appendingPathComponent(".build/debug/bnfold").path,
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[1]
    }

    /// `bnfold` with test hooks (Tests/Tools/BnfoldTestDriver): the
    /// environment variables BNFOLD_TEST_BREAK_FOLD and
    /// BNFOLD_TEST_PAUSE_BEFORE_COMMIT work only here.
    public static var testDriverBinary: String {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("BnfoldTestDriver").path,
            root.appendingPathComponent(".build/debug/BnfoldTestDriver").path,
        ]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[1]
    }

    /// The manifest entries of the fixtures (Fixtures/manifest.json).
    public static func manifest() throws -> [[String: Any]] {
        let data = try Data(contentsOf: fixtures.appendingPathComponent("manifest.json"))
        let json = try JSONSerialization.jsonObject(with: data)
        if let dict = json as? [String: Any], let list = dict["fixtures"] as? [[String: Any]] { return list }
        return json as? [[String: Any]] ?? []
    }
}

/// A fresh directory under the system temp dir, removed when this goes away.
public final class ScratchDirectory {
    public let url: URL
    public var path: String { url.path }

    public init() {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("bnfold-test-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    public func file(_ name: String) -> String { url.appendingPathComponent(name).path }

    /// Names of the files in the directory, sorted.
    public func contents() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
    }

    deinit { try? FileManager.default.removeItem(at: url) }
}

/// The result of running a command.
public struct CommandResult {
    /// The exit status, or the signal's number if a signal ended the process.
    public var status: Int32
    public var stdout: String
    public var stderr: String
    /// The signal that ended the process, nil if it exited.
    public var signal: Int32? = nil
    /// Non-empty lines of stderr.
    public var stderrLines: [String] { stderr.split(separator: "\n").map(String.init) }
}

/// Runs the `bnfold` binary with `arguments` (and `environment` added to this
/// process's environment).
public func runBnfold(_ arguments: [String], environment: [String: String] = [:]) throws -> CommandResult {
    try runCommand(TestPaths.bnfoldBinary, arguments, environment: environment)
}
