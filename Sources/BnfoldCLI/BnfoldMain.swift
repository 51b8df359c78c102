import ReferenceRuntime
import ArgumentParser
import Foundation
import ONNXFile
import ONNXGraph

/// The `bnfold` command: subcommands and the exit-code contract.
///
/// Exit codes are what CI scripts rely on: 0 success, 1 a verification
/// failed or models differ, 2 a usage or input error. Every error is one
/// line on stderr naming the file and the problem.
public struct Bnfold: ParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "bnfold",
        abstract: "Fold BatchNormalization into neighbouring weights of ONNX models, and say what was kept and why.",
        version: BnfoldVersion.string,
        subcommands: [Fold.self, Check.self, Inspect.self, ListPasses.self],
        defaultSubcommand: Fold.self
    )
    public init() {}

    /// `bnfold --help`: the default command's usage and options first — what
    /// most users run, and what every usage error points to — then the
    /// subcommands (ArgumentParser's root help would list only these).
    static func rootHelp() -> String {
        let root = Bnfold.helpMessage()
        let fold = Bnfold.helpMessage(for: Fold.self)
            .replacingOccurrences(of: "USAGE: bnfold fold ", with: "USAGE: bnfold [fold] ")
        let subcommands = root.range(of: "SUBCOMMANDS:").map { String(root[$0.lowerBound...]) } ?? ""
        return fold.trimmingCharacters(in: .newlines) + "\n\n" + subcommands
    }
}

/// The version printed by `--version` and in reports.
public enum BnfoldVersion {
    public static let string = "0.1.0"
}

/// An error that has been reported already; carries the exit status.
struct ExitStatus: Error {
    let code: Int32
    static let inputError = ExitStatus(code: 2)
    static let verificationFailed = ExitStatus(code: 1)
}

/// Exit statuses, one place.
enum ExitCodes {
    static let success: Int32 = 0
    static let verificationFailed: Int32 = 1
    static let usageOrInputError: Int32 = 2
}

/// Writes one line to standard error. The message is escaped
/// (``Swift/String/escapedForTerminal``): names in it come from the model,
/// and may hold newlines or terminal escape sequences.
func printError(_ message: String) {
    FileHandle.standardError.write(Data(("bnfold: error: " + message.escapedForTerminal + "\n").utf8))
}

public enum BnfoldMain {
    /// Parses the command line, runs the command, and exits with the contract's status.
    public static func main(_ arguments: [String] = Array(CommandLine.arguments.dropFirst())) -> Never {
        Parallelism.configureBLAS()
        SignalCleanup.install()
        if arguments == ["--help"] || arguments == ["-h"] || arguments == ["help"] {
            print(Bnfold.rootHelp())
            exit(ExitCodes.success)
        }
        do {
            var command = try Bnfold.parseAsRoot(arguments)
            try command.run()
            exit(ExitCodes.success)
        } catch let status as ExitStatus {
            exit(status.code)
        } catch {
            let code = Bnfold.exitCode(for: error)
            if code == .success {
                // --help, --version: ArgumentParser prints them as "errors".
                print(Bnfold.fullMessage(for: error))
                exit(ExitCodes.success)
            }
            let message = Bnfold.message(for: error).split(separator: "\n").first.map(String.init) ?? "invalid arguments"
            printError(message.hasPrefix("Error: ") ? String(message.dropFirst(7)) : message + " (see 'bnfold --help')")
            exit(ExitCodes.usageOrInputError)
        }
    }
}
