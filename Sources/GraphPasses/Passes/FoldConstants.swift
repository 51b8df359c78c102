import Synchronization
import ONNXGraph
import ReferenceRuntime

/// Computes every node whose inputs are all constant, with the reference
/// runtime, and stores its outputs as initializers.
///
/// Given (PyTorch's dynamo exporter, `optimize=False`, a Conv without bias):
///
///     d = Shape(W, start=0, end=1)          W: an initializer [C, …]
///     s = Expand(d, Constant([1]))
///     z = CastLike(Constant(0.0), X)        only X's element type matters
///     b = Expand(z, s)
///     y = Conv(X, W, b)
///
/// Result:
///
///     y = Conv(X, W, b)                     b: an initializer of C zeros
///
/// so that the folds that follow see `b` as a constant. Each node is
/// evaluated alone, in file order (so a chain folds in one sweep), by
/// `ReferenceRuntime/Interpreter`: the result is exactly what that runtime
/// computes, rounded into the declared element type (float16, bfloat16)
/// after the operator, as a runtime of that type would. `Shape` and `Size`
/// are answered from the dimensions without reading the data, and
/// `CastLike`'s second input only needs an element type (from the constant,
/// or a graph input / output / `value_info` declaration), so the pattern
/// above folds whatever the size of `W` and although `X` is a graph input.
///
/// The folded node goes; its outputs become initializers under the same
/// names (for IR < 4 main graphs also graph inputs, as the spec required);
/// the `Constant`, `Identity` and initializers it alone read go too.
///
/// Left alone, silently: `Constant` and `Identity` nodes (folds read
/// through them; copying a weight into a new initializer would only double
/// it), nodes of other domains, nodes holding subgraphs, non-deterministic
/// operators (`Random*`, `Multinomial`, `Bernoulli`, `Dropout` with a
/// `training_mode` input), nodes with a non-constant input or without
/// inputs, nodes computing a graph output (the output keeps its producer)
/// or nothing anyone reads, and operators whose output size cannot be
/// bounded before running them (`Conv`, pools, `Pad`, `Resize`, …; see
/// `predictedElementCount(_:inputs:)`).
///
/// Not folded, with a `missed` remark:
/// - `UnsupportedOperator`: a default-domain operator the reference runtime
///   does not implement.
/// - `ExceedsSizeLimit`: an input read or an output (predicted before running,
///   or computed) has more than ``elementLimit`` elements, or would take the
///   pass's running total past ``totalElementLimit``.
/// - `EvaluationFailed`: the runtime rejected the node (bad shapes, a type it
///   does not support, …); the message carries its error.
public struct FoldConstants: GraphPass {
    public let name = "fold-constants"
    public let summary = "Compute nodes whose inputs are all constant (reference runtime) and store the results as initializers."
    /// The stored values are what the reference runtime computed: a pair
    /// check would run the same evaluation again.
    public var isExactByConstruction: Bool { true }

    /// Default ``elementLimit``: 2²² elements, 16 MiB of float32 (32 MiB of
    /// int64 or double). Large enough for any bias, shape or small weight
    /// transform an exporter computes at run time; small enough that a
    /// folded model does not balloon and a hostile `ConstantOfShape` cannot
    /// make the pass allocate gigabytes.
    public static let defaultElementLimit = 1 << 22

    /// Default ``totalElementLimit``: 2²⁶ elements (256 MiB of float32,
    /// 512 MiB of int64), sixteen times the per-tensor limit. A per-tensor
    /// cap alone let 200 `ConstantOfShape` nodes of 2²² elements each make
    /// 3.4 GB; real exports compute a few shapes and biases, far below this.
    public static let defaultTotalElementLimit = 1 << 26

    /// Largest tensor, in elements, the pass reads as an input or
    /// materialises as an output.
    public var elementLimit: Int

    /// Most elements this pass value materialises over its life — every
    /// graph and subgraph of a pipeline run, every iteration (copies of the
    /// value share the count). Nodes past it are missed with
    /// `ExceedsSizeLimit`.
    public var totalElementLimit: Int

    private let materialised = ElementTally()

    public init(elementLimit: Int = FoldConstants.defaultElementLimit,
                totalElementLimit: Int = FoldConstants.defaultTotalElementLimit) {
        self.elementLimit = elementLimit
        self.totalElementLimit = totalElementLimit
    }

    /// The reason ids (one vocabulary for every pass: ``FoldReason``; this
    /// pass gives `ConstantFolded`, `UnsupportedOperator`,
    /// `ExceedsSizeLimit` and `EvaluationFailed`).
    public typealias Reason = FoldReason

    /// Operators whose value changes from run to run: never folded.
    static let nonDeterministic: Set<String> = [
        "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
    ]

    /// Operators whose output has at most max(Σ input elements, the product
    /// of the inputs' largest dimensions aligned from the right) elements:
    /// elementwise maps (broadcasting included), reductions, and layout
    /// operators that select, reorder or join elements.
    static let boundedByInputs: Set<String> = [
        "Abs", "Acos", "Acosh", "Add", "And", "ArgMax", "ArgMin", "Asin", "Asinh", "Atan", "Atanh",
        "BatchNormalization", "BitShift", "Cast", "CastLike", "Ceil", "Celu", "Clip", "Concat", "Cos", "Cosh",
        "CumSum", "Div", "Dropout", "Elu", "Equal", "Erf", "Exp", "Flatten", "Floor", "GlobalAveragePool",
        "GlobalMaxPool", "Greater", "GreaterOrEqual", "HardSigmoid", "HardSwish", "Identity", "IsInf", "IsNaN",
        "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax", "Max", "Mean", "Min", "Mod", "Mul", "Neg", "Not",
        "Or", "Pow", "PRelu", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
        "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Round",
        "Selu", "Sigmoid", "Sign", "Sin", "Sinh", "Slice", "Softmax", "Softplus", "Softsign", "Split", "Sqrt",
        "Squeeze", "Sub", "Sum", "Tan", "Tanh", "Transpose", "Unsqueeze", "Where", "Xor",
    ]

    public func run(on graph: inout Graph, context: inout PassContext) throws -> PassResult {
        guard let opset = context.defaultOpsetVersion else { return PassResult(modified: false) }
        let supported = Interpreter.supportedOperators
        var modified = false
        // IDs do not move when a node is erased, and a node's readers come
        // after it: one pass in ID order sees every node whose inputs an
        // earlier fold made constant.
        // Identity outputs known to forward a computed value: a constant
        // lookup would walk the whole Identity chain back to find that out,
        // for every node reading its end (a 40,000-deep chain made that most
        // of the pass). Filled in node order, so a chain is walked once.
        var computedIdentities: Set<String> = []
        for id in graph.nodeIDs where graph.contains(id) {
            if graph[id].isOp("Identity"), graph[id].inputs.count == 1, let output = graph[id].outputs.first {
                if hasComputedInput(id, in: graph, computedIdentities) { computedIdentities.insert(output) }
                continue
            }
            // An input computed by another node (directly, or through
            // Identity nodes) is not constant: skip without the full lookup.
            // (CastLike's second input gives only its type.)
            if hasComputedInput(id, in: graph, computedIdentities) { continue }
            // Borrowed for the test (most nodes are not foldable): no copy of the node.
            guard let inputs = foldableInputs(of: graph[id], in: graph, context: context) else { continue }
            let node = graph[id]
            let label = graph.label(id)
            let outcome = evaluate(node, inputs: inputs, opset: opset, supported: supported)
            switch outcome {
            case .leftAlone:
                continue
            case .missed(let miss):
                context.remark(Remark(kind: .missed, pass: name, reason: miss.reason.rawValue, node: label,
                                      message: miss.message, nodeID: id))
            case .folded(let outputs):
                let read = outputs.filter { !graph.value(named: $0.name ?? "").uses.isEmpty }
                graph.removeNodes([id])
                for output in read { graph.addInitializer(output, named: output.name ?? "", context: context) }
                // The inputs only this node read, and outputs nobody reads
                // (their value_info would otherwise name nothing).
                let dropped = node.outputs.filter { name in !name.isEmpty && !read.contains { $0.name == name } }
                graph.removeDeadValues(Set(node.inputs).union(dropped), context: context)
                let shapes = outputs.map { "\($0.elementType) \($0.dims)" }.joined(separator: ", ")
                context.remark(Remark(kind: .applied, pass: name, reason: Reason.constantFolded.rawValue, node: label,
                                      message: "computed \(node.opType) as a constant (\(shapes))", nodeID: id))
                modified = true
            }
        }
        return PassResult(modified: modified)
    }

    // MARK: Matching

    /// One input of a node to fold: its constant, or only its element type.
    enum Input {
        case constant(Tensor)
        case typeOnly(DataType)
        case absent
    }

    /// The node's inputs when it is a candidate: every input constant (or,
    /// for `CastLike`'s second, of known type) and the node worth folding;
    /// nil otherwise (left alone without a remark).
    func foldableInputs(of node: Node, in graph: Graph, context: PassContext) -> [Input]? {
        guard node.isDefaultDomain, !node.isOp("Constant"), !node.isOp("Identity"),
              !node.holdsSubgraphs, !Self.nonDeterministic.contains(node.opType),
              node.inputs.contains(where: { !$0.isEmpty }) else { return nil }
        if node.isOp("Dropout"), node.inputs.count > 2, !node.inputs[2].isEmpty { return nil }  // training_mode
        // Worth it only if someone reads an output, and safe only if the
        // outputs are plain intermediate values.
        var read = false
        for output in node.outputs where !output.isEmpty {
            let v = graph.value(named: output)
            if v.isGraphOutput || v.isGraphInput || v.initializer != nil { return nil }
            if !v.uses.isEmpty { read = true }
        }
        guard read else { return nil }
        var inputs: [Input] = []
        for (slot, name) in node.inputs.enumerated() {
            if name.isEmpty { inputs.append(.absent); continue }
            if node.isOp("CastLike") && slot == 1 {
                guard let type = context.declaredElementType(of: name, in: graph) else { return nil }
                inputs.append(.typeOnly(type))
                continue
            }
            guard case .success(let (tensor, _)) = context.constant(named: name, in: graph) else { return nil }
            inputs.append(.constant(tensor))
        }
        return inputs
    }

    typealias Miss = FoldMiss

    /// Whether an input of node `id` is computed by a node other than
    /// `Constant`/`Identity`, directly or through the Identity outputs in
    /// `computedIdentities` (CastLike's second input gives only its type).
    func hasComputedInput(_ id: NodeID, in graph: Graph, _ computedIdentities: Set<String>) -> Bool {
        let node = graph[id]
        let castLike = node.isOp("CastLike")
        for (slot, name) in node.inputs.enumerated() where !name.isEmpty && !(castLike && slot == 1) {
            if computedIdentities.contains(name) { return true }
            if let p = graph.value(named: name).producer {
                let producer = graph[p.node]
                if !producer.isOp("Constant") && !producer.isOp("Identity") { return true }
            }
        }
        return false
    }

    // MARK: Evaluating

    /// What became of one candidate.
    enum Outcome {
        /// Its outputs (named, in order), computed.
        case folded([Tensor])
        case missed(Miss)
        /// Not folded, not worth a remark (the output size cannot be bounded).
        case leftAlone
    }

    /// The node's outputs (named, empty names left out) computed, or why not.
    func evaluate(_ node: Node, inputs: [Input], opset: Int64, supported: Set<String>) -> Outcome {
        let outputNames = node.outputs.filter { !$0.isEmpty }
        if (node.isOp("Shape") || node.isOp("Size")), case .constant(let data)? = inputs.first, outputNames.count == 1 {
            switch shapeQuery(node, data: data, opset: opset) {
            case .success(var t):
                t.name = outputNames[0]
                return .folded([t])
            case .failure(let miss): return .missed(miss)
            }
        }
        guard supported.contains(node.opType) else {
            return .missed(Miss(.unsupportedOperator, "its inputs are constant, but the reference runtime has no \(node.opType) operator to compute it"))
        }
        for (slot, input) in inputs.enumerated() {
            guard case .constant(let t) = input else { continue }
            guard let count = t.elementCount, count <= elementLimit else {
                return .missed(Miss(.exceedsSizeLimit, "input '\(node.inputs[slot])' has \(t.elementCount.map(String.init) ?? "too many") elements, more than the \(elementLimit) this pass reads"))
            }
        }
        guard let predicted = Self.predictedElementCount(node, inputs: inputs) else { return .leftAlone }
        guard predicted <= elementLimit else {
            return .missed(Miss(.exceedsSizeLimit, "its output would have \(predicted) elements, more than the \(elementLimit) this pass materialises"))
        }
        guard materialised.add(predicted, limit: totalElementLimit) else {
            return .missed(Miss(.exceedsSizeLimit, "its output's \(predicted) elements would take the pass past the \(totalElementLimit) elements it materialises in all"))
        }
        // A one-node graph whose initializers are the node's inputs.
        var initializers: [Tensor] = []
        var seen: Set<String> = []
        for (slot, input) in inputs.enumerated() where seen.insert(node.inputs[slot]).inserted {
            var tensor: Tensor
            switch input {
            case .absent: continue
            case .constant(let t): tensor = t
            case .typeOnly(let type):
                tensor = Tensor(name: nil, elementType: type, dims: [0])
                tensor.rawData = ByteBuffer([UInt8]())
            }
            tensor.name = node.inputs[slot]
            initializers.append(tensor)
        }
        let single = Graph(name: "fold-constants", nodes: [node], outputs: outputNames.map { ValueInfo(name: $0) },
                           initializers: initializers)
        do {
            let results = try Interpreter(graph: single, opset: opset).run(inputs: [:])
            var tensors: [Tensor] = []
            for name in outputNames {
                guard let result = results[name] else {
                    return .missed(Miss(.evaluationFailed, "the reference runtime did not compute output '\(name)'"))
                }
                guard result.count <= elementLimit else {
                    return .missed(Miss(.exceedsSizeLimit, "output '\(name)' has \(result.count) elements, more than the \(elementLimit) this pass materialises"))
                }
                tensors.append(try result.tensor(name: name))
            }
            return .folded(tensors)
        } catch {
            return .missed(Miss(.evaluationFailed, "the reference runtime could not compute it: \(error)"))
        }
    }

    /// `Shape` (with `start`/`end` from opset 15) or `Size` of a constant,
    /// from its dimensions alone.
    func shapeQuery(_ node: Node, data: Tensor, opset: Int64) -> Result<Tensor, Miss> {
        let dims = data.dims
        if node.isOp("Size") {
            guard let count = data.elementCount else {
                return .failure(Miss(.evaluationFailed, "the constant has an invalid shape \(dims)"))
            }
            return .success(Graph.int64Tensor([Int64(count)], dims: []))
        }
        let rank = Int64(dims.count)
        func clamp(_ axis: Int64) -> Int64 { min(max(axis < 0 ? axis + rank : axis, 0), rank) }
        let start = opset >= 15 ? clamp(node.intAttribute("start") ?? 0) : 0
        let end = opset >= 15 ? clamp(node.intAttribute("end") ?? rank) : rank
        let selected = start < end ? Array(dims[Int(start)..<Int(end)]) : []
        return .success(Graph.int64Tensor(selected, dims: [Int64(selected.count)]))
    }

    /// An upper bound on the elements of the node's largest output, from its
    /// inputs, before anything is computed; nil when this pass cannot bound
    /// the operator's output (it is then not folded).
    ///
    /// `Expand`, `ConstantOfShape`, `Gather`, `MatMul` and `Gemm` are
    /// computed from their shape inputs and dimensions; the operators in
    /// `boundedByInputs` never exceed max(Σ input elements, the product of
    /// the inputs' largest dimensions aligned from the right). Products that
    /// overflow are `Int.max`.
    static func predictedElementCount(_ node: Node, inputs: [Input]) -> Int? {
        func dims(_ i: Int) -> [Int64]? {
            guard i < inputs.count, case .constant(let t) = inputs[i] else { return nil }
            return t.dims
        }
        func values(_ i: Int) -> [Int64]? {
            guard i < inputs.count, case .constant(let t) = inputs[i] else { return nil }
            return try? t.int64s()
        }
        switch node.opType {
        case "Expand":
            guard let data = dims(0), let shape = values(1) else { return nil }
            return product(broadcastMaxima([data, shape]))
        case "ConstantOfShape":
            guard let shape = values(0), shape.allSatisfy({ $0 >= 0 }) else { return nil }
            return product(shape)
        case "Gather":
            guard let data = dims(0), let indices = dims(1), !data.isEmpty else { return nil }
            var axis = node.intAttribute("axis") ?? 0
            if axis < 0 { axis += Int64(data.count) }
            guard axis >= 0, axis < Int64(data.count) else { return nil }
            var outer = data
            outer.remove(at: Int(axis))
            return product(outer + indices)
        case "MatMul":
            guard var a = dims(0), var b = dims(1), !a.isEmpty, !b.isEmpty else { return nil }
            if a.count == 1 { a = [1] + a }
            if b.count == 1 { b = b + [1] }
            let batch = broadcastMaxima([Array(a.dropLast(2)), Array(b.dropLast(2))])
            return product(batch + [a[a.count - 2], b[b.count - 1]])
        case "Gemm":
            guard let a = dims(0), let b = dims(1), a.count == 2, b.count == 2 else { return nil }
            let m = (node.intAttribute("transA") ?? 0) != 0 ? a[1] : a[0]
            let n = (node.intAttribute("transB") ?? 0) != 0 ? b[0] : b[1]
            return product([m, n])
        default:
            guard boundedByInputs.contains(node.opType) else { return nil }
            let shapes = inputs.compactMap { input -> [Int64]? in
                if case .constant(let t) = input { return t.dims }
                return nil
            }
            let total = shapes.reduce(0) { sum, s in
                let (r, overflow) = sum.addingReportingOverflow(product(s))
                return overflow ? Int.max : r
            }
            return max(total, product(broadcastMaxima(shapes)))
        }
    }

    /// The largest dimension per axis, shapes aligned from the right.
    static func broadcastMaxima(_ shapes: [[Int64]]) -> [Int64] {
        let rank = shapes.map(\.count).max() ?? 0
        return (0..<rank).map { axis in
            shapes.map { s in axis < rank - s.count ? 1 : s[axis - (rank - s.count)] }.max() ?? 1
        }
    }

    /// Product of dimensions; `Int.max` on overflow or a dimension beyond Int.
    static func product(_ dims: [Int64]) -> Int {
        var result = 1
        for d in dims {
            guard d >= 0, d <= Int64(Int.max) else { return Int.max }
            let (p, overflow) = result.multipliedReportingOverflow(by: Int(d))
            if overflow { return Int.max }
            result = p
        }
        return result
    }
}

/// A running count shared by copies of a pass value (the pass is a value
/// type; its budget must not reset when the manager copies it).
final class ElementTally: Sendable {
    private let total = Mutex(0)

    /// Adds `count` when the total stays within `limit`; false (and nothing
    /// added) otherwise.
    func add(_ count: Int, limit: Int) -> Bool {
        total.withLock { t in
            let (sum, overflow) = t.addingReportingOverflow(count)
            guard !overflow, sum <= limit else { return false }
            t = sum
            return true
        }
    }
}
