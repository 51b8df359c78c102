import ArgumentParser
import Equivalence
import FoldPipeline
import Foundation
import ONNXFile
import ONNXGraph
import ReferenceRuntime

/// `bnfold check A B`: run both models on the same inputs and say whether
/// they compute the same function (exit 0), do not (exit 1), or cannot be
/// compared (exit 2).
struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Run two models on the same inputs and compare their outputs.",
        discussion: """
            Inputs are the given files (--input, NumPy .npy or ONNX TensorProto .pb) \
            or seeded standard-normal random values; symbolic dimensions are bound by \
            --input-shape, else 1. By default B must be within 8 × max(noise, u·scale) \
            of a float64 evaluation of A, where noise is A's own rounding error; with \
            --rtol/--atol the rule is |B − A| ≤ atol + rtol·|A|. Exit 0 equivalent, \
            1 not equivalent, 2 error.
            """)

    @Argument(help: "The reference model (.onnx).")
    var modelA: String

    @Argument(help: "The model to check against it (.onnx).")
    var modelB: String

    @OptionGroup var inputOptions: InputOptions

    @Option(help: "Random input sets to compare on (inputs given as files are the same in each).")
    var samples: Int = 1

    @Option(help: "Seed of the random inputs.")
    var seed: UInt64 = 0

    // `.unconditional`: "--atol -1" is a value (refused by validate with a
    // reason), not a missing value followed by an unknown option.
    @Option(parsing: .unconditional, help: "Relative tolerance (with --atol: the rule |B − A| ≤ atol + rtol·|A|; a missing one is 0).")
    var rtol: Double?

    @Option(parsing: .unconditional, help: "Absolute tolerance (see --rtol).")
    var atol: Double?

    @Flag(help: "Print the report as one JSON object on stdout.")
    var json = false

    @Flag(help: "For CI: also exit 1 when a symbolic or unknown input dimension was left unbound (it is then 1, which may not be the shape the model runs with); bind it with --input-shape or give the input with --input.")
    var strict = false

    @OptionGroup var memory: MemoryOptions

    func validate() throws {
        try memory.validate()
        guard samples >= 1, samples <= 1000 else { throw ValidationError("--samples must be between 1 and 1000") }
        for (flag, value) in [("--rtol", rtol), ("--atol", atol)] {
            if let value, !(value >= 0 && value.isFinite) { throw ValidationError("\(flag) must be a finite number ≥ 0") }
        }
    }

    var tolerance: Tolerance {
        rtol == nil && atol == nil ? .standard : .explicit(rtol: rtol ?? 0, atol: atol ?? 0)
    }

    /// `NAME=d,d,…`, or `NAME:d,d,…` as onnxsim, onnxslim and trtexec take it.
    /// With no `=`, the split is at the last `:`, so TensorFlow names such
    /// as `input_1:0` work too (`input_1:0:1,3,224,224`).
    static func splitShape(_ text: String) throws -> (String, String) {
        if !text.contains("="), let colon = text.lastIndex(of: ":"), colon != text.startIndex,
           text.index(after: colon) != text.endIndex {
            return (String(text[..<colon]), String(text[text.index(after: colon)...]))
        }
        return try split(text, option: "--input-shape")
    }

    static func split(_ text: String, option: String) throws -> (String, String) {
        guard let eq = text.firstIndex(of: "="), eq != text.startIndex, text.index(after: eq) != text.endIndex else {
            throw ValidationError("\(option) '\(text)' must have the form NAME=VALUE")
        }
        return (String(text[..<eq]), String(text[text.index(after: eq)...]))
    }

    func run() throws {
        do {
            let a = try Check.readModel(modelA)
            let b = try Check.readModel(modelB)
            let given = try inputOptions.tensors(for: a, path: modelA)
            let checker = EquivalenceChecker(a: a, b: b, tolerance: tolerance)
            let report: EquivalenceReport
            let line = ProgressLine.onTerminal()
            defer { line?.finish() }
            let budget = try memory.budget()
            do {
                report = try budget.enforce {
                    try checker.compare(given: given, shapes: inputOptions.parsedShapes(), samples: samples, seed: seed,
                                        progress: line.map { line in { line.update(Check.status($0)) } })
                }
                line?.finish()
            } catch let limit as MemoryBudgetExceeded {
                throw overBudget(limit, site: "")
            } catch let error as EquivalenceError {
                throw ModelFileError(file: modelA, error.message)
            } catch let error as RuntimeError {
                if let limit = error.memory {
                    throw overBudget(limit, site: error.node.isEmpty ? "" : " (at node '\(error.node)', \(error.opType))")
                }
                throw ModelFileError(file: modelA, "cannot be run with the reference runtime (or \(modelB)): \(error)")
            }
            var output = CheckReport(modelA: modelA, modelB: modelB, seed: seed, report: report)
            var fed = WholeModelInputs()
            fed.shapes = try inputOptions.parsedShapes()
            fed.given = given
            if let bindings = fed.bindings(a) { output.notes.append("the models ran on \(bindings)") }
            print(json ? output.json() : output.text(), terminator: json ? "\n" : "")
            if !report.equivalent { throw ExitStatus.verificationFailed }
            let unbound = fed.unboundInputs(a)
            if strict, !unbound.isEmpty {
                printError("--strict: unbound dimensions (each was 1) in input(s) \(unbound.map { "'\($0)'" }.joined(separator: ", ")); bind them with --input-shape NAME:d,d,…")
                throw ExitStatus.verificationFailed
            }
        } catch let error as ModelFileError {
            printError(error.description)
            throw ExitStatus.inputError
        }
    }

    /// The comparison stopped by the memory budget (or the allocator): an input error, exit 2.
    func overBudget(_ limit: MemoryBudgetExceeded, site: String) -> ModelFileError {
        ModelFileError(file: modelA, "cannot be compared: the reference runtime \(limit)\(site)")
    }

    /// The progress line's text, e.g. `bnfold check: sample 1/2, A in float64: node 40/176`.
    static func status(_ p: CheckProgress) -> String {
        "bnfold check: sample \(p.sample)/\(p.samples), \(p.run.rawValue): node \(p.node)/\(p.nodes)"
    }

    /// A given input whose shape the model's declaration rules out is the
    /// input file's problem: say so naming the file (the runtime's own check
    /// would name the model).
    static func requireShape(of tensor: RuntimeTensor, from file: String, fits name: String, in model: Model, path: String) throws {
        guard let dims = model.graph?.inputs.first(where: { $0.name == name })?.type?.tensorType?.shape?.dims else { return }
        let declared = dims.map { d -> String in
            switch d.value { case .value(let v)?: "\(v)"; case .param(let p)?: p; case nil: "?" }
        }
        let fits = dims.count == tensor.rank && zip(dims, tensor.shape).allSatisfy { d, n in
            if case .value(let v)? = d.value { return v == Int64(n) }
            return true
        }
        guard fits else {
            throw ModelFileError(file: file, "has shape \(tensor.shape), but input '\(name)' of \(path) is [\(declared.joined(separator: ", "))]")
        }
    }

    static func readModel(_ path: String) throws -> Model {
        let model = try readValidModel(path)
        guard let graph = model.graph else { throw ModelFileError(file: path, "has no graph") }
        let unsupported = Interpreter.unsupportedOperators(in: graph)
        guard unsupported.isEmpty else {
            throw ModelFileError(file: path, "uses operators the reference runtime does not run: \(unsupported.joined(separator: ", "))")
        }
        return model
    }
}

/// Input tensors from files: NumPy `.npy` (recognised by its magic) or an
/// ONNX `TensorProto` (`.pb`, as in the ONNX test data).
enum InputFile {
    static func read(_ path: String) throws -> RuntimeTensor {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ModelFileError(file: path, "does not exist")
        }
        guard !isDirectory.boolValue else { throw ModelFileError(file: path, "is a directory") }
        guard let data = FileManager.default.contents(atPath: path) else { throw ModelFileError(file: path, "cannot be read") }
        let bytes = [UInt8](data)
        guard !bytes.isEmpty else { throw ModelFileError(file: path, "is empty") }
        if bytes.starts(with: [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]) || path.hasSuffix(".npy") {
            do {
                return try NumPyFile.parse(bytes)
            } catch let error as EquivalenceError {
                throw ModelFileError(file: path, error.message)
            }
        }
        return try tensorProto(bytes, path: path)
    }

    /// Decodes a serialized `TensorProto` by wrapping it as the only
    /// initializer of a `ModelProto` (field 7 graph, field 5 initializer), so
    /// that ONNXFile's reader and its checks decode it.
    static func tensorProto(_ bytes: [UInt8], path: String) throws -> RuntimeTensor {
        func lengthDelimited(_ field: UInt8, _ payload: [UInt8]) -> [UInt8] {
            var out: [UInt8] = [field << 3 | 2]
            var n = UInt64(payload.count)
            repeat {
                out.append(UInt8(n & 0x7F) | (n >= 0x80 ? 0x80 : 0))
                n >>= 7
            } while n > 0
            return out + payload
        }
        let model: [UInt8] = [0x08, 0x08] + lengthDelimited(7, lengthDelimited(5, bytes))  // ir_version 8, graph
        let decoded: Model
        do {
            // `contents:` copies: tensors of 1 KiB or more borrow the message's
            // bytes, which must outlive them (a borrowed temporary was read
            // after it was freed).
            decoded = try ModelReader.read(contents: model, name: path)
        } catch let error as ModelFileError {
            throw ModelFileError(file: path, "is neither a .npy file nor a readable TensorProto: \(error.problem)")
        }
        guard let tensors = decoded.graph?.initializers, tensors.count == 1, let tensor = tensors.first else {
            throw ModelFileError(file: path, "is neither a .npy file nor a TensorProto")
        }
        guard tensor.elementType != .undefined else {
            throw ModelFileError(file: path, "is not a TensorProto with an element type (nor a .npy file)")
        }
        do {
            return try RuntimeTensor(tensor)
        } catch {
            throw ModelFileError(file: path, "\(error)")
        }
    }
}

/// What `bnfold check` prints; the JSON field names are part of the contract.
struct CheckReport: Encodable {
    var tool = "bnfold"
    var version = BnfoldVersion.string
    var modelA: String
    var modelB: String
    var samples: Int
    var seed: UInt64
    /// "derived" (the default rule) or "tolerance" (--rtol/--atol).
    var rule: String
    var k: Double?
    var rtol: Double?
    var atol: Double?
    var equivalent: Bool
    var outputs: [OutputComparison]
    /// The input bindings the comparison used, as sentences (the text
    /// report's `note:` lines): which symbolic dimensions became what.
    var notes: [String] = []

    init(modelA: String, modelB: String, seed: UInt64, report: EquivalenceReport) {
        self.modelA = modelA; self.modelB = modelB; self.seed = seed
        samples = report.samples
        switch report.tolerance {
        case .derived(let k): rule = "derived"; self.k = k
        case .explicit(let r, let a): rule = "tolerance"; rtol = r; atol = a
        }
        equivalent = report.equivalent
        outputs = report.outputs
    }

    enum CodingKeys: String, CodingKey {
        case tool, version, modelA, modelB, samples, seed, rule, k, rtol, atol, equivalent, outputs, notes
    }

    func json() -> String { reportJSON(self) }

    func text() -> String {
        func g(_ x: Double?) -> String { x.map { String(format: "%.3g", $0) } ?? "-" }
        var out = TerminalLines()
        out.add("bnfold \(version) check: \(modelA) vs \(modelB)")
        switch rule {
        case "derived":
            out.add("  rule: B within \(g(k)) × max(noise, u·scale) of a float64 run of A; \(samples) sample(s), seed \(seed)")
        default:
            out.add("  rule: |B − A| ≤ \(g(atol)) + \(g(rtol))·|A|; \(samples) sample(s), seed \(seed)")
        }
        for o in outputs {
            let head = "  \(o.name) \(o.elementType) \(o.shape): "
            if let problem = o.problem {
                out.add(head + "NOT EQUIVALENT: \(problem)")
                continue
            }
            out.add(head + "max abs diff \(g(o.maxAbsDiff)), max rel diff \(g(o.maxRelDiff)), cosine \(String(format: "%.9f", o.cosineSimilarity))")
            let detail = if let error = o.error {
                "    error vs float64 \(g(error)) (bound \(g(o.bound)); original's own \(g(o.referenceNoise)), scale \(g(o.scale)))"
            } else {
                "    worst |B − A| / (atol + rtol·|A|) = \(g(o.ratio))"
            }
            out.add(detail + ": \(o.equivalent ? "equivalent" : "NOT EQUIVALENT") (\(g(o.ratio)) of the bound)")
        }
        for note in notes { out.add("  note: \(note)") }
        out.add(equivalent ? "  equivalent" : "  NOT EQUIVALENT")
        return out.text
    }
}

/// `--input NAME=FILE` and `--input-shape NAME=DIMS`, shared by `check` and
/// the fold's verification.
struct InputOptions: ParsableArguments {
    @Option(name: .customLong("input"), help: ArgumentHelp("An input tensor from a file (.npy or TensorProto .pb).", valueName: "name=file"))
    var inputs: [String] = []

    @Option(name: .customLong("input-shape"), help: ArgumentHelp("The shape of a random input, e.g. x=1,3,224,224 (or x:1,3,224,224, as onnxsim and trtexec write it).", valueName: "name=dims"))
    var inputShapes: [String] = []

    func validate() throws {
        _ = try parsedShapes()
        _ = try inputFiles()
    }

    func parsedShapes() throws -> [String: [Int]] {
        var result: [String: [Int]] = [:]
        for item in inputShapes {
            let (name, dims) = try Check.splitShape(item)
            var shape: [Int] = []
            for part in dims.split(separator: ",", omittingEmptySubsequences: false) {
                guard let d = Int(part.trimmingCharacters(in: .whitespaces)), d >= 0, d <= Int(Int32.max) else {
                    throw ValidationError("--input-shape '\(item)': '\(part)' is not a dimension (a whole number ≥ 0)")
                }
                shape.append(d)
            }
            guard result[name] == nil else { throw ValidationError("--input-shape names '\(name)' twice") }
            result[name] = shape
        }
        return result
    }

    func inputFiles() throws -> [(name: String, file: String)] {
        var seen = Set<String>()
        return try inputs.map { item in
            let (name, file) = try Check.split(item, option: "--input")
            guard seen.insert(name).inserted else { throw ValidationError("--input names '\(name)' twice") }
            return (name, file)
        }
    }


    /// The `--input` files read, each checked against `model`'s declaration.
    func tensors(for model: Model, path: String) throws -> [String: RuntimeTensor] {
        var given: [String: RuntimeTensor] = [:]
        for (name, file) in try inputFiles() {
            let tensor = try InputFile.read(file)
            try Check.requireShape(of: tensor, from: file, fits: name, in: model, path: path)
            given[name] = tensor
        }
        return given
    }

    var isEmpty: Bool { inputs.isEmpty && inputShapes.isEmpty }
}
