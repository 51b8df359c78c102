import ArgumentParser
import Equivalence
import FoldPipeline
import Foundation
import GraphPasses
import ONNXFile
import ONNXGraph
import ReferenceRuntime

extension ExternalDataMode: ExpressibleByArgument {}

/// `bnfold IN -o OUT`: read, fold, write, report.
struct Fold: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fold",
        abstract: "Fold a model and write the result (the default command).",
        discussion: """
            Reads IN, runs the passes (all built-in passes unless --passes says \
            otherwise), verifies the result against the original (every folded \
            Conv + BatchNormalization pair, and the whole model when the reference \
            runtime runs all its operators; --no-verify skips this; a failure \
            writes nothing and exits 1), writes OUT through a temporary file that is renamed into \
            place only when complete, and prints what was folded and what was \
            kept, with the reason.
            """)

    @Argument(help: "The model to read (.onnx).")
    var input: String

    @Option(name: [.short, .customLong("output")], help: ArgumentHelp(
        "Where to write the folded model: a file, '-' for standard output, or a device or FIFO.",
        discussion: "A symbolic link has its target replaced; a device, FIFO or '-' receives the bytes as they are written (the report then goes to standard error), and cannot take an external data file."))
    var output: String

    @OptionGroup var passOptions: PassOptions

    @Option(help: ArgumentHelp("Which remarks the report lists: none, missed (default) or all. --json always has every remark.",
                               valueName: "which"))
    var remarks: RemarkFilter = .missed

    @Flag(help: "Print the report as one JSON object on stdout.")
    var json = false

    @Option(name: .customLong("external-data"),
            help: "Tensor data layout: keep (as in the input), inline, or external.")
    var externalData: ExternalDataMode = .keep

    @Flag(name: .customLong("in-place"), help: "Allow -o to name the input file itself.")
    var inPlace = false

    @Flag(name: .customLong("no-verify"), help: "Do not check the folded model against the original before writing it.")
    var noVerify = false

    @Flag(help: "For CI: exit 1 (after writing the output and the report) when a BatchNormalization is kept or the whole-model check did not pass.")
    var strict = false

    @OptionGroup var memory: MemoryOptions

    @OptionGroup(title: "Whole-model verification inputs") var inputOptions: InputOptions

    func validate() throws {
        // Caught here, before anything is read: an empty path used to run the
        // whole fold and then fail at the final rename.
        guard !output.isEmpty else { throw ValidationError("-o/--output must name a file, not an empty string") }
        try memory.validate()
    }

    func run() throws {
        let clock = ContinuousClock()
        let start = clock.now
        var pipeline = FoldPipeline(passes: try passOptions.selected() + FoldHooks.current.extraPasses())
        pipeline.assumeConstantInputs = passOptions.assumeConstantInputs
        pipeline.verifies = !noVerify
        pipeline.allowsInPlace = inPlace
        pipeline.writeOptions = WriteOptions(externalData: externalData)
        pipeline.writeOptions.externalThreshold = 1024
        pipeline.writeOptions.beforeCommit = FoldHooks.current.beforeCommit
        // A status line on a terminal while verification runs (silent for the first second).
        let line = noVerify ? nil : ProgressLine.onTerminal()
        defer { line?.finish() }
        pipeline.progress = line.map { line in { line.update($0) } }
        let outcome: FoldPipeline.Outcome
        do {
            if !noVerify {
                pipeline.budget = try memory.budget()
                // Read once more here only when bindings were given: they are checked against the model first.
                if !inputOptions.isEmpty {
                    pipeline.inputs = try WholeModelInputs(options: inputOptions, model: FoldPipeline.readValidModel(input), path: input)
                }
            }
            outcome = try pipeline.run(input: input, output: output)
        } catch let failure as FoldPipeline.Failure {
            line?.finish()
            printError(failure.description)
            if case .verificationFailed = failure { throw ExitStatus.verificationFailed }
            throw ExitStatus.inputError
        } catch let error as ModelFileError {
            printError(error.description)
            throw ExitStatus.inputError
        }
        line?.finish()
        let verification = outcome.verification
        let written = outcome.written
        let foldedCount = outcome.foldedCount
        var report = FoldReport(
            input: input, output: output,
            passes: outcome.passNames,
            nodesBefore: outcome.before.nodes, nodesAfter: outcome.after.nodes,
            batchNorm: .init(found: outcome.before.batchNorms, folded: foldedCount, kept: outcome.after.batchNorms),
            remarks: outcome.passReport.remarks,
            iterations: outcome.passReport.iterations,
            written: .init(modelBytes: written.modelBytes, externalDataFile: written.externalDataFile,
                           externalTensors: written.externalTensors, externalDataBytes: written.externalDataBytes,
                           switchedToExternalData: written.switchedToExternalData),
            verification: verification.summary,
            seconds: .init(read: outcome.seconds.read, passes: outcome.seconds.passes, verify: outcome.seconds.verify,
                           write: outcome.seconds.write, total: FoldPipeline.seconds(clock.now - start)))
        report.ops = FoldReport.opCounts(before: outcome.before.ops, after: outcome.after.ops)
        report.notes += verification.notes
        if !noVerify, verification.summary.pairsChecked + verification.summary.pairsSkipped < foldedCount {
            report.notes.append("\(foldedCount - verification.summary.pairsChecked - verification.summary.pairsSkipped) folded pair(s) could not be matched in the output and were not checked locally")
        }
        if written.switchedToExternalData {
            report.notes.append("the model would exceed protobuf's 2 GiB limit, so tensor data was written as external data")
        }
        let defaultDataName = output.split(separator: "/").last.map(String.init).map { $0 + ".data" }
        if let dataFile = written.externalDataFile, dataFile != defaultDataName {
            report.notes.append("'\(defaultDataName ?? "")' holds the input model's data, so the output's data went to '\(dataFile)'")
        }
        // With `-o -` the model is standard output, so the report goes to standard error.
        let reportText = json ? report.json() + "\n" : report.text(remarks: remarks)
        if output == "-" {
            FileHandle.standardError.write(Data(reportText.utf8))
        } else {
            print(reportText, terminator: "")
        }
        if strict, let complaint = Fold.strictComplaint(kept: outcome.after.batchNorms, wholeModel: verification.summary.wholeModel) {
            printError("--strict: \(complaint)")
            throw ExitStatus.verificationFailed
        }
    }
}

extension Fold {
    /// Why `--strict` fails this run, or nil: a kept BatchNormalization, or
    /// a whole-model check that did not pass (skipped included — nothing
    /// folded is a pass only when no BN was there to fold).
    static func strictComplaint(kept: Int, wholeModel: String) -> String? {
        var problems: [String] = []
        if kept > 0 { problems.append("\(kept) BatchNormalization node(s) kept (the report says why)") }
        if wholeModel != "passed" && wholeModel != "skipped: nothing was folded" {
            problems.append("the whole-model check \(wholeModel.hasPrefix("skipped") ? "was " + wholeModel : wholeModel)")
        }
        return problems.isEmpty ? nil : problems.joined(separator: "; ")
    }
}

/// Reads a model and checks it is valid ONNX; problems are input errors naming the file.
func readValidModel(_ path: String) throws -> Model { try FoldPipeline.readValidModel(path) }

/// `--passes`, `--disable` and `--assume-constant-inputs`, shared by the commands that run passes.
struct PassOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Comma-separated pass names to run, in this order, or 'none' to only read and write.",
        discussion: "See 'bnfold passes'.", valueName: "list"))
    var passes: String?

    @Option(help: ArgumentHelp("Comma-separated pass names to leave out of the pipeline.", valueName: "list"))
    var disable: String?

    @Flag(name: .customLong("assume-constant-inputs"), help: ArgumentHelp(
        "Treat initializers that are also graph inputs as constants (IR version 4 or later).",
        discussion: "Such a value is a default a caller may replace at run time, so it is not folded unless this is given; a folded one is no longer listed as a graph input."))
    var assumeConstantInputs = false

    func validate() throws {
        _ = try selected()
    }

    /// The pipeline: the named passes (default: every built-in pass, in
    /// order) without the disabled ones. Unknown names are usage errors.
    func selected() throws -> [any GraphPass] {
        func names(_ list: String, _ option: String) throws -> [String] {
            try list.split(separator: ",", omittingEmptySubsequences: false).map { part in
                let name = part.trimmingCharacters(in: .whitespaces)
                guard BuiltinPasses.named(name) != nil else {
                    let hint = closestPassName(to: name).map { " (did you mean '\($0)'?)" } ?? ""
                    throw ValidationError("\(option): unknown pass '\(name)'\(hint); 'bnfold passes' lists them")
                }
                return name
            }
        }
        var chosen: [String]
        switch passes {
        case nil: chosen = BuiltinPasses.all.map(\.name)
        case "none"?: chosen = []
        case let list?: chosen = try names(list, "--passes")
        }
        if let disable {
            let off = Set(try names(disable, "--disable"))
            chosen.removeAll { off.contains($0) }
        }
        return chosen.compactMap(BuiltinPasses.named)
    }
}

/// Which remarks a human-readable report lists.
enum RemarkFilter: String, ExpressibleByArgument, CaseIterable {
    case none, missed, all

    func includes(_ remark: Remark) -> Bool {
        switch self {
        case .none: false
        case .missed: remark.kind == .missed
        case .all: true
        }
    }
}

extension WholeModelInputs {
    /// `--input-shape` and `--input`, checked against the model (input errors name `path`).
    init(options: InputOptions, model: Model, path: String) throws {
        try self.init(shapes: options.parsedShapes(), given: options.tensors(for: model, path: path), model: model, path: path)
    }
}

/// Hooks a test driver installs around ``BnfoldMain/main(_:)`` (a task
/// local, so nothing in a normal run can set them): passes appended to the
/// selected ones (a deliberately wrong fold, to see verification stop it) and
/// a pause before the output is committed (to interrupt a write at a known
/// point). Tests/Tools/BnfoldTestDriver is the one program that sets them.
public struct FoldHooks: Sendable {
    public var extraPasses: @Sendable () -> [any GraphPass] = { [] }
    public var beforeCommit: (@Sendable () -> Void)?
    public init() {}
    @TaskLocal public static var current = FoldHooks()
}

/// `--max-memory`, shared by the commands that run the reference runtime.
struct MemoryOptions: ParsableArguments {
    @Option(name: .customLong("max-memory"), help: ArgumentHelp(
        "Most memory the reference runtime may hold for a check (e.g. 512M, 4G; default: half of the memory this process can get, or \(MemoryBudget.environmentVariable)). A fold skips verification that would need more; check exits 2.",
        valueName: "size"))
    var maxMemory: String?

    func validate() throws {
        if let maxMemory, MemoryBudget(parsing: maxMemory) == nil {
            throw ValidationError("--max-memory '\(maxMemory)' is not a size (examples: 512M, 4G, 1.5GiB)")
        }
    }

    /// The budget: the option, else the environment variable, else the machine's default.
    func budget() throws -> MemoryBudget {
        if let maxMemory, let budget = MemoryBudget(parsing: maxMemory) { return budget }
        return try FoldPipeline.processBudget()
    }
}

/// The built-in pass whose name is nearest to `name` (edit distance at most
/// a third of its length, or a prefix/abbreviation match), for the
/// "did you mean" of an unknown `--passes`/`--disable` entry.
func closestPassName(to name: String) -> String? {
    func distance(_ a: [Character], _ b: [Character]) -> Int {
        var row = Array(0...b.count)
        for (i, x) in a.enumerated() {
            var previous = row[0]
            row[0] = i + 1
            for (j, y) in b.enumerated() {
                let current = row[j + 1]
                row[j + 1] = min(row[j] + 1, row[j + 1] + 1, previous + (x == y ? 0 : 1))
                previous = current
            }
        }
        return row[b.count]
    }
    let names = BuiltinPasses.all.map(\.name)
    let scored = names.map { ($0, distance(Array(name.lowercased()), Array($0))) }.sorted { $0.1 < $1.1 }
    if let best = scored.first, best.1 <= max(2, best.0.count / 3) { return best.0 }
    // fold-bn → fold-batchnorm: each word an abbreviation of the
    // candidate's (same first letter, its letters in order).
    func abbreviates(_ short: Substring, _ long: Substring) -> Bool {
        guard short.first == long.first else { return false }
        var rest = long[...]
        for c in short {
            guard let i = rest.firstIndex(of: c) else { return false }
            rest = rest[rest.index(after: i)...]
        }
        return true
    }
    let words = name.lowercased().split(separator: "-")
    return names.first { candidate in
        let parts = candidate.split(separator: "-")
        return parts.count == words.count && zip(words, parts).allSatisfy { abbreviates($0, $1) }
    }
}
