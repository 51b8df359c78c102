import ArgumentParser
import Foundation
import GraphPasses
import ONNXFile
import ONNXGraph

extension ExternalDataMode: ExpressibleByArgument {}

/// `bnfold IN -o OUT`: read, fold, write, report.
struct Fold: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fold",
        abstract: "Fold a model and write the result (the default command).",
        discussion: """
            Reads IN, runs the passes (all built-in passes unless --passes says \
            otherwise), writes OUT through a temporary file that is renamed into \
            place only when complete, and prints what was folded and what was \
            kept, with the reason.
            """)

    @Argument(help: "The model to read (.onnx).")
    var input: String

    @Option(name: [.short, .customLong("output")], help: "Where to write the folded model.")
    var output: String

    @Option(help: ArgumentHelp(
        "Comma-separated pass names to run, or 'none' to only read and write.",
        discussion: "See 'bnfold passes'.", valueName: "list"))
    var passes: String?

    @Flag(help: "Print the report as one JSON object on stdout.")
    var json = false

    @Option(name: .customLong("external-data"),
            help: "Tensor data layout: keep (as in the input), inline, or external.")
    var externalData: ExternalDataMode = .keep

    @Flag(name: .customLong("in-place"), help: "Allow -o to name the input file itself.")
    var inPlace = false

    func validate() throws {
        _ = try selectedPasses()
    }

    func selectedPasses() throws -> [any GraphPass] {
        guard let passes else { return BuiltinPasses.all }
        if passes == "none" { return [] }
        return try passes.split(separator: ",").map { name in
            let trimmed = name.trimmingCharacters(in: .whitespaces)
            guard let pass = BuiltinPasses.named(trimmed) else {
                throw ValidationError("unknown pass '\(trimmed)'; 'bnfold passes' lists them")
            }
            return pass
        }
    }

    func run() throws {
        let clock = ContinuousClock()
        let start = clock.now
        do {
            if !inPlace, sameFile(input, output) {
                throw ModelFileError(file: output, "is the input file; pass --in-place to overwrite it")
            }
            var model = try ModelReader.read(path: input)
            do {
                try model.validate()
            } catch let error as ModelValidationError {
                throw ModelFileError(file: input, "is not a valid ONNX model: \(error.message)")
            }
            let afterRead = clock.now
            let before = model.graph.map(GraphCensus.init) ?? GraphCensus()
            let manager = PassManager(passes: try selectedPasses())
            let passReport: PassManager.Report
            do {
                passReport = try manager.run(on: &model)
            } catch let error as PassError {
                throw ModelFileError(file: input, error.message)
            }
            let afterPasses = clock.now
            let after = model.graph.map(GraphCensus.init) ?? GraphCensus()
            // The input and its data files must survive whatever -o says.
            let inputDataFiles = ModelReader.externalDataFiles(of: model, modelPath: input)
            if let clash = inputDataFiles.first(where: { sameFile($0, output) }) {
                throw ModelFileError(file: output, "is an external data file of the input model ('\(clash)')")
            }
            var options = WriteOptions(externalData: externalData)
            options.externalThreshold = 1024
            options.protectedFiles = [input] + inputDataFiles
            let written = try ModelWriter.write(model, to: output, options: options)
            let end = clock.now

            var report = FoldReport(
                input: input, output: output,
                passes: manager.passes.map(\.name),
                nodesBefore: before.nodes, nodesAfter: after.nodes,
                batchNorm: .init(found: before.batchNorms,
                                 folded: passReport.remarks.filter { $0.kind == .applied && $0.pass == FoldBatchNorm().name }.count,
                                 kept: after.batchNorms),
                remarks: passReport.remarks,
                iterations: passReport.iterations,
                written: .init(modelBytes: written.modelBytes, externalDataFile: written.externalDataFile,
                               externalTensors: written.externalTensors, externalDataBytes: written.externalDataBytes,
                               switchedToExternalData: written.switchedToExternalData),
                seconds: .init(read: seconds(afterRead - start), passes: seconds(afterPasses - afterRead),
                               write: seconds(end - afterPasses), total: seconds(end - start)))
            if written.switchedToExternalData {
                report.notes.append("the model would exceed protobuf's 2 GiB limit, so tensor data was written as external data")
            }
            let defaultDataName = output.split(separator: "/").last.map(String.init).map { $0 + ".data" }
            if let dataFile = written.externalDataFile, dataFile != defaultDataName {
                report.notes.append("'\(defaultDataName ?? "")' holds the input model's data, so the output's data went to '\(dataFile)'")
            }
            if json {
                print(report.json())
            } else {
                print(report.text(), terminator: "")
            }
        } catch let error as ModelFileError {
            printError(error.description)
            throw ExitStatus.inputError
        }
    }
}

func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
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
        batchNorms = graph.nodes.filter { $0.isOp("BatchNormalization") }.count
    }
}
