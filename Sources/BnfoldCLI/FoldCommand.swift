import ArgumentParser
import Equivalence
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
        do {
            if !inPlace, sameFile(input, output) {
                throw ModelFileError(file: output, "is the input file; pass --in-place to overwrite it")
            }
            var model = try readValidModel(input)
            // Every file of the input, listed from the model as read: the
            // passes may drop every tensor that lived in a data file, and
            // that file must still never be written.
            let inputDataFiles = ModelReader.externalDataFiles(of: model, modelPath: input)
            if let clash = inputDataFiles.first(where: { sameFile($0, output) }) {
                throw ModelFileError(file: output, "is an external data file of the input model ('\(clash)')")
            }
            let afterRead = clock.now
            let before = model.graph.map(GraphCensus.init) ?? GraphCensus()
            // A value-type copy: the passes leave it alone (folded tensors
            // produce their bytes lazily from the original's buffers).
            let original = model
            let manager = PassManager(passes: try passOptions.selected(), assumeConstantInputs: passOptions.assumeConstantInputs)
            let passReport = try runPipeline(manager, on: &model, input: input)
            let afterPasses = clock.now
            let after = model.graph.map(GraphCensus.init) ?? GraphCensus()
            // Every pass that folds a BatchNormalization removes it; none adds one.
            let foldedCount = before.batchNorms - after.batchNorms
            if ProcessInfo.processInfo.environment["BNFOLD_TEST_BREAK_FOLD"] == "1" {
                TestHook.breakFirstFold(&model, original: original)
            }
            let verification: Verification
            if noVerify {
                verification = Verification(skipped: "--no-verify")
            } else {
                let budget = try memory.budget()
                let inputs = try WholeModelInputs(options: inputOptions, model: original, path: input)
                // A status line on a terminal while verification runs (silent for the first second).
                let line = ProgressLine.onTerminal()
                defer { line?.finish() }
                verification = budget.enforce {
                    Verification.run(original: original, folded: model,
                                     modified: passReport.remarks.contains { $0.kind == .applied }, inputs: inputs,
                                     progress: line.map { line in { line.update($0) } })
                }
                line?.finish()
                if let failure = verification.failure {
                    printError(ModelFileError(file: input, "verification failed: \(failure)").description)
                    throw ExitStatus.verificationFailed
                }
            }
            let afterVerify = clock.now
            // The input and its data files must survive whatever -o says.
            var options = WriteOptions(externalData: externalData)
            options.externalThreshold = 1024
            options.protectedFiles = [input] + inputDataFiles
            var inputInfo = stat()
            if stat(input, &inputInfo) == 0 { options.newFileMode = UInt32(inputInfo.st_mode) & 0o777 }
            let written = try ModelWriter.write(model, to: output, options: options)
            let end = clock.now

            var report = FoldReport(
                input: input, output: output,
                passes: manager.activePasses.map(\.name),
                nodesBefore: before.nodes, nodesAfter: after.nodes,
                batchNorm: .init(found: before.batchNorms, folded: foldedCount, kept: after.batchNorms),
                remarks: passReport.remarks,
                iterations: passReport.iterations,
                written: .init(modelBytes: written.modelBytes, externalDataFile: written.externalDataFile,
                               externalTensors: written.externalTensors, externalDataBytes: written.externalDataBytes,
                               switchedToExternalData: written.switchedToExternalData),
                verification: verification.summary,
                seconds: .init(read: seconds(afterRead - start), passes: seconds(afterPasses - afterRead),
                               verify: seconds(afterVerify - afterPasses),
                               write: seconds(end - afterVerify), total: seconds(end - start)))
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
            if strict, let complaint = Fold.strictComplaint(kept: after.batchNorms, wholeModel: verification.summary.wholeModel) {
                printError("--strict: \(complaint)")
                throw ExitStatus.verificationFailed
            }
        } catch let error as ModelFileError {
            printError(error.description)
            throw ExitStatus.inputError
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

func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
}

/// Reads a model and checks it is valid ONNX; problems are input errors naming the file.
/// `-` is standard input.
func readValidModel(_ path: String) throws -> Model {
    let model = path == "-" ? try ModelReader.readStandardInput() : try ModelReader.read(path: path)
    do {
        try model.validate()
    } catch let error as ModelValidationError {
        throw ModelFileError(file: path, "is not a valid ONNX model: \(error.message)")
    }
    return model
}

/// Runs the pipeline; a pass that cannot interpret the model is an input error naming the file.
func runPipeline(_ manager: PassManager, on model: inout Model, input: String) throws -> PassManager.Report {
    do {
        return try manager.run(on: &model)
    } catch let error as PassError {
        throw ModelFileError(file: input, error.message)
    }
}

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

/// Whether two paths name the same file (the second may not exist yet).
func sameFile(_ a: String, _ b: String) -> Bool {
    var sa = stat(), sb = stat()
    guard stat(a, &sa) == 0, stat(b, &sb) == 0 else { return false }
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
}

/// Counts used in reports.
struct GraphCensus {
    var nodes = 0
    var batchNorms = 0
    init() {}
    init(_ graph: Graph) {
        nodes = graph.nodes.count
        // Passes fold inside If/Loop/Scan bodies too, so BNs there count.
        batchNorms = graph.nodes.reduce(0) { count, node in
            count + (node.isOp("BatchNormalization") ? 1 : 0) + node.subgraphs.map { GraphCensus($0).batchNorms }.reduce(0, +)
        }
    }
}

/// The fold command's verification (``FoldVerifier``) and its report entry.
struct Verification {
    var summary: FoldReport.VerificationSummary
    /// The first failure, as the rest of the error line; nil when verification passed or was skipped.
    var failure: String?
    var notes: [String] = []

    init(skipped reason: String) {
        summary = .init(pairsChecked: 0, pairsFailed: 0, wholeModel: "skipped: \(reason)", worstRatio: 0)
    }

    static func run(original: Model, folded: Model, modified: Bool, inputs: WholeModelInputs = WholeModelInputs(),
                    progress: ((String) -> Void)? = nil) -> Verification {
        var v = Verification(skipped: "")
        // Pairs are cut out of the original as the folds saw it: computed
        // constants (a dynamo exporter's Expand(CastLike(0, X), Shape(W))
        // bias) evaluated by fold-constants, which is exact by construction.
        // The whole-model check below still runs the true original.
        var pairReference = original
        _ = try? PassManager(passes: [FoldConstants()]).run(on: &pairReference)
        // The pair count for the status line (only when there is one to show).
        let expected = progress == nil ? 0
            : FoldVerifier.foldedPairs(original: pairReference.graph ?? Graph(), folded: folded.graph ?? Graph()).count
        let pairs = FoldVerifier.verifyPairs(original: pairReference, folded: folded,
                                             progress: progress.map { show in { show(Verification.pairStatus($0, of: expected, $1)) } })
        let skipped = pairs.filter { $0.skipped != nil }
        v.summary.pairsChecked = pairs.count - skipped.count
        v.summary.pairsFailed = pairs.filter(\.failed).count
        v.summary.pairsSkipped = skipped.count
        if let first = skipped.first {
            v.notes.append("\(skipped.count) folded pair(s) were not checked (\(first.batchNorm) folded into \(first.producer): \(first.skipped ?? "")"
                + (skipped.count > 1 ? "; and \(skipped.count - 1) more" : "") + ")")
        }
        var worst = pairs.filter { $0.skipped == nil }.map(\.ratio).max() ?? 0
        let sampled = pairs.filter { $0.channelsChecked < $0.channels }
        if !sampled.isEmpty {
            v.notes.append("\(sampled.count) large folded pair(s) were checked on a sample of their output channels ("
                + sampled.map { "\($0.producer): \($0.channelsChecked) of \($0.channels)" }.joined(separator: ", ") + ")")
        }
        if let bad = pairs.first(where: \.failed) {
            v.failure = "\(bad.failureDescription)\(pairs.count > 1 ? " (\(v.summary.pairsFailed) of \(pairs.count) pairs failed)" : "")"
        }
        if !modified {
            v.summary.wholeModel = "skipped: nothing was folded"
        } else {
            if let bindings = inputs.bindings(original) { v.notes.append("the whole-model check ran on \(bindings)") }
            switch FoldVerifier.verifyWholeModel(original: original, folded: folded, shapes: inputs.shapes, given: inputs.given,
                                                 progress: progress.map { show in { show(Verification.wholeModelStatus($0)) } }) {
            case .passed(let report):
                v.summary.wholeModel = "passed"
                worst = max(worst, report.outputs.map(\.ratio).max() ?? 0)
            case .failed(let report):
                v.summary.wholeModel = "failed"
                worst = max(worst, report.outputs.map(\.ratio).max() ?? .infinity)
                if v.failure == nil, let bad = report.outputs.first(where: { !$0.equivalent }) {
                    v.failure = "whole model, output '\(bad.name)': " + (bad.problem ?? String(
                        format: "error %.3g against float64 exceeds the bound %.3g (ratio %.3g; the original's own error %.3g, scale %.3g)",
                        bad.error ?? .nan, bad.bound ?? .nan, bad.ratio, bad.referenceNoise ?? .nan, bad.scale ?? .nan))
                }
            case .skipped(let reason):
                v.summary.wholeModel = "skipped: \(reason)"
            }
        }
        v.summary.worstRatio = worst
        return v
    }
}

extension Verification {
    /// `bnfold: verifying pair 3/20 (bn3 folded into conv3)`; the count is
    /// the main graph's pairs (bodies' pairs go past it).
    static func pairStatus(_ pair: Int, of total: Int, _ label: String) -> String {
        "bnfold: verifying pair \(pair)/\(max(total, pair)) (\(label))"
    }

    /// `bnfold: verifying the whole model, A in float64: node 40/176`.
    static func wholeModelStatus(_ p: CheckProgress) -> String {
        "bnfold: verifying the whole model, \(p.run.rawValue): node \(p.node)/\(p.nodes)"
    }
}

/// What the whole-model check is fed: `--input-shape` bindings and
/// `--input` tensors (else symbolic dimensions are 1 and inputs random).
struct WholeModelInputs {
    var shapes: [String: [Int]] = [:]
    var given: [String: RuntimeTensor] = [:]

    init() {}
    init(options: InputOptions, model: Model, path: String) throws {
        shapes = try options.parsedShapes()
        given = try options.tensors(for: model, path: path)
        guard !options.isEmpty else { return }
        do {
            // Bindings the model rules out are input errors now, not a skipped check later.
            _ = try EquivalenceChecker(a: model, b: model).inputSpecs(shapes: shapes)
        } catch let error as EquivalenceError {
            throw ModelFileError(file: path, error.message)
        }
    }

    /// "input 'X' [2, 3, 64, 64] (N = 2 from --input-shape), …" for every
    /// input with a symbolic or unknown dimension, or given as a file; nil
    /// when the model has none (nothing was chosen for the user).
    func bindings(_ model: Model) -> String? {
        guard let graph = model.graph, let specs = try? InputSpec.inputs(of: graph, shapes: shapes) else { return nil }
        var parts: [String] = []
        for spec in specs {
            if given[spec.name] != nil { parts.append("input '\(spec.name)' from --input"); continue }
            let dims = graph.inputs.first { $0.name == spec.name }?.type?.tensorType?.shape?.dims ?? []
            let free = dims.enumerated().compactMap { i, d -> String? in
                if case .value? = d.value { return nil }
                let label = if case .param(let p)? = d.value { p } else { "axis \(i)" }
                return "\(label) = \(spec.shape[i])"
            }
            guard !free.isEmpty else { continue }
            let source = shapes[spec.name] != nil ? ", from --input-shape" : ": unbound; --input-shape sets it"
            parts.append("input '\(spec.name)' \(spec.shape) (\(free.joined(separator: ", "))\(source))")
        }
        return parts.isEmpty ? nil : parts.joined(separator: "; ")
    }
}

/// TEST HOOK, not a feature: with BNFOLD_TEST_BREAK_FOLD=1 in the
/// environment, the fold command scales the weight of the first op a BN was
/// folded into by 1.01 after the passes, so that tests can see verification fail (exit 1,
/// no output file). Confined to this file; nothing else reads the variable.
enum TestHook {
    static func breakFirstFold(_ model: inout Model, original: Model) {
        guard let go = original.graph, var g = model.graph,
              let pair = FoldVerifier.foldedPairs(original: go, folded: g).first else { return }
        let weightName = g.nodes[pair.folded].inputs[1]
        guard let i = g.initializers.firstIndex(where: { $0.name == weightName }),
              let count = g.initializers[i].elementCount, count > 0,
              let broken = try? g.initializers[i].scaledBlocks(blockSize: count, scale: [1.01], channelOfBlock: { _ in 0 })
        else { return }
        g.initializers[i] = broken
        model.graph = g
    }
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
        do {
            return try MemoryBudget.processDefault()
        } catch let error as MemoryBudgetError {
            throw ModelFileError(file: MemoryBudget.environmentVariable, error.description)
        }
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
