import Foundation
import ONNXGraph
import ReferenceRuntime

/// Checks a folded model against the model it came from, before it is
/// written (`bnfold IN -o OUT` verifies by default).
///
/// Two checks, both with ``EquivalenceChecker``'s default rule (B within
/// 8 · max(noise, u · scale) of a float64 evaluation of the original; for
/// float16/bfloat16 models this means "no less accurate than the original"):
///
/// - **Pairs** (`verifyPairs(original:folded:seed:)`): every BN of the
///   original that `fold-batchnorm` folded into the op before it (see
///   ``foldedPairs(original:folded:)``: Conv, ConvTranspose, Gemm, MatMul,
///   MatMul → Add) is cut out as two one-output models — the original op
///   (+ Add) + BN, and the folded op — and run on a seeded random input, in
///   the model's element type and in float64. Convolutions get
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

    /// The verdict on one folded producer + BatchNormalization pair.
    public struct PairResult: Sendable {
        /// The BatchNormalization's display name in the original.
        public var batchNorm: String
        /// The display name in the original of the op the BN was folded into
        /// (Conv, ConvTranspose, Gemm or MatMul).
        public var producer: String
        /// The BN's output, which the folded op now produces.
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

        /// One phrase for an error line: what failed and by how much.
        public var failureDescription: String {
            let what = "\(batchNorm) folded into \(producer) (output '\(output)', input \(inputShape))"
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

    /// One BatchNormalization of the original that `fold-batchnorm` folded
    /// into the op before it.
    public struct FoldedPair: Sendable, Equatable {
        /// The BN, in the original.
        public var bn: Int
        /// The op it was folded into, in the original: Conv, ConvTranspose,
        /// Gemm or MatMul.
        public var producer: Int
        /// The Add between a MatMul and the BN, in the original, if any.
        public var add: Int?
        /// The op computing the BN's output in the folded graph.
        public var folded: Int

        public init(bn: Int, producer: Int, add: Int? = nil, folded: Int) {
            self.bn = bn; self.producer = producer; self.add = add; self.folded = folded
        }
    }

    /// The folded pairs: original BN nodes whose output the folded graph
    /// computes with the op `fold-batchnorm` turns their producer into — a
    /// Conv, ConvTranspose or Gemm stays what it is; a MatMul, or a MatMul
    /// followed by an Add of a value no node computes (a constant), becomes
    /// a Gemm — and that still reads the producer's data input (a producer
    /// that also absorbed a BN in front of it is left to the whole-model
    /// check).
    public static func foldedPairs(original: Graph, folded: Graph) -> [FoldedPair] {
        let producerInFolded = producers(folded), producerInOriginal = producers(original)
        var result: [FoldedPair] = []
        for (i, bn) in original.nodes.enumerated() where bn.isOp("BatchNormalization") {
            guard bn.inputs.count == 5, let y = bn.outputs.first, !y.isEmpty,
                  var producer = producerInOriginal[bn.inputs[0]], let f = producerInFolded[y] else { continue }
            var add: Int?
            let node = original.nodes[producer]
            if node.isOp("Add"), node.inputs.count == 2 {
                // MatMul → Add(constant) → BN: the Add's other operand comes from no node.
                let fromMatMul = node.inputs.map { name in producerInOriginal[name].map { original.nodes[$0].isOp("MatMul") } }
                guard let slot = fromMatMul.firstIndex(of: true), fromMatMul[1 - slot] == nil,
                      let matMul = producerInOriginal[node.inputs[slot]] else { continue }
                (add, producer) = (producer, matMul)
            }
            let before = original.nodes[producer], after = folded.nodes[f]
            let matches = switch before.opType {
            case "Conv", "ConvTranspose", "Gemm": after.opType == before.opType
            case "MatMul": after.isOp("Gemm")
            default: false
            }
            // The folded op must read what the producer read: otherwise it
            // has also absorbed a BN in front of it (BN → Conv → BN) and no
            // longer computes "producer + this BN" alone; the whole-model
            // check covers such chains.
            guard before.inputs.first == after.inputs.first else { continue }
            if matches && before.isDefaultDomain { result.append(FoldedPair(bn: i, producer: producer, add: add, folded: f)) }
        }
        return result
    }

    /// The node producing each value.
    private static func producers(_ graph: Graph) -> [String: Int] {
        var producer: [String: Int] = [:]
        for (i, node) in graph.nodes.enumerated() {
            for out in node.outputs where !out.isEmpty { producer[out] = i }
        }
        return producer
    }

    /// Checks every folded pair (see the type's documentation), in the main
    /// graph and inside If/Loop/Scan bodies: a body's pairs are labelled
    /// with their path (`if/then_branch/bn`) and may read constants of the
    /// graphs around them.
    ///
    /// `progress`, when given, is called before each pair with its 1-based
    /// number and its label (`bn1 folded into conv1`), for a status line.
    public static func verifyPairs(original: Model, folded: Model, seed: UInt64 = 0,
                                   progress: ((_ pair: Int, _ label: String) -> Void)? = nil) -> [PairResult] {
        guard let go = original.graph, let gf = folded.graph else { return [] }
        var results: [PairResult] = []
        verifyPairs(Scope(graph: go), Scope(graph: gf), path: "", models: (original, folded), seed: seed,
                    progress: progress, into: &results)
        return results
    }

    /// A graph and the graphs enclosing it, innermost first.
    struct Scope {
        let graph: Graph
        var enclosing: [Graph] = []
        func inside(_ sub: Graph) -> Scope { Scope(graph: sub, enclosing: [graph] + enclosing) }
    }

    static func verifyPairs(_ so: Scope, _ sf: Scope, path: String, models: (Model, Model), seed: UInt64,
                            progress: ((Int, String) -> Void)?, into results: inout [PairResult]) {
        for pair in foldedPairs(original: so.graph, folded: sf.graph) {
            progress?(results.count + 1, path + so.graph.nodes[pair.bn].displayName(index: pair.bn) + " folded into "
                      + path + so.graph.nodes[pair.producer].displayName(index: pair.producer))
            results.append(checkPair(pair, so, sf, path: path, models: models, seed: seed &+ UInt64(results.count)))
        }
        // The same If/Loop/Scan node in both graphs: same op, same first output.
        let foldedNode = producers(sf.graph)
        for (i, node) in so.graph.nodes.enumerated() where !node.subgraphs.isEmpty {
            guard let out = node.outputs.first(where: { !$0.isEmpty }), let j = foldedNode[out],
                  sf.graph.nodes[j].opType == node.opType else { continue }
            for attribute in node.attributes {
                guard let name = attribute.name, let other = sf.graph.nodes[j].attribute(name),
                      attribute.subgraphs.count == other.subgraphs.count else { continue }
                for (k, (a, b)) in zip(attribute.subgraphs, other.subgraphs).enumerated() {
                    let label = path + node.displayName(index: i) + "/" + name + (attribute.subgraphs.count > 1 ? "[\(k)]" : "") + "/"
                    verifyPairs(so.inside(a), sf.inside(b), path: label, models: models, seed: seed, progress: progress, into: &results)
                }
            }
        }
    }

    static func checkPair(_ pair: FoldedPair, _ so: Scope, _ sf: Scope, path: String, models: (Model, Model),
                          seed: UInt64) -> PairResult {
        let (original, folded) = models
        let go = so.graph
        let bn = go.nodes[pair.bn], op = go.nodes[pair.producer]
        var result = PairResult(batchNorm: path + bn.displayName(index: pair.bn),
                                producer: path + op.displayName(index: pair.producer),
                                output: bn.outputs[0], inputShape: [])
        do {
            let weight = try constant(op.inputs.count > 1 ? op.inputs[1] : "", in: so)
            let (shape, channels) = try pairInput(op, weight: weight, in: so)
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
            let originalNodes = [pair.producer] + (pair.add.map { [$0] } ?? []) + [pair.bn]
            func models(_ subset: [Int]?) throws -> (Model, Model) {
                (try pairModel(nodes: originalNodes, of: so, model: original, input: x, output: bn.outputs[0], channels: subset),
                 try pairModel(nodes: [pair.folded], of: sf, model: folded, input: x, output: bn.outputs[0], channels: subset))
            }
            let (a, b): (Model, Model)
            if let cut = try? models(subset) {
                (a, b) = cut
            } else {
                // A constant that cannot be cut by channel: check them all.
                result.channelsChecked = channels
                (a, b) = try models(nil)
            }
            let report = try EquivalenceChecker(a: a, b: b).compare(samples: 1, seed: seed)
            result.comparison = report.outputs.first
            if report.outputs.isEmpty { result.problem = "the pair produced no output" }
        } catch let tooLarge as PairTooLarge {
            result.skipped = tooLarge.description
        } catch {
            if let limit = EquivalenceChecker.memoryLimit(of: error) {
                result.skipped = "running it \(limit)"
            } else {
                result.problem = "could not be checked: \(error)"
            }
        }
        return result
    }

    /// Rows of the input a Gemm/MatMul pair is run on when its bias does not
    /// fix them. Each row is an independent product, so a few rows exercise
    /// every weight as well as a full batch would.
    public static let pairRows = 4

    /// The input shape a pair with producer `op` (weight `weight`) is run on,
    /// and the op's output channels.
    static func pairInput(_ op: Node, weight: Tensor, in scope: Scope) throws -> (shape: [Int], channels: Int) {
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
            if op.isOp("Gemm"), op.inputs.count > 2, !op.inputs[2].isEmpty {
                let c = try constant(op.inputs[2], in: scope)
                if c.dims.count == 2 { rows = Int(c.dims[0]) }  // [M, N] or [M, 1] fixes M; [1, N] broadcasts
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
        guard let graph = original.graph else { return .skipped("the model has no graph") }
        let unsupported = Interpreter.unsupportedOperators(in: graph)
        if !unsupported.isEmpty { return .skipped("unsupported operators \(unsupported.joined(separator: ", "))") }
        let bytes = initializerBytes(graph)
        if bytes > wholeModelWeightLimit {
            return .skipped("weights \(bytes >> 20) MiB exceed the whole-model limit of \(wholeModelWeightLimit >> 20) MiB")
        }
        do {
            let report = try EquivalenceChecker(a: original, b: folded).compare(given: given, shapes: shapes, samples: 1, seed: seed,
                                                                                progress: progress)
            return report.equivalent ? .passed(report) : .failed(report)
        } catch {
            return .skipped("cannot run: \(error)")
        }
    }

    /// The bytes of the graph's initializers, from their shapes (no data is read).
    public static func initializerBytes(_ graph: Graph) -> Int {
        graph.initializers.reduce(0) { total, t in
            let width: Int
            switch t.elementType {
            case .float16, .bfloat16, .int16, .uint16: width = 2
            case .float, .int32, .uint32: width = 4
            case .int8, .uint8, .bool: width = 1
            default: width = 8
            }
            let (p, o) = (t.elementCount ?? 0).multipliedReportingOverflow(by: width)
            return o ? Int.max : total.addingReportingOverflow(p).partialValue
        }
    }

    // MARK: Cutting out a pair

    /// A constant's tensor: an initializer or a `Constant` node's `value`,
    /// also behind `Identity` nodes (exporters put them in front of shared
    /// weights), looked up in the enclosing graphs when the scope's own
    /// graph neither defines nor declares the name.
    static func constant(_ name: String, in scope: Scope) throws -> Tensor {
        let graph = scope.graph
        var name = name
        var hops = 0
        while let p = graph.value(named: name).producer, graph[p.node].isOp("Identity"),
              graph[p.node].inputs.count == 1, hops < graph.nodeCount {
            name = graph[p.node].inputs[0]
            hops += 1
        }
        if let t = graph.initializer(named: name) { return t }
        if let p = graph.value(named: name).producer {
            if graph[p.node].isOp("Constant"), let t = graph[p.node].attribute("value")?.t { return t }
        } else if !graph.inputs.contains(where: { $0.name == name }), let outer = scope.enclosing.first {
            return try constant(name, in: Scope(graph: outer, enclosing: Array(scope.enclosing.dropFirst())))
        }
        throw EquivalenceError("'\(name)' is not an initializer or a Constant with a tensor value")
    }

    /// A model of the given nodes (in order) fed by one input `x` in place of
    /// the first node's data input, with the constants they use (initializers,
    /// or the `Constant` nodes producing them) and one output.
    /// With `channels`, every constant (Conv weight and bias, BN parameters;
    /// all indexed by output channel first) keeps only those channels.
    static func pairModel(nodes indices: [Int], of scope: Scope, model: Model, input x: InputSpec, output: String,
                          channels: [Int]? = nil) throws -> Model {
        let graph = scope.graph
        var nodes = indices.map { graph.nodes[$0] }
        let intermediate = Set(nodes.dropLast().flatMap(\.outputs))
        nodes[0].inputs[0] = x.name
        var g = Graph(name: "bnfold_verify")
        var constantNodes: [Node] = []
        var seen = Set<String>()
        for node in nodes {
            for name in node.inputs where !name.isEmpty && name != x.name && !intermediate.contains(name) && seen.insert(name).inserted {
                if let channels {
                    var t = try channelSubset(constant(name, in: scope), channels: channels)
                    t.name = name
                    g.initializers.append(t)
                } else if var t = graph.initializer(named: name) {
                    t.name = name
                    g.initializers.append(t)
                } else if let p = graph.value(named: name).producer, graph[p.node].isOp("Constant") {
                    constantNodes.append(graph[p.node])
                } else if var t = try? constant(name, in: scope) {  // behind Identity nodes, or outside a body
                    t.name = name
                    g.initializers.append(t)
                } else {
                    throw EquivalenceError("input '\(name)' of \(node.opType) is not a constant")
                }
            }
        }
        g.nodes = constantNodes + nodes
        g.inputs = [ValueInfo(name: x.name, type: .tensor(x.elementType, dims: x.shape.map(Int64.init)))]
        g.outputs = [ValueInfo(name: output, type: TypeProto(value: .tensor(.init(elementType: x.elementType, shape: nil))))]
        var m = Model(irVersion: model.irVersion, opsetImports: model.opsetImports, graph: g)
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
