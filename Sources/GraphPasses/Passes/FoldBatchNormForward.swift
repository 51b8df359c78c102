import ONNXGraph

/// Folds an inference-mode `BatchNormalization` into the `Conv`, `Gemm` or
/// `MatMul` after it — for a BN that has nothing before it to fold into
/// (a BN on the network input, or after a pooling or concatenation).
///
/// Given:
///
///     x' = BatchNormalization(x, γ, β, μ, σ²)   x' = s_i·x_i + t_i per input channel i,
///                                                s = γ/sqrt(σ²+ε), t = β − μ·s
///     y  = Conv(x', W, b)                        W: [C_out, C_in/g, k…]
///
/// Result:
///
///     y = Conv(x, W', b')
///     W'[o, i, k] = W[o, i, k] · s_{in(o,i)}     in(o, i) = (o / (C_out/g))·(C_in/g) + i
///     b'_o        = b_o + Σ_{i,k} W[o, i, k] · t_{in(o,i)}
///
/// For Gemm (`transA = 0`, input `[M, K]`, BN channel = feature k):
/// `B'` = op(B) row k times s_k in B's own layout, `C'_j = beta·C_j +
/// alpha·Σ_k op(B)[k, j]·t_k` with `beta = 1` (alpha stays). A MatMul with a
/// constant 2-D weight and a rank-2 input becomes `Gemm(x, B', C')`.
///
/// **Only when the op pads nothing.** Every output of a Conv that pads no
/// input reads a full window of shifted inputs, so the shift contributes
/// the same `Σ W·t` everywhere. A padded Conv reads zeros at the border that
/// the BN would have shifted (BN(0) = t, not 0): the border outputs would
/// come out wrong, so the fold is skipped with `PaddingBreaksForwardFold`.
/// "Pads nothing" means `pads` absent or all zero with `auto_pad` NOTSET,
/// or `auto_pad = VALID`, or `SAME_UPPER`/`SAME_LOWER` when every dilated
/// kernel extent is 1: SAME pads `(⌈in/stride⌉ − 1)·stride + extent − in`,
/// which is ≤ 0 for extent 1 whatever the input size (for larger kernels it
/// depends on sizes bnfold may not know, so those are skipped).
///
/// Only when the BN's output feeds that one op and is not a graph output.
/// The op reads the BN's input instead; the BN and its parameters go.
///
/// Applied reason ids: `BatchNormConvFolded`, `BatchNormGemmFolded`,
/// `BatchNormMatMulFolded`. Missed (see ``FoldReason``):
/// `PaddingBreaksForwardFold`, `BatchNormOutputHasOtherUses`,
/// `BatchNormOutputIsGraphOutput`, `ChannelAxisMismatch` (Gemm with
/// `transA = 1`, MatMul input of rank ≠ 2), `UnknownRank`, and the BN and
/// weight reasons of ``FoldBatchNorm``.
///
/// Remarks: a BN is a candidate only when a Conv, Gemm or MatMul reads its
/// output as the data input; others get no remark from this pass. A BN
/// gets one verdict (decided by ``PassManager/Report/remarks``): a missed
/// remark here wins over `fold-batchnorm`'s `NoFoldableProducer` for the
/// same BN (it says more), and `fold-batchnorm`'s more specific reasons win
/// over it.
public struct FoldBatchNormForward: GraphPass {
    public let name = "fold-batchnorm-forward"
    public let summary = "Fold inference-mode BatchNormalization into the unpadded Conv, Gemm or MatMul after it (W' = W·s on input channels, b' = b + Σ W·(β − mean·s))."

    public init() {}

    public func run(on graph: inout Graph, context: inout PassContext) throws -> PassResult {
        guard graph.nodes.contains(where: { $0.isOp("BatchNormalization") }) else { return PassResult(modified: false) }
        let opset = try FoldBatchNorm.checkedOpset(context, pass: name)
        let scan = context  // what the folds read: the scope and options, not the remarks
        let modified = try foldEachCandidate(
            in: &graph, context: &context, pass: name,
            isCandidate: { g, i in g[i].isOp("BatchNormalization") && consumer(ofBatchNorm: i, in: g) != nil },
            fold: { g, i in
                guard let consumer = consumer(ofBatchNorm: i, in: g) else {
                    return .failure(FoldMiss(.noFoldableProducer, "no Conv, Gemm or MatMul reads its output"))
                }
                return match(bn: i, consumer: consumer, in: g, opset: opset, context: scan).map { fold in
                    let record = apply(fold, to: &g, context: scan, opset: opset)
                    return Folded(reason: fold.reason, message: "folded into \(fold.op.label) (\(fold.op.inChannels) input channels, ε = \(fold.bn.epsilon))",
                                  record: record)
                }
            })
        return PassResult(modified: modified)
    }

    // MARK: Matching

    /// The first Conv, Gemm or MatMul reading the BN's output as its data input.
    func consumer(ofBatchNorm index: NodeID, in graph: Graph) -> NodeID? {
        guard let output = graph[index].outputs.first, !output.isEmpty else { return nil }
        return graph.value(named: output).uses.first { use in
            use.input == 0 && ["Conv", "Gemm", "MatMul"].contains(where: graph[use.node].isOp)
        }?.node
    }

    struct Fold {
        let bn: InferenceBatchNorm
        let op: LinearOperator
        let rewrite: LinearRewrite
        var reason: FoldReason {
            switch op.kind {
            case .conv, .convTranspose: .batchNormConvFolded
            case .gemm: .batchNormGemmFolded
            case .matMul: .batchNormMatMulFolded
            }
        }
    }

    func match(bn index: NodeID, consumer: NodeID, in graph: Graph, opset: Int64,
               context: PassContext) -> Result<Fold, FoldMiss> {
        if let problem = InferenceBatchNorm.modeProblem(bn: index, in: graph, opset: opset) { return .failure(problem) }
        let bnNode = graph[index]
        let output = graph.value(named: bnNode.outputs[0])
        let node = graph[consumer]
        let label = node.displayName(index: consumer.raw)
        if output.isGraphOutput {
            return .failure(FoldMiss(.batchNormOutputIsGraphOutput, "its output '\(output.name)' is a graph output, so it cannot move into \(label)"))
        }
        if output.uses.count != 1 {
            return .failure(FoldMiss(.batchNormOutputHasOtherUses, "its output '\(output.name)' is read by \(output.uses.count) nodes, not only by \(label)"))
        }
        if let problem = layoutProblem(node, label: label, bn: bnNode, in: graph, context: context) {
            return .failure(problem)
        }
        let op: LinearOperator
        switch LinearOperator.read(consumer, in: graph, context: context) {
        case .success(let read): op = read
        case .failure(let miss): return .failure(miss)
        }
        let bn: InferenceBatchNorm
        switch InferenceBatchNorm.read(bn: index, in: graph, context: context, channels: op.inChannels,
                                       partner: "\(op.label) (input channels)") {
        case .success(let read): bn = read
        case .failure(let miss): return .failure(miss)
        }
        return op.foldingInputAffine(scale: bn.scale, shift: bn.shift).map { Fold(bn: bn, op: op, rewrite: $0) }
    }

    /// Why the BN's channel axis is not the op's input-channel axis, or the
    /// op pads: nil when the fold is exact.
    func layoutProblem(_ node: Node, label: String, bn: Node, in graph: Graph, context: PassContext) -> FoldMiss? {
        switch node.opType {
        case "Conv":
            return paddingProblem(node, label: label, in: graph, context: context)
        case "Gemm":
            if node.attribute("transA") != nil, node.intAttribute("transA") != 0 {
                if node.intAttribute("transA") == 1 {
                    return FoldMiss(.channelAxisMismatch, "\(label) has transA = 1: it contracts axis 0 of its input, but the BN normalizes axis 1")
                }
                return FoldMiss(.unsupportedAttribute, "\(label) has a transA that is not the INT 0 or 1")
            }
            return nil
        default:  // MatMul
            let names = [bn.inputs[0], bn.outputs[0], node.outputs.first ?? ""]
            guard let rank = context.declaredRank(ofAny: names, in: graph) else {
                return FoldMiss(.unknownRank, "the rank of its input '\(bn.inputs[0])' is not declared, so it is unknown whether its channel axis 1 is the feature axis of \(label)")
            }
            if rank != 2 {
                return FoldMiss(.channelAxisMismatch, "its input has rank \(rank): \(label) contracts the last axis, but the BN normalizes axis 1")
            }
            return nil
        }
    }

    /// `PaddingBreaksForwardFold` when the Conv reads any padding (see the type's comment).
    func paddingProblem(_ conv: Node, label: String, in graph: Graph, context: PassContext) -> FoldMiss? {
        let autoPad = conv.attribute("auto_pad").map { $0.s.map { String(decoding: $0, as: UTF8.self) } ?? "?" } ?? "NOTSET"
        switch autoPad {
        case "NOTSET", "":
            guard conv.attribute("pads") != nil else { return nil }
            guard let pads = conv.intsAttribute("pads") else {
                return FoldMiss(.unsupportedAttribute, "\(label) has a 'pads' attribute that is not INTS")
            }
            if pads.allSatisfy({ $0 == 0 }) { return nil }
            return FoldMiss(.paddingBreaksForwardFold, "\(label) pads its input (pads \(pads)): the padded zeros are not shifted by the BN, so its bias cannot absorb the shift")
        case "VALID":
            return nil
        case "SAME_UPPER", "SAME_LOWER":
            // The extent (k − 1)·d + 1 is 1 exactly when k = 1 (k ≥ 1).
            let weight = conv.inputs.count > 1 ? (try? context.constant(named: conv.inputs[1], in: graph).get())?.0 : nil
            let kernel = conv.intsAttribute("kernel_shape") ?? weight.map { Array($0.dims.dropFirst(2)) }
            guard let kernel else {
                return FoldMiss(.paddingBreaksForwardFold, "\(label) has auto_pad = \(autoPad) and a kernel of unknown size, so it may pad")
            }
            if kernel.allSatisfy({ $0 == 1 }) { return nil }
            return FoldMiss(.paddingBreaksForwardFold, "\(label) has auto_pad = \(autoPad) with kernel \(kernel), which pads: the padded zeros are not shifted by the BN")
        default:
            return FoldMiss(.unsupportedAttribute, "\(label) has auto_pad = '\(autoPad)', which is not an ONNX value")
        }
    }

    // MARK: Rewriting

    func apply(_ fold: Fold, to graph: inout Graph, context: PassContext, opset: Int64) -> RewriteRecord {
        let bn = graph[fold.bn.node]
        var record = RewriteRecord(pass: name, reason: fold.reason.rawValue, kind: .batchNormIntoConsumer,
                                   subject: fold.bn.node, op: fold.op.node, replaced: [fold.bn.node, fold.op.node],
                                   in: graph, context: context, known: fold.bn.tensors.merging(fold.op.constants) { a, _ in a })
        var candidates = graph.apply(fold.rewrite, to: fold.op, context: context, opset: opset)
        // The op reads what the BN read.
        graph.setInput(node: fold.op.node, slot: 0, to: bn.inputs[0])
        graph.removeNodes([fold.bn.node])
        candidates.formUnion(bn.inputs.dropFirst())
        candidates.formUnion(bn.outputs)
        graph.removeDeadValues(candidates, context: context)
        record.finish(replacement: fold.op.node, in: graph, context: context)
        return record
    }
}
