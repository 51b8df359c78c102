import Equivalence
import Foundation
import GraphPasses
import ONNXFile
import ONNXGraph
import ReferenceRuntime

/// `bnfold IN -o OUT` as a library: read and validate, run the passes,
/// verify the result against the original, write it, and say what happened.
///
/// The flow runs one way — read → passes → verify → write — and every step
/// that can refuse does so before anything is written: a model that fails
/// verification is never written, and the input (with its data files) is
/// never a destination. The command line only parses options into this type
/// and formats its ``Outcome``; tests drive the same type, so a broken pass
/// injected here (``passes`` is any list of ``GraphPass``) is caught by the
/// same verification a user's run gets.
public struct FoldPipeline {
    /// The passes, in order (``BuiltinPasses/all`` for a default run).
    public var passes: [any GraphPass]
    /// See ``PassManager/assumeConstantInputs``.
    public var assumeConstantInputs = false
    /// False skips verification (`--no-verify`): the outcome says so.
    public var verifies = true
    /// What the whole-model check is fed (symbolic dimensions, given tensors).
    public var inputs = WholeModelInputs()
    /// The reference runtime's memory budget for verification; nil: the
    /// process default (``MemoryBudget/processDefault()``).
    public var budget: MemoryBudget?
    /// Status lines while verification runs (a terminal's progress line).
    public var progress: ((String) -> Void)?
    /// How the output is written; ``run(input:output:)`` adds the input and
    /// its data files to ``WriteOptions/protectedFiles``.
    public var writeOptions = WriteOptions()
    /// Allow the output to be the input file itself (`--in-place`).
    public var allowsInPlace = false

    public init(passes: [any GraphPass]) {
        self.passes = passes
    }

    /// Why a run stopped. `verificationFailed` is the one a CI cares about:
    /// the passes produced a model that does not compute the original's
    /// numbers, so nothing was written.
    public enum Failure: Error, CustomStringConvertible, Sendable {
        /// The input cannot be read, is not valid, or the output may not be written.
        case input(ModelFileError)
        /// The folded model disagrees with the original (the message names the check).
        case verificationFailed(file: String, message: String)

        public var description: String {
            switch self {
            case .input(let error): error.description
            case .verificationFailed(let file, let message): "\(file): verification failed: \(message)"
            }
        }
    }

    /// What a run did, for a report.
    public struct Outcome: Sendable {
        public var before: GraphCensus
        public var after: GraphCensus
        public var passNames: [String]
        public var passReport: PassManager.Report
        public var verification: FoldVerification
        public var written: WriteSummary
        /// Seconds spent reading, in the passes, verifying and writing.
        public var seconds: (read: Double, passes: Double, verify: Double, write: Double)
        /// BatchNormalizations removed (every folding pass removes its BN; none adds one).
        public var foldedCount: Int { before.batchNorms - after.batchNorms }
    }

    /// Reads `input` (`-`: standard input), folds, verifies and writes
    /// `output` (a path, `-`, a device or FIFO; see ``ModelWriter``).
    public func run(input: String, output: String) throws(Failure) -> Outcome {
        do {
            return try runThrowing(input: input, output: output)
        } catch let failure as Failure {
            throw failure
        } catch let error as ModelFileError {
            throw .input(error)
        } catch {
            throw .input(ModelFileError(file: input, "\(error)"))
        }
    }

    private func runThrowing(input: String, output: String) throws -> Outcome {
        let clock = ContinuousClock()
        let start = clock.now
        if !allowsInPlace, sameFile(input, output) {
            throw ModelFileError(file: output, "is the input file; pass --in-place to overwrite it")
        }
        var model = try FoldPipeline.readValidModel(input)
        // The graph as validated: a run whose passes changed nothing need
        // not have the writer validate it again.
        let validatedRevision = model.graph?.revision
        // Every file of the input, listed from the model as read: the passes
        // may drop every tensor that lived in a data file, and that file
        // must still never be written.
        let inputDataFiles = ModelReader.externalDataFiles(of: model, modelPath: input)
        if let clash = inputDataFiles.first(where: { sameFile($0, output) }) {
            throw ModelFileError(file: output, "is an external data file of the input model ('\(clash)')")
        }
        let afterRead = clock.now
        let before = model.graph.map(GraphCensus.init) ?? GraphCensus()
        // A value-type copy: the passes leave it alone (folded tensors
        // produce their bytes lazily from the original's buffers).
        let original = model
        let manager = PassManager(passes: passes, assumeConstantInputs: assumeConstantInputs)
        let passReport = try FoldPipeline.runPasses(manager, on: &model, input: input)
        let afterPasses = clock.now
        let after = model.graph.map(GraphCensus.init) ?? GraphCensus()
        let verification: FoldVerification
        if verifies {
            let budget = try self.budget ?? FoldPipeline.processBudget()
            let inputs = self.inputs
            let progress = self.progress
            verification = budget.enforce {
                FoldVerification.run(original: original, folded: model, passes: passReport, inputs: inputs, progress: progress)
            }
            if let failure = verification.failure {
                throw Failure.verificationFailed(file: input, message: failure)
            }
        } else {
            verification = FoldVerification(skipped: "--no-verify")
        }
        let afterVerify = clock.now
        // The input and its data files must survive whatever the output names.
        var options = writeOptions
        if model.graph?.revision == validatedRevision { options.validatesModel = false }
        options.protectedFiles += [input] + inputDataFiles
        var inputInfo = stat()
        if options.newFileMode == nil, stat(input, &inputInfo) == 0 { options.newFileMode = UInt32(inputInfo.st_mode) & 0o777 }
        let written = try ModelWriter.write(model, to: output, options: options)
        let end = clock.now
        return Outcome(before: before, after: after, passNames: manager.activePasses.map(\.name),
                       passReport: passReport, verification: verification, written: written,
                       seconds: (Self.seconds(afterRead - start), Self.seconds(afterPasses - afterRead),
                                 Self.seconds(afterVerify - afterPasses), Self.seconds(end - afterVerify)))
    }

    /// A duration in seconds, as reports print it.
    public static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }

    /// Reads a model and checks it is valid ONNX; problems are input errors
    /// naming the file. `-` is standard input.
    public static func readValidModel(_ path: String) throws -> Model {
        let model = path == "-" ? try ModelReader.readStandardInput() : try ModelReader.read(path: path)
        do {
            try model.validate()
        } catch let error as ModelValidationError {
            throw ModelFileError(file: path, "is not a valid ONNX model: \(error.message)")
        }
        return model
    }

    /// Runs the passes; a pass that cannot interpret the model is an input
    /// error naming the file.
    public static func runPasses(_ manager: PassManager, on model: inout Model, input: String) throws -> PassManager.Report {
        do {
            return try manager.run(on: &model)
        } catch let error as PassError {
            throw ModelFileError(file: input, error.message)
        }
    }

    /// The default budget; a malformed `BNFOLD_MAX_MEMORY` is an input error naming the variable.
    public static func processBudget() throws -> MemoryBudget {
        do {
            return try MemoryBudget.processDefault()
        } catch let error as MemoryBudgetError {
            throw ModelFileError(file: MemoryBudget.environmentVariable, error.description)
        }
    }
}

/// Whether two paths name the same file (the second may not exist yet).
public func sameFile(_ a: String, _ b: String) -> Bool {
    var sa = stat(), sb = stat()
    guard stat(a, &sa) == 0, stat(b, &sb) == 0 else { return false }
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
}


/// Node, operator and BatchNormalization counts of a graph, for reports.
public struct GraphCensus: Sendable {
    public var nodes = 0
    /// Including those inside If/Loop/Scan bodies (passes fold there too).
    public var batchNorms = 0
    /// Nodes of the main graph per operator (`domain:Op` outside the
    /// default domain), so a report can say what changed, as onnxslim's does.
    public var ops: [String: Int] = [:]
    public init() {}
    public init(_ graph: Graph) {
        nodes = graph.nodes.count
        for node in graph.nodes {
            let domain = node.domain ?? ""
            let key = domain.isEmpty || domain == "ai.onnx" ? node.opType : "\(domain):\(node.opType)"
            ops[key, default: 0] += 1
        }
        batchNorms = graph.nodes.reduce(0) { count, node in
            count + (node.isOp("BatchNormalization") ? 1 : 0) + node.subgraphs.map { GraphCensus($0).batchNorms }.reduce(0, +)
        }
    }
}
