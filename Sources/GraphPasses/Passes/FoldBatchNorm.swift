import ONNXGraph

/// Folds an inference-mode `BatchNormalization` into the linear op before
/// it: `Conv`, `ConvTranspose`, `Gemm`, `MatMul`, or `MatMul` → `Add(constant)`.
///
/// Given:
///
///     y = Conv(x, W, b)                      W: [C, C_in/group, k...], b: [C] or absent
///     z = BatchNormalization(y, γ, β, μ, σ²)  ε from the attribute (default 1e-5)
///
/// Result:
///
///     z = Conv(x, W', b')
///     s_c   = γ_c / sqrt(σ²_c + ε)
///     W'_c  = W_c · s_c                      (every weight of output channel c)
///     b'_c  = (b_c − μ_c) · s_c + β_c        (b_c = 0 when the Conv had no bias)
///
/// Batch normalization in inference mode is the per-channel affine map
/// z_c = s_c · (y_c − μ_c) + β_c, and each producer's output channel c is
/// linear in the weights of that channel, so the fold is exact in real
/// arithmetic. bnfold computes it in Double and rounds once into the
/// weight's element type. Per producer, "the weights of channel c" are:
///
/// - `ConvTranspose`, W `[C_in, C_out/g, k…]`: `W[i, j, …]` with
///   `(i / (C_in/g))·(C_out/g) + j = c` — in every input channel's slice,
///   not the slice `W[c]` (that would be the classic wrong-axis fold).
/// - `Gemm` (`Y = alpha·A'·B' + beta·C`, output `[M, N]`, channel = column):
///   column c of B (`transB = 0`, B `[K, N]`) or row c (`transB = 1`), so the
///   transB layout stays. `alpha` stays as it is; the bias term becomes
///   `C'_c = (beta·C_c − μ_c)·s_c + β_c` with `beta = 1` — absorbing beta is
///   exact in Double and needs no division (beta may be 0), where keeping it
///   would store C'/beta and round twice. C' has shape `[N]`, or C's own
///   shape when that has as many elements (`[1, N]`, `[M, N]`).
/// - `MatMul` with a constant 2-D weight `[K, N]` and a rank-2 input
///   (`[batch, K]`: the BN channel axis 1 is then the feature axis N):
///   rewritten to `Gemm(A, B', C')` under the MatMul's name, with C' as
///   above from b = 0 — or from the Add's constant for MatMul → Add → BN,
///   which disappears. A Gemm rather than MatMul + Add: one node, which
///   later folds (a second BN, a Mul, an Add) extend like any Gemm.
///
/// The producer takes the BatchNormalization's output name, so downstream
/// nodes and graph outputs are untouched. Constants are found through the
/// context (`Identity` chains, `Constant` nodes, enclosing graphs; see
/// ``PassContext/constant(named:in:)``). A weight or bias shared with
/// another node, read by `training_info` or belonging to an enclosing graph
/// is not modified: the folded values go into a new initializer. The
/// initializers, `Constant` and `Identity` nodes only the folded nodes used
/// are removed.
///
/// Applied reason ids: `ConvBatchNormFolded`, `ConvTransposeBatchNormFolded`,
/// `GemmBatchNormFolded`, `MatMulBatchNormFolded` (MatMul, and MatMul → Add).
///
/// Not folded (a `missed` remark with the reason id, see ``FoldReason``):
/// - `TrainingMode`: `training_mode = 1`, `is_test = 0` before opset 7, or
///   mean/variance outputs declared (which before opset 14 is what makes a
///   BatchNormalization training mode) — the output uses batch statistics.
/// - `ExtraOutputsUsed`: the running mean/variance outputs are used.
/// - `NotSpatial`: `spatial = 0` (opset < 9), per-activation statistics.
/// - `NoFoldableProducer`: the input does not come from one of the ops above.
/// - `ProducerHasOtherUses` / `ProducerIsGraphOutput`: the producer's output
///   (or the MatMul's, before an Add) is also needed unnormalized.
/// - `ChannelAxisMismatch`: a MatMul whose input has rank ≠ 2, so the BN's
///   channel axis 1 is not the MatMul's feature axis.
/// - `UnknownRank`: the rank of the MatMul's input is declared nowhere.
/// - `BroadcastNotPerChannel` / `RankMismatch`: the Add between MatMul and
///   BN is not one constant per column.
/// - `NonConstantWeights` / `NonConstantBNParameters`: a value is not known
///   before run time.
/// - `OverridableInitializer`: a weight or parameter is an initializer that
///   is also a graph input of an IR ≥ 4 model (folded with
///   ``PassContext/assumeConstantInputs``).
/// - `ShapeMismatch`: parameter lengths differ from the producer's output channels.
/// - `UnsupportedElementType`: not float, double, float16 or bfloat16.
/// - `UnsupportedAttribute`: a Gemm `transB`/`alpha`/`beta` or a `group`
///   of a type or value the schema does not allow.
/// - `NonPositiveVariance`: σ²_c + ε ≤ 0 for some channel.
/// - `NotRepresentable`: a folded value is not finite, or overflows the
///   element type (float16 above 65504).
public struct FoldBatchNorm: GraphPass {
    public let name = "fold-batchnorm"
    public let summary = "Fold inference-mode BatchNormalization into the Conv, ConvTranspose, Gemm or MatMul(+Add) before it (W' = W·s, b' = (b − mean)·s + β)."

    /// Default-domain opset versions whose BatchNormalization this pass
    /// understands (its definitions changed at 1, 6, 7, 9, 14 and 15; ONNX
    /// 1.23 defines opsets up to 28).
    public static let knownOpsets: ClosedRange<Int64> = 1...28

    public init() {}

    /// The reason ids (shared by every fold pass).
    public typealias Reason = FoldReason

    public func run(on graph: inout Graph, context: inout PassContext) throws -> PassResult {
        guard graph.nodes.contains(where: { $0.isOp("BatchNormalization") }) else { return PassResult(modified: false) }
        let opset = try Self.checkedOpset(context, pass: name)
        let scan = context  // what the folds read: the scope and options, not the remarks
        let modified = try foldEachCandidate(
            in: &graph, context: &context, pass: name,
            isCandidate: { g, i in g[i].isOp("BatchNormalization") },
            fold: { g, i in
                match(bn: i, in: g, opset: opset, context: scan).map { fold in
                    let record = apply(fold, to: &g, context: scan, opset: opset)
                    let via = fold.add.map { " and \($0.label)" } ?? ""
                    return Folded(reason: fold.reason, message: "folded into \(fold.producer.label)\(via) (\(fold.producer.outChannels) channels, ε = \(fold.bn.epsilon))",
                                  record: record)
                }
            })
        return PassResult(modified: modified)
    }

    /// The default-domain opset, or the error for a model this pass cannot interpret.
    static func checkedOpset(_ context: PassContext, pass: String) throws -> Int64 {
        guard let opset = context.defaultOpsetVersion else {
            throw PassError(pass: pass, "the model uses BatchNormalization but imports no default-domain opset")
        }
        guard knownOpsets.contains(opset) else {
            throw PassError(pass: pass, "default-domain opset \(opset) is not one bnfold knows (\(knownOpsets.lowerBound)–\(knownOpsets.upperBound))")
        }
        return opset
    }

    // MARK: Matching

    /// The Add of MatMul → Add → BN.
    struct AddStep {
        let node: NodeID
        let label: String
        /// The Add's constant operand, per output column.
        let values: [Double]
        let constantName: String
    }

    struct Fold {
        let bn: InferenceBatchNorm
        let producer: LinearOperator
        let add: AddStep?
        let rewrite: LinearRewrite
        var reason: FoldReason {
            switch producer.kind {
            case .conv: .convBatchNormFolded
            case .convTranspose: .convTransposeBatchNormFolded
            case .gemm: .gemmBatchNormFolded
            case .matMul: .matMulBatchNormFolded
            }
        }
    }

    func match(bn index: NodeID, in graph: Graph, opset: Int64, context: PassContext) -> Result<Fold, FoldMiss> {
        if let problem = InferenceBatchNorm.modeProblem(bn: index, in: graph, opset: opset) { return .failure(problem) }
        let x = graph[index].inputs[0]

        // The producer: a linear op, or an Add(constant) after a MatMul.
        let producerIndex: NodeID
        var addIndex: NodeID?
        switch singleUseProducer(of: x, consumer: index, in: graph, context: context) {
        case .failure(let miss): return .failure(miss)
        case .success(let p):
            if LinearOperator.isLinear(graph[p]) {
                producerIndex = p
            } else if let (matMul, _) = matMulBeforeAdd(p, in: graph, context: context) {
                switch singleUseProducer(of: graph[matMul].outputs[0], consumer: p, in: graph, context: context) {
                case .failure(let miss): return .failure(miss)
                case .success: (producerIndex, addIndex) = (matMul, p)
                }
            } else {
                let add = graph[p].isOp("Add") ? " (an Add folds only after a MatMul; fold-mul-add folds it after a Conv, ConvTranspose or Gemm)" : ""
                return .failure(FoldMiss(.noFoldableProducer, "its input '\(x)' comes from a \(graph[p].opType) node, not a Conv, ConvTranspose, Gemm or MatMul\(add)"))
            }
        }
        let producerNode = graph[producerIndex]
        let producerLabel = producerNode.displayName(index: producerIndex.raw)
        if producerNode.isOp("MatMul") {
            // Y = A·B with B [K, N]: the columns are channels only when Y is [batch, N].
            let names = [producerNode.inputs[0], producerNode.outputs[0], x, graph[index].outputs[0]]
            guard let rank = context.declaredRank(ofAny: names, in: graph) else {
                return .failure(FoldMiss(.unknownRank, "the rank of the input '\(producerNode.inputs[0])' of \(producerLabel) is not declared, so it is unknown whether the BN's channel axis 1 is the MatMul's feature axis"))
            }
            guard rank == 2 else {
                return .failure(FoldMiss(.channelAxisMismatch, "\(producerLabel) computes a rank-\(rank) output whose features are on the last axis, but the BN normalizes axis 1"))
            }
        }
        let op: LinearOperator
        switch LinearOperator.read(producerIndex, in: graph, context: context) {
        case .success(let read): op = read
        case .failure(let miss): return .failure(miss)
        }
        var add: AddStep?
        if let addIndex {
            let addNode = graph[addIndex]
            guard let (_, constantSlot) = matMulBeforeAdd(addIndex, in: graph, context: context),
                  case .success(let (tensor, _)) = context.constant(named: addNode.inputs[constantSlot], in: graph)
            else { return .failure(FoldMiss(.noFoldableProducer, "the Add before it has no constant operand")) }
            guard tensor.elementType == op.elementType else {
                return .failure(FoldMiss(.unsupportedElementType, "the Add constant '\(addNode.inputs[constantSlot])' has element type \(tensor.elementType), the weight \(op.elementType)"))
            }
            switch perChannelValues(of: tensor, named: addNode.inputs[constantSlot], outputRank: 2, channels: op.outChannels) {
            case .failure(let miss): return .failure(miss)
            case .success(let values):
                add = AddStep(node: addIndex, label: addNode.displayName(index: addIndex.raw), values: values,
                              constantName: addNode.inputs[constantSlot])
            }
        }
        let bn: InferenceBatchNorm
        switch InferenceBatchNorm.read(bn: index, in: graph, context: context, channels: op.outChannels,
                                       partner: op.label) {
        case .success(let read): bn = read
        case .failure(let miss): return .failure(miss)
        }
        let added = add?.values ?? [Double](repeating: 0, count: op.outChannels)
        let rewrite = op.foldingOutputAffine(scale: bn.scale, bias: { c, b in
            (b + added[c] - bn.mean[c]) * bn.scale[c] + bn.beta[c]
        }, createsBias: true)
        switch rewrite {
        case .failure(let miss): return .failure(miss)
        case .success(let r): return .success(Fold(bn: bn, producer: op, add: add, rewrite: r))
        }
    }

    /// The node producing `value`, when `consumer` is its only reader and it
    /// is not a graph output.
    func singleUseProducer(of value: String, consumer: NodeID, in graph: Graph,
                           context: PassContext) -> Result<NodeID, FoldMiss> {
        let v = graph.value(named: value)
        guard let (producer, slot) = v.producer else {
            return .failure(FoldMiss(.noFoldableProducer, "its input '\(value)' comes from no node (a graph input or initializer), not a Conv, ConvTranspose, Gemm or MatMul"))
        }
        guard slot == 0 else {
            return .failure(FoldMiss(.noFoldableProducer, "its input '\(value)' is output \(slot) of a \(graph[producer].opType) node, not the output of a Conv, ConvTranspose, Gemm or MatMul"))
        }
        let node = graph[producer]
        // A node that is not a candidate is reported as such, before its
        // other uses matter.
        guard LinearOperator.isLinear(node) || matMulBeforeAdd(producer, in: graph, context: context) != nil else {
            return .success(producer)
        }
        let label = node.displayName(index: producer.raw)
        if v.isGraphOutput {
            return .failure(FoldMiss(.producerIsGraphOutput, "the output '\(value)' of \(label) is also a graph output, which must keep its unnormalized values"))
        }
        if v.uses.count != 1 {
            let others = v.uses.filter { $0.node != consumer }
            let what = others.count == 1
                ? (others[0].input == nil ? "a subgraph of \(graph[others[0].node].displayName(index: others[0].node.raw))"
                    : "\(graph[others[0].node].displayName(index: others[0].node.raw))")
                : "\(others.count) other nodes"
            return .failure(FoldMiss(.producerHasOtherUses, "the output '\(value)' of \(label) is also used by \(what), which needs its unnormalized values"))
        }
        return .success(producer)
    }

    /// For an Add node `add` with one constant operand whose other operand a
    /// MatMul computes: the MatMul's index and the constant's input slot.
    func matMulBeforeAdd(_ add: NodeID, in graph: Graph, context: PassContext) -> (NodeID, Int)? {
        let node = graph[add]
        guard node.isOp("Add"), node.inputs.count == 2 else { return nil }
        for slot in 0..<2 {
            guard case .success = context.constant(named: node.inputs[slot], in: graph),
                  let (p, output) = graph.value(named: node.inputs[1 - slot]).producer, output == 0,
                  graph[p].isOp("MatMul")
            else { continue }
            return (p, slot)
        }
        return nil
    }

    // MARK: Rewriting

    func apply(_ fold: Fold, to graph: inout Graph, context: PassContext, opset: Int64) -> RewriteRecord {
        let bn = graph[fold.bn.node]
        let op = fold.producer
        var record = RewriteRecord(pass: name, reason: fold.reason.rawValue, kind: .batchNormIntoProducer,
                                   subject: fold.bn.node, op: op.node,
                                   replaced: [op.node] + (fold.add.map { [$0.node] } ?? []) + [fold.bn.node],
                                   in: graph, context: context, known: fold.bn.tensors.merging(op.constants) { a, _ in a })
        var candidates = graph.apply(fold.rewrite, to: op, context: context, opset: opset)
        candidates.insert(graph[op.node].outputs[0])
        // The producer now computes the BN's output, under the BN's name.
        graph.setOutput(node: op.node, slot: 0, to: bn.outputs[0])
        var removed: Set<NodeID> = [fold.bn.node]
        if let add = fold.add {
            candidates.formUnion(graph[add.node].inputs + graph[add.node].outputs)
            removed.insert(add.node)
        }
        graph.removeNodes(removed)
        candidates.formUnion(bn.inputs.dropFirst())
        candidates.formUnion(bn.outputs.dropFirst())
        graph.removeDeadValues(candidates, context: context)
        record.finish(replacement: op.node, in: graph, context: context)
        return record
    }
}
