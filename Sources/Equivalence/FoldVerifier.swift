import Foundation
import Synchronization
import ONNXGraph
import GraphPasses
import ReferenceRuntime

/// Checks a folded model against the model it came from, before it is
/// written (`bnfold IN -o OUT` verifies by default).
///
/// Two checks, both with ``EquivalenceChecker``'s default rule (B within
/// 8 · max(noise, u · scale) of a float64 evaluation of the original; for
/// float16/bfloat16 models this means "no less accurate than the original"):
///
/// - **Pairs** (``verify(_:irVersion:opsetImports:seed:progress:)``): every
///   fold the passes recorded (`RewriteRecord`: a BN or a Mul/Add into the
///   op before it, a BN into the op after it; in every graph, each step of
///   a chain on its own) is cut out as two one-output models — the nodes it
///   replaced with the constants they read, and the op that replaced them
///   with its new constants — and run on a seeded random input, in the
///   model's element type and in float64. Convolutions get
///   `[1, C_in, s…]` with a small spatial size s
///   (``pairSpatialSize(kernel:dilation:)``: the dilated kernel, at least 4):
///   convolution is shift-invariant, so a small image exercises every weight
///   of every output channel at a fraction of the cost of the declared size.
///   Gemm and MatMul get `[M, K]` (`[K, M]` for a Gemm with `transA = 1`):
///   K from the weight, M from a `[M, N]` bias if there is one, else 4 rows.
/// - **Whole model** (`verifyWholeModel(original:folded:seed:)`): both
///   models on one random input set at their declared input sizes (symbolic
///   dimensions 1), when the reference runtime runs every operator of the
///   original and its initializers total at most
///   ``wholeModelWeightLimit`` bytes (above that, the reference runtime's
///   three evaluations — element type, float64, folded — take longer than a
///   fold should; the pair check still covers every fold).
public enum FoldVerifier {
    /// The initializer size above which the whole-model check is skipped (256 MiB).
    public static let wholeModelWeightLimit = 256 << 20

    /// A pair whose weight has more elements than this (2²² ≈ 4.2 M) is
    /// checked on evenly spaced output channels (the first and last
    /// included) whose weights stay under it; group = 1 Convs only. Each
    /// output channel's fold is independent of the others, so this bounds
    /// the cost (a 2048 × 2048 × 3 × 3 Conv: 227 of 2048 channels) without
    /// skipping any kind of error that affects every channel.
    public static let pairWeightLimit = 1 << 22

    /// The verdict on one fold's record: the nodes it replaced against the
    /// op that replaces them.
    public struct PairResult: Sendable {
        /// The node folded away (BatchNormalization, Mul or Add), labelled as
        /// the remarks label it (qualified by its subgraph path).
        public var subject: String
        /// The op it was folded into (Conv, ConvTranspose, Gemm or MatMul).
        public var op: String
        /// The pass that made the fold and its applied reason id.
        public var pass: String
        public var reason: String
        /// The value both sides compute.
        public var output: String
        /// The input shape the pair was run on.
        public var inputShape: [Int]
        /// The op's output channels, and how many of them were checked
        /// (fewer for group-1 Conv weights above ``pairWeightLimit`` elements).
        public var channels = 0
        public var channelsChecked = 0
        /// The comparison (nil when the pair could not be run; see ``problem``).
        public var comparison: OutputComparison?
        /// Why the pair could not be cut out or run (counts as a failure).
        public var problem: String?
        /// Why the pair was not checked although it could have been: running
        /// it would exceed the memory budget, or its dilated kernel is too
        /// large to build an input for. Neither a pass nor a failure; the
        /// report says so.
        public var skipped: String?
        public var passed: Bool { skipped == nil && problem == nil && (comparison?.equivalent ?? false) }
        public var failed: Bool { skipped == nil && !passed }
        public var ratio: Double { comparison?.ratio ?? .infinity }
        /// `bn1 folded into conv1`, for status lines and notes.
        public var label: String { "\(subject) folded into \(op)" }

        /// One phrase for an error line: what failed and by how much.
        public var failureDescription: String {
            let what = "\(label) (\(pass), output '\(output)', input \(inputShape))"
            if let problem { return "\(what): \(problem)" }
            guard let c = comparison else { return "\(what): not compared" }
            if let p = c.problem { return "\(what): \(p)" }
            return "\(what): error \(fmt(c.error)) against float64 exceeds the bound \(fmt(c.bound)) "
                + "(ratio \(fmt(c.ratio)); the original's own error \(fmt(c.referenceNoise)), scale \(fmt(c.scale)))"
        }
    }

    /// The outcome of the whole-model check.
    public enum WholeModel: Sendable {
        case passed(EquivalenceReport)
        case failed(EquivalenceReport)
        case skipped(String)
    }

    /// Checks every record (see the type's documentation): each one's
    /// `before` nodes against its `after` op, cut out as two one-output
    /// models with the constants the record holds, on one seeded input.
    /// Records from If/Loop/Scan bodies are labelled with their path
    /// (`if/then_branch/bn`); their constants were resolved when the fold
    /// was made, enclosing graphs included.
    ///
    /// `progress`, when given, is called before each record with its
    /// 1-based number and its label (`bn1 folded into conv1`), for a status line.
    public static func verify(_ records: [RewriteRecord], irVersion: Int64?, opsetImports: [OperatorSetID],
                              seed: UInt64 = 0, progress: ((_ pair: Int, _ label: String) -> Void)? = nil) -> [PairResult] {
        let run = PairRun(records, irVersion: irVersion, opsetImports: opsetImports, seed: seed, progress: progress)
        run.work()
        return run.results
    }

    /// The pair checks of a list of records as a queue of jobs that one or
    /// more threads work off (``work()``), each job one pair or one batch.
    ///
    /// Small pairs of one element type run together, as one model per side
    /// with every pair's names prefixed: the per-run costs (models,
    /// interpreters, input set-up) are paid once per batch instead of per
    /// pair. Sampled or large pairs run alone. The verdicts do not depend on
    /// how many threads work or in what order: each job's seed is fixed by
    /// its first pair.
    public final class PairRun: @unchecked Sendable {
        private let seed: UInt64
        private let progress: ((Int, String) -> Void)?
        private var cuts: [(a: Model, b: Model)?] = []
        private var slots: [PairResult] = []
        private var jobs: [[Int]] = []
        private let state = Mutex(0)   // the next job
        private let resultsLock = Mutex(())

        public init(_ records: [RewriteRecord], irVersion: Int64?, opsetImports: [OperatorSetID], seed: UInt64 = 0,
                    progress: ((_ pair: Int, _ label: String) -> Void)? = nil) {
            self.seed = seed
            self.progress = progress
            for record in records {
                let (result, cut) = FoldVerifier.cut(record, irVersion: irVersion, opsetImports: opsetImports)
                slots.append(result)
                cuts.append(cut)
            }
            var batch: [Int] = []
            var batchBytes = 0
            for i in records.indices {
                guard let cut = cuts[i] else { jobs.append([i]); continue }
                let bytes = initializerBytes(cut.a.graph ?? Graph()) + initializerBytes(cut.b.graph ?? Graph())
                let alone = slots[i].channelsChecked < slots[i].channels || bytes > pairBatchBytes
                let type = cut.a.graph?.inputs.first?.type?.tensorType?.elementType
                if let last = batch.last, alone || batchBytes + bytes > pairBatchBytes || batch.count >= pairBatchSize
                    || cuts[last]!.a.graph?.inputs.first?.type?.tensorType?.elementType != type {
                    jobs.append(batch)
                    (batch, batchBytes) = ([], 0)
                }
                if alone {
                    jobs.append([i])
                } else {
                    batch.append(i)
                    batchBytes += bytes
                }
            }
            if !batch.isEmpty { jobs.append(batch) }
        }

        /// Every pair's result, in record order (complete once every
        /// thread's ``work()`` has returned).
        public var results: [PairResult] { resultsLock.withLock { _ in slots } }

        /// Takes jobs until none is left; any number of threads may call it at once.
        public func work() {
            while true {
                let next: Int? = state.withLock { n in
                    guard n < jobs.count else { return nil }
                    n += 1
                    return n - 1
                }
                guard let next else { return }
                run(jobs[next])
            }
        }

        private func run(_ members: [Int]) {
            guard let first = members.first else { return }
            var local = resultsLock.withLock { _ in members.map { slots[$0] } }
            for (k, i) in members.enumerated() { progress?(i + 1, local[k].label) }
            defer { resultsLock.withLock { _ in for (k, i) in members.enumerated() { slots[i] = local[k] } } }
            guard cuts[first] != nil else { return }   // could not be cut out: the result says why
            if members.count == 1 {
                FoldVerifier.compare(cuts[first]!, into: &local[0], seed: seed &+ UInt64(first))
                return
            }
            let prefixes = members.map { "bnfold_pair\($0)/" }
            let a = merged(members.map { cuts[$0]!.a }, prefixes: prefixes)
            let b = merged(members.map { cuts[$0]!.b }, prefixes: prefixes)
            if let report = try? EquivalenceChecker(a: a, b: b).compare(samples: 1, seed: seed &+ UInt64(first)) {
                for k in members.indices {
                    let name = prefixes[k] + local[k].output
                    if var comparison = report.outputs.first(where: { $0.name == name }) {
                        comparison.name = local[k].output
                        local[k].comparison = comparison
                    } else {
                        local[k].problem = "the pair produced no output"
                    }
                }
            } else {
                // Whatever stopped the batch (a budget, a pair that cannot
                // run) is found and reported pair by pair.
                for (k, i) in members.enumerated() {
                    FoldVerifier.compare(cuts[i]!, into: &local[k], seed: seed &+ UInt64(i))
                }
            }
        }
    }

    /// Pairs run together hold at most this many bytes of constants (16 MiB)…
    static let pairBatchBytes = 16 << 20
    /// …and number at most this many (smaller batches balance two threads
    /// better; 128 was the fastest of 64–1024 on the 4,000-block chain).
    static let pairBatchSize = 128

    /// The record's two sides as one-output models, or the result saying
    /// why they cannot be made (a problem, or a skip).
    static func cut(_ record: RewriteRecord, irVersion: Int64?, opsetImports: [OperatorSetID]) -> (PairResult, (a: Model, b: Model)?) {
        var result = PairResult(subject: record.subject, op: record.op, pass: record.pass, reason: record.reason,
                                output: record.output, inputShape: [])
        do {
            guard record.unresolved.isEmpty else {
                throw EquivalenceError("the fold's record has inputs that are not constants (\(record.unresolved.joined(separator: ", ")))")
            }
            let op = record.before[record.opIndex]
            func constant(_ slot: Int) throws -> Tensor? {
                guard op.inputs.count > slot, !op.inputs[slot].isEmpty else { return nil }
                guard let t = record.beforeConstants[op.inputs[slot]] else {
                    throw EquivalenceError("input '\(op.inputs[slot])' of \(record.op) is not a constant")
                }
                return t
            }
            guard let weight = try constant(1) else { throw EquivalenceError("\(record.op) has no weight") }
            let (shape, channels) = try pairInput(op, weight: weight, bias: try constant(2))
            result.inputShape = shape
            let x = InputSpec(name: "bnfold_verify_x", elementType: weight.elementType, shape: shape)
            let perChannel = (weight.elementCount ?? 0) / max(1, channels)
            var subset: [Int]? = nil
            if op.isOp("Conv"), (op.intAttribute("group") ?? 1) == 1, channels > 2,
               (weight.elementCount ?? 0) > pairWeightLimit {
                let k = max(2, min(channels, pairWeightLimit / max(1, perChannel)))
                subset = (0..<k).map { $0 * (channels - 1) / (k - 1) }
            }
            result.channels = channels
            result.channelsChecked = subset?.count ?? channels
            // Constants indexed by the op's output channel on their first
            // axis: the op's own, and (folded into the op's output) the
            // BN's or the Mul/Add's; a forward fold's BN is per input channel.
            var cutBefore = Set(op.inputs.dropFirst())
            if record.kind != .batchNormIntoConsumer {
                for (i, node) in record.before.enumerated() where i != record.opIndex { cutBefore.formUnion(node.inputs) }
            }
            func models(_ subset: [Int]?) throws -> (a: Model, b: Model) {
                (try pairModel(nodes: record.before, constants: record.beforeConstants, cut: cutBefore, input: x,
                               output: record.output, channels: subset, irVersion: irVersion, opsetImports: opsetImports),
                 try pairModel(nodes: [record.after], constants: record.afterConstants, cut: Set(record.after.inputs),
                               input: x, output: record.output, channels: subset, irVersion: irVersion,
                               opsetImports: opsetImports))
            }
            if let cut = try? models(subset) { return (result, cut) }
            // A constant that cannot be cut by channel (a scalar Mul): check them all.
            result.channelsChecked = channels
            return (result, try models(nil))
        } catch {
            note(error, in: &result)
            return (result, nil)
        }
    }

    /// Runs one pair's two models and puts the comparison into `result`.
    static func compare(_ cut: (a: Model, b: Model), into result: inout PairResult, seed: UInt64) {
        do {
            let report = try EquivalenceChecker(a: cut.a, b: cut.b).compare(samples: 1, seed: seed)
            result.comparison = report.outputs.first
            if report.outputs.isEmpty { result.problem = "the pair produced no output" }
        } catch {
            note(error, in: &result)
        }
    }

    /// A pair that could not be run: skipped (too large, over the memory budget) or a problem.
    static func note(_ error: any Error, in result: inout PairResult) {
        if let tooLarge = error as? PairTooLarge {
            result.skipped = tooLarge.description
        } else if let limit = EquivalenceChecker.memoryLimit(of: error) {
            result.skipped = "running it \(limit)"
        } else {
            result.problem = "could not be checked: \(error)"
        }
    }

    /// One model holding every pair model of `models`, each one's names
    /// (values, initializers, nodes) prefixed with its prefix: independent
    /// subgraphs side by side, one input and one output per pair.
    static func merged(_ models: [Model], prefixes: [String]) -> Model {
        var g = Graph(name: "bnfold_verify")
        var nodes: [Node] = [], initializers: [Tensor] = []
        var inputs: [ValueInfo] = [], outputs: [ValueInfo] = []
        for (model, prefix) in zip(models, prefixes) {
            guard let graph = model.graph else { continue }
            func renamed(_ name: String) -> String { name.isEmpty ? name : prefix + name }
            for var node in graph.nodes {
                node.inputs = node.inputs.map(renamed)
                node.outputs = node.outputs.map(renamed)
                node.name = node.name.map(renamed)
                nodes.append(node)
            }
            for var t in graph.initializers { t.name = t.name.map(renamed); initializers.append(t) }
            for var v in graph.inputs { v.name = v.name.map(renamed); inputs.append(v) }
            for var v in graph.outputs { v.name = v.name.map(renamed); outputs.append(v) }
        }
        g.nodes = nodes
        g.initializers = initializers
        g.inputs = inputs
        g.outputs = outputs
        var m = Model(irVersion: models.first?.irVersion, opsetImports: models.first?.opsetImports ?? [], graph: g)
        m.functions = []
        return m
    }

    /// Rows of the input a Gemm/MatMul pair is run on when its bias does not
    /// fix them. Each row is an independent product, so a few rows exercise
    /// every weight as well as a full batch would.
    public static let pairRows = 4

    /// The input shape a pair with producer `op` (weight `weight`) is run on,
    /// and the op's output channels.
    static func pairInput(_ op: Node, weight: Tensor, bias: Tensor?) throws -> (shape: [Int], channels: Int) {
        let dims = weight.dims.map(Int.init)
        let group = max(1, Int(op.intAttribute("group") ?? 1))
        switch op.opType {
        case "Conv", "ConvTranspose":
            guard dims.count >= 3 else { throw EquivalenceError("the weight has shape \(weight.dims)") }
            let kernel = Array(dims.dropFirst(2))
            let dilations = op.intsAttribute("dilations").map { $0.map(Int.init) } ?? kernel.map { _ in 1 }
            let spatial = zip(kernel, dilations.count == kernel.count ? dilations : kernel.map { _ in 1 })
                .map { pairSpatialSize(kernel: $0, dilation: $1) }
            // A dilated kernel that does not fit in Int (dilations = 2⁶²) saturates to Int.max.
            guard spatial.allSatisfy({ $0 != Int.max }) else {
                throw PairTooLarge(description: "the dilated kernel (kernel \(kernel), dilations \(dilations)) is too large to check")
            }
            // Conv W: [C_out, C_in/g, k…]; ConvTranspose W: [C_in, C_out/g, k…].
            let (perGroup, wide) = dims[1].multipliedReportingOverflow(by: group)
            guard !wide else { throw EquivalenceError("group \(group) times the weight's \(dims[1]) channels overflows") }
            return op.isOp("Conv") ? ([1, perGroup] + spatial, dims[0]) : ([1, dims[0]] + spatial, perGroup)
        default:  // Gemm, MatMul: A [M, K] · B [K, N] (B [N, K] with transB)
            guard dims.count == 2 else { throw EquivalenceError("the weight has shape \(weight.dims)") }
            let transB = op.isOp("Gemm") && op.intAttribute("transB") == 1
            let (k, n) = transB ? (dims[1], dims[0]) : (dims[0], dims[1])
            var rows = pairRows
            if op.isOp("Gemm"), let c = bias, c.dims.count == 2 {
                rows = Int(c.dims[0])  // [M, N] or [M, 1] fixes M; [1, N] broadcasts
            }
            rows = max(rows, 1)
            let transA = op.isOp("Gemm") && op.intAttribute("transA") == 1
            return (transA ? [k, rows] : [rows, k], n)
        }
    }

    /// The spatial size a pair is checked at: the dilated kernel, at least 4.
    /// `max(4, (kernel − 1)·dilation + 1)`, or `Int.max` when that overflows.
    public static func pairSpatialSize(kernel: Int, dilation: Int) -> Int {
        let (span, overflow) = max(0, kernel - 1).multipliedReportingOverflow(by: max(1, dilation))
        guard !overflow, span < Int.max else { return Int.max }
        return max(4, span + 1)
    }

    /// A pair no input can be built for (its extent does not fit in Int).
    struct PairTooLarge: Error, CustomStringConvertible { let description: String }

    /// Runs both models on one seeded random input set (symbolic dimensions 1).
    ///
    /// `shapes` binds symbolic dimensions of the inputs (else 1) and `given`
    /// supplies input tensors, as `bnfold check --input-shape/--input` do: a
    /// model whose windows need a real H × W cannot run at 1 × 1.
    public static func verifyWholeModel(original: Model, folded: Model, seed: UInt64 = 0,
                                        shapes: [String: [Int]] = [:], given: [String: RuntimeTensor] = [:],
                                        progress: ((CheckProgress) -> Void)? = nil) -> WholeModel {
        if let reason = wholeModelSkipReason(original: original) { return .skipped(reason) }
        do {
            let report = try EquivalenceChecker(a: original, b: folded).compare(given: given, shapes: shapes, samples: 1, seed: seed,
                                                                                progress: progress)
            return report.equivalent ? .passed(report) : .failed(report)
        } catch {
            return .skipped("cannot run: \(error)")
        }
    }

    /// Why the whole-model check would not run on `original` (no graph,
    /// unsupported operators, weights over ``wholeModelWeightLimit``); nil
    /// when it would. Decided from the graph alone, before any run.
    public static func wholeModelSkipReason(original: Model) -> String? {
        guard let graph = original.graph else { return "the model has no graph" }
        let unsupported = Interpreter.unsupportedOperators(in: graph)
        if !unsupported.isEmpty { return "unsupported operators \(unsupported.joined(separator: ", "))" }
        let bytes = initializerBytes(graph)
        if bytes > wholeModelWeightLimit {
            return "weights \(bytes >> 20) MiB exceed the whole-model limit of \(wholeModelWeightLimit >> 20) MiB"
        }
        return nil
    }

    /// The bytes of the graph's initializers, from their shapes and
    /// `DataType.byteCount(elements:)` (no data is read); saturates at `Int.max`.
    public static func initializerBytes(_ graph: Graph) -> Int {
        graph.initializers.reduce(0) { total, t in
            let count = t.elementCount ?? 0
            // Strings have no fixed width: count them as 8 bytes an element.
            let bytes = t.elementType.byteCount(elements: count)
                ?? { let (p, o) = count.multipliedReportingOverflow(by: 8); return o ? Int.max : p }()
            let (sum, overflow) = total.addingReportingOverflow(bytes)
            return overflow ? Int.max : sum
        }
    }

    // MARK: Cutting out a pair

    /// A model of `nodes` (in order) fed by one input `x` in place of the
    /// first node's data input, with `constants` as initializers and one
    /// output. With `channels`, the constants named in `cut` (all indexed
    /// by the op's output channel first) keep only those channels.
    static func pairModel(nodes: [Node], constants: [String: Tensor], cut: Set<String>, input x: InputSpec,
                          output: String, channels: [Int]?, irVersion: Int64?,
                          opsetImports: [OperatorSetID]) throws -> Model {
        var nodes = nodes
        nodes[0].inputs[0] = x.name
        var g = Graph(name: "bnfold_verify")
        var initializers: [Tensor] = []
        for (name, tensor) in constants.sorted(by: { $0.key < $1.key }) {
            var t = tensor
            if let channels, cut.contains(name) { t = try channelSubset(t, channels: channels) }
            t.name = name
            initializers.append(t)
        }
        g.initializers = initializers
        g.nodes = nodes
        g.inputs = [ValueInfo(name: x.name, type: .tensor(x.elementType, dims: x.shape.map(Int64.init)))]
        g.outputs = [ValueInfo(name: output, type: TypeProto(value: .tensor(.init(elementType: x.elementType, shape: nil))))]
        var m = Model(irVersion: irVersion, opsetImports: opsetImports, graph: g)
        m.functions = []
        return m
    }
}

/// The tensor cut to the given indices of its first dimension (bytes copied
/// piecewise; a lazily produced tensor computes only those pieces).
func channelSubset(_ t: Tensor, channels: [Int]) throws -> Tensor {
    guard let first = t.dims.first, first > 0, let count = t.elementCount else {
        throw EquivalenceError("tensor '\(t.name ?? "")' has no channel dimension")
    }
    let bytes = try t.dataBytes()
    let blockBytes = bytes.count / Int(first)
    guard blockBytes * Int(first) == bytes.count, count % Int(first) == 0, channels.allSatisfy({ $0 >= 0 && $0 < Int(first) }) else {
        throw EquivalenceError("tensor '\(t.name ?? "")' cannot be cut by channel")
    }
    var out = [UInt8](repeating: 0, count: blockBytes * channels.count)
    out.withUnsafeMutableBytes { dst in
        for (j, c) in channels.enumerated() {
            let piece = UnsafeMutableRawBufferPointer(rebasing: dst[j * blockBytes ..< (j + 1) * blockBytes])
            if let producer = bytes.producer {
                producer.produce(offset: c * blockBytes, into: piece)
            } else {
                bytes.withUnsafeBytes { src in
                    piece.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[c * blockBytes ..< (c + 1) * blockBytes]))
                }
            }
        }
    }
    var result = Tensor(name: t.name, elementType: t.elementType, dims: [Int64(channels.count)] + t.dims.dropFirst())
    result.rawData = ByteBuffer(out)
    return result
}

func fmt(_ x: Double?) -> String {
    x.map { String(format: "%.3g", $0) } ?? "-"
}
