import ONNXGraph

/// Folds a `Mul` or `Add` by a per-channel constant into the `Conv`,
/// `ConvTranspose` or `Gemm` before it: a BatchNormalization that an
/// exporter decomposed (TensorFlow/Keras write BN as Mul + Add).
///
/// Given:
///
///     y = Conv(x, W, b)          (or ConvTranspose, or Gemm: b = beta·C)
///     z = Mul(y, m)              m: one value per output channel after broadcasting
///     w = Add(z, a)              a: likewise
///
/// Result (in two steps, Mul first):
///
///     z = Conv(x, W·m_c, b·m_c)  (no bias is added when there was none)
///     w = Conv(x, W·m_c, b·m_c + a_c)
///
/// Exact in real arithmetic for the same reason as the BN fold: output
/// channel c of the op is linear in channel c's weights and bias. Computed
/// in Double, rounded once into the element type. The constant may be either
/// operand. "Per output channel" is decided by ONNX broadcasting, aligned
/// from the right against the op's output (`[N, C, d…]`, or Gemm's `[M, N]`):
/// a scalar, `[C, 1, …, 1]` or `[1, C, 1, …, 1]` is per channel; `[C]`
/// against NCHW lines up with W and scales columns, so it is left alone
/// whatever its length. A Gemm's bias becomes `C'` with `beta = 1`, as in
/// ``FoldBatchNorm``. MatMul is not a producer here: MatMul → Add(bias) is
/// how every exported Linear layer looks, and is better left as it is.
///
/// Only Mul/Add nodes with a constant operand whose other operand a Conv,
/// ConvTranspose or Gemm computes are candidates; others get no remark.
///
/// Applied reason ids: `ConvMulFolded`, `ConvAddFolded`,
/// `ConvTransposeMulFolded`, `ConvTransposeAddFolded`, `GemmMulFolded`,
/// `GemmAddFolded`. Missed (see ``FoldReason``): `BroadcastNotPerChannel`,
/// `RankMismatch`, `ShapeMismatch`, `ProducerHasOtherUses`,
/// `ProducerIsGraphOutput`, `NonConstantWeights`, `OverridableInitializer`, `UnsupportedElementType`,
/// `UnsupportedAttribute`, `NotRepresentable`.
public struct FoldAffineIntoProducer: GraphPass {
    public let name = "fold-mul-add"
    public let summary = "Fold a per-channel constant Mul or Add into the Conv, ConvTranspose or Gemm before it (a decomposed BatchNormalization)."

    public init() {}

    public func run(on graph: inout Graph, context: inout PassContext) throws -> PassResult {
        guard graph.nodes.contains(where: { $0.isOp("Mul") || $0.isOp("Add") }) else { return PassResult(modified: false) }
        let opset = context.defaultOpsetVersion ?? FoldBatchNorm.knownOpsets.upperBound
        let scan = context  // what the folds read: the scope and options, not the remarks
        let modified = try foldEachCandidate(
            in: &graph, context: &context, pass: name,
            isCandidate: { g, i in candidate(i, in: g, context: scan) != nil },
            fold: { g, i in
                guard let c = candidate(i, in: g, context: scan) else {
                    return .failure(FoldMiss(.noFoldableProducer, "not a Mul or Add by a constant after a Conv, ConvTranspose or Gemm"))
                }
                return match(c, in: g, context: scan).map { (op, rewrite) in
                    let reason = Self.reason(op.kind, isMul: c.isMul)
                    let record = apply(rewrite, op: op, candidate: c, reason: reason, to: &g, context: scan, opset: opset)
                    return Folded(reason: reason, message: "folded into \(op.label) (\(op.outChannels) channels)", record: record)
                }
            })
        return PassResult(modified: modified)
    }

    static func reason(_ kind: LinearOperator.Kind, isMul: Bool) -> FoldReason {
        switch (kind, isMul) {
        case (.conv, true): .convMulFolded
        case (.conv, false): .convAddFolded
        case (.convTranspose, true): .convTransposeMulFolded
        case (.convTranspose, false): .convTransposeAddFolded
        case (.gemm, true), (.matMul, true): .gemmMulFolded
        case (.gemm, false), (.matMul, false): .gemmAddFolded
        }
    }

    // MARK: Matching

    /// A Mul/Add with a constant operand and a Conv/ConvTranspose/Gemm on the other.
    struct Candidate {
        let node: NodeID
        let isMul: Bool
        let producer: NodeID
        let constantSlot: Int
        let constant: Tensor
    }

    func candidate(_ index: NodeID, in graph: Graph, context: PassContext) -> Candidate? {
        let node = graph[index]
        guard node.isOp("Mul") || node.isOp("Add"), node.inputs.count == 2, node.outputs.count == 1, !node.outputs[0].isEmpty else { return nil }
        for slot in 0..<2 {
            guard case .success(let (tensor, _)) = context.constant(named: node.inputs[slot], in: graph),
                  let (p, output) = graph.value(named: node.inputs[1 - slot]).producer, output == 0,
                  ["Conv", "ConvTranspose", "Gemm"].contains(where: graph[p].isOp) else { continue }
            return Candidate(node: index, isMul: node.isOp("Mul"), producer: p, constantSlot: slot, constant: tensor)
        }
        return nil
    }

    func match(_ c: Candidate, in graph: Graph, context: PassContext) -> Result<(LinearOperator, LinearRewrite), FoldMiss> {
        let node = graph[c.node]
        let y = node.inputs[1 - c.constantSlot]
        let v = graph.value(named: y)
        let producerLabel = graph[c.producer].displayName(index: c.producer.raw)
        if v.isGraphOutput {
            return .failure(FoldMiss(.producerIsGraphOutput, "the output '\(y)' of \(producerLabel) is also a graph output, which must keep its values"))
        }
        if v.uses.count != 1 {
            return .failure(FoldMiss(.producerHasOtherUses, "the output '\(y)' of \(producerLabel) is also used by \(v.uses.count - 1) other node(s), which need its values unchanged"))
        }
        let op: LinearOperator
        switch LinearOperator.read(c.producer, in: graph, context: context) {
        case .success(let read): op = read
        case .failure(let miss): return .failure(miss)
        }
        let constantName = node.inputs[c.constantSlot]
        guard c.constant.elementType == op.elementType else {
            return .failure(FoldMiss(.unsupportedElementType, "the constant '\(constantName)' has element type \(c.constant.elementType), the weight of \(op.label) \(op.elementType)"))
        }
        let values: [Double]
        switch perChannelValues(of: c.constant, named: constantName, outputRank: op.outputRank, channels: op.outChannels) {
        case .success(let v): values = v
        case .failure(let miss): return .failure(miss)
        }
        let rewrite = c.isMul
            ? op.foldingOutputAffine(scale: values, bias: { ch, b in b * values[ch] }, createsBias: false)
            : op.foldingOutputAffine(scale: nil, bias: { ch, b in b + values[ch] }, createsBias: true)
        return rewrite.map { (op, $0) }
    }

    // MARK: Rewriting

    func apply(_ rewrite: LinearRewrite, op: LinearOperator, candidate c: Candidate, reason: FoldReason,
               to graph: inout Graph, context: PassContext, opset: Int64) -> RewriteRecord {
        let node = graph[c.node]
        var record = RewriteRecord(pass: name, reason: reason.rawValue, kind: .affineIntoProducer, subject: c.node,
                                   op: op.node, replaced: [op.node, c.node], in: graph, context: context)
        var candidates = graph.apply(rewrite, to: op, context: context, opset: opset)
        candidates.formUnion(node.inputs)
        // The producer now computes the Mul/Add's output, under its name.
        graph.setOutput(node: op.node, slot: 0, to: node.outputs[0])
        graph.removeNodes([c.node])
        graph.removeDeadValues(candidates, context: context)
        record.finish(replacement: op.node, in: graph, context: context)
        return record
    }
}
