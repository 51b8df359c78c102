import ONNXGraph

/// Folds an inference-mode `BatchNormalization` into the `Conv` before it.
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
/// z_c = s_c · (y_c − μ_c) + β_c, and a convolution's output channel c is
/// linear in the weights of that channel, so the fold is exact in real
/// arithmetic. bnfold computes it in Double and rounds once into the
/// weight's element type.
///
/// The Conv takes the BatchNormalization's output name, so downstream nodes
/// and graph outputs are untouched. A weight or bias shared with another
/// node is not modified: the folded values go into a new initializer.
/// Initializers, `Constant` and `Identity` nodes only the fold's inputs
/// used are removed.
///
/// Not folded (a `missed` remark with the reason id):
/// - `TrainingMode`: `training_mode = 1`, `is_test = 0` before opset 7, or
///   mean/variance outputs declared (which before opset 14 is what makes a
///   BatchNormalization training mode) — the output uses batch statistics.
/// - `ExtraOutputsUsed`: the running mean/variance outputs are used.
/// - `NotSpatial`: `spatial = 0` (opset < 9), per-activation statistics.
/// - `NoFoldableProducer`: the input does not come from a Conv.
/// - `ProducerHasOtherUses` / `ProducerIsGraphOutput`: the Conv's output is
///   also needed unnormalized.
/// - `NonConstantWeights` / `NonConstantBNParameters`: a value is not known
///   before run time (see ``PassContext/constant(named:in:)`` for what is).
/// - `OverridableInitializer`: a weight or parameter is an initializer that
///   is also a graph input of an IR ≥ 4 model, which callers may replace;
///   folded only with ``PassContext/assumeConstantInputs``.
/// - `ShapeMismatch`: parameter lengths differ from the Conv's output channels.
/// - `UnsupportedElementType`: not float, double, float16 or bfloat16.
/// - `NonPositiveVariance`: σ²_c + ε ≤ 0 for some channel.
/// - `NotRepresentable`: a folded value is not finite, or overflows the
///   element type (float16 above 65504).
public struct FoldBatchNorm: GraphPass {
    public let name = "fold-batchnorm"
    public let summary = "Fold inference-mode BatchNormalization into the preceding Conv (W' = W·s, b' = (b − mean)·s + β)."

    /// Default-domain opset versions whose BatchNormalization this pass
    /// understands (its definitions changed at 1, 6, 7, 9, 14 and 15; ONNX
    /// 1.23 defines opsets up to 28).
    public static let knownOpsets: ClosedRange<Int64> = 1...28

    public init() {}

    /// Stable reason ids of this pass's remarks.
    public enum Reason: String, CaseIterable, Sendable {
        case folded = "ConvBatchNormFolded"
        case trainingMode = "TrainingMode"
        case extraOutputsUsed = "ExtraOutputsUsed"
        case notSpatial = "NotSpatial"
        case noFoldableProducer = "NoFoldableProducer"
        case producerHasOtherUses = "ProducerHasOtherUses"
        case producerIsGraphOutput = "ProducerIsGraphOutput"
        case nonConstantWeights = "NonConstantWeights"
        case nonConstantBNParameters = "NonConstantBNParameters"
        case overridableInitializer = "OverridableInitializer"
        case shapeMismatch = "ShapeMismatch"
        case unsupportedElementType = "UnsupportedElementType"
        case nonPositiveVariance = "NonPositiveVariance"
        case notRepresentable = "NotRepresentable"
    }

    public func run(on graph: inout Graph, context: inout PassContext) throws -> PassResult {
        guard graph.nodes.contains(where: { $0.isOp("BatchNormalization") }) else { return PassResult(modified: false) }
        guard let opset = context.defaultOpsetVersion else {
            throw PassError(pass: name, "the model uses BatchNormalization but imports no default-domain opset")
        }
        guard Self.knownOpsets.contains(opset) else {
            throw PassError(pass: name, "default-domain opset \(opset) is not one bnfold knows (\(Self.knownOpsets.lowerBound)–\(Self.knownOpsets.upperBound))")
        }
        var modified = false
        var decided: Set<Int> = []  // BN nodes given a missed remark this run (by index; stable until a fold)
        var index = 0
        while index < graph.nodes.count {
            let node = graph.nodes[index]
            guard node.isOp("BatchNormalization"), !decided.contains(index) else { index += 1; continue }
            let label = node.displayName(index: index)
            switch match(bn: index, in: graph, opset: opset, context: context) {
            case .failure(let miss):
                context.remark(Remark(kind: .missed, pass: name, reason: miss.reason.rawValue, node: label,
                                      message: miss.message))
                decided.insert(index)
                index += 1
            case .success(let fold):
                let convLabel = graph.nodes[fold.conv].displayName(index: fold.conv)
                apply(fold, to: &graph, context: context)
                context.remark(Remark(
                    kind: .applied, pass: name, reason: Reason.folded.rawValue, node: label,
                    message: "folded into \(convLabel) (\(fold.channels) channels, ε = \(fold.epsilon))"))
                modified = true
                // Node indices moved: rescan from the start. Re-deciding is
                // cheap and deterministic; drop the earlier missed remarks so
                // that each BN gets exactly one.
                decided = []
                index = 0
                context.dropMissedRemarks(pass: name)
            }
        }
        return PassResult(modified: modified)
    }

    // MARK: Matching

    struct Miss: Error {
        let reason: Reason
        let message: String
        init(_ reason: Reason, _ message: String) { self.reason = reason; self.message = message }
    }

    struct Fold {
        let bn: Int
        let conv: Int
        let channels: Int
        let epsilon: Float
        let weight: Tensor
        let weightSource: ConstantSource
        let bias: Tensor
        /// Where the existing bias comes from; nil when the Conv had none.
        let biasSource: ConstantSource?
    }

    func match(bn index: Int, in graph: Graph, opset: Int64, context: PassContext) -> Result<Fold, Miss> {
        let bn = graph.nodes[index]
        // Mode attributes, per the BatchNormalization version in force.
        if opset >= 14, let t = bn.intAttribute("training_mode"), t != 0 {
            return .failure(Miss(.trainingMode, "training_mode = \(t): the output is normalized with batch statistics, which change with every batch"))
        }
        if opset < 7, (bn.intAttribute("is_test") ?? 0) == 0 {
            return .failure(Miss(.trainingMode, "is_test is not set (opset \(opset)): the output is normalized with batch statistics, not the running ones"))
        }
        if opset < 9, let spatial = bn.intAttribute("spatial"), spatial == 0 {
            return .failure(Miss(.notSpatial, "spatial = 0: statistics are per activation, not per channel"))
        }
        guard bn.inputs.count == 5, bn.outputs.count >= 1, !bn.outputs[0].isEmpty else {
            return .failure(Miss(.shapeMismatch, "expects 5 inputs and an output, has \(bn.inputs.count) inputs"))
        }
        for extra in bn.outputs.dropFirst() where !extra.isEmpty {
            if !graph.value(named: extra).isDead {
                return .failure(Miss(.extraOutputsUsed, "its running mean/variance output '\(extra)' is used"))
            }
        }
        // Before opset 14 the outputs decide the mode: a BatchNormalization
        // that declares its mean/variance outputs is in training mode (and
        // runtimes compute it with batch statistics), used or not. From 14
        // on, training_mode = 0 with those outputs is not a valid node.
        if let extra = bn.outputs.dropFirst().first(where: { !$0.isEmpty }) {
            return .failure(Miss(.trainingMode, "it declares the mean/variance output '\(extra)', which only training mode produces: the output is normalized with batch statistics"))
        }
        let x = bn.inputs[0]
        let xValue = graph.value(named: x)
        guard let (convIndex, _) = xValue.producer, graph.nodes[convIndex].isOp("Conv") else {
            let what = xValue.producer.map { "a \(graph.nodes[$0.node].opType) node" } ?? "no node (a graph input or initializer)"
            return .failure(Miss(.noFoldableProducer, "its input '\(x)' comes from \(what), not a Conv"))
        }
        let conv = graph.nodes[convIndex]
        let convLabel = conv.displayName(index: convIndex)
        if xValue.isGraphOutput {
            return .failure(Miss(.producerIsGraphOutput, "the output '\(x)' of \(convLabel) is also a graph output, which must keep its unnormalized values"))
        }
        if xValue.uses.count != 1 {
            let others = xValue.uses.filter { $0.node != index }
            let what = others.count == 1
                ? (others[0].input == nil ? "a subgraph of \(graph.nodes[others[0].node].displayName(index: others[0].node))"
                    : "\(graph.nodes[others[0].node].displayName(index: others[0].node))")
                : "\(others.count) other nodes"
            return .failure(Miss(.producerHasOtherUses, "the output '\(x)' of \(convLabel) is also used by \(what), which needs its unnormalized values"))
        }
        guard conv.inputs.count >= 2 else {
            return .failure(Miss(.shapeMismatch, "\(convLabel) has no weight input"))
        }

        // Constants.
        func constant(_ name: String) -> Result<(Tensor, ConstantSource), NotConstant> {
            context.constant(named: name, in: graph)
        }
        func notConstant(_ reason: Reason, _ why: NotConstant, _ what: String) -> Result<Fold, Miss> {
            .failure(Miss(why.root == .overridableInitializer ? .overridableInitializer : reason, "\(what) \(why.explanation)"))
        }
        let weight: Tensor, weightSource: ConstantSource
        switch constant(conv.inputs[1]) {
        case .success(let w): (weight, weightSource) = w
        case .failure(let why):
            return notConstant(.nonConstantWeights, why, "the weight '\(conv.inputs[1])' of \(convLabel)")
        }
        var bias: (Tensor, ConstantSource)?
        if conv.inputs.count >= 3, !conv.inputs[2].isEmpty {
            switch constant(conv.inputs[2]) {
            case .success(let b): bias = b
            case .failure(let why):
                return notConstant(.nonConstantWeights, why, "the bias '\(conv.inputs[2])' of \(convLabel)")
            }
        }
        var params: [[Double]] = []
        for (slot, role) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")] {
            switch constant(bn.inputs[slot]) {
            case .failure(let why):
                return notConstant(.nonConstantBNParameters, why, "its \(role) '\(bn.inputs[slot])'")
            case .success(let (t, _)):
                guard t.elementType.isFoldableFloat else {
                    return .failure(Miss(.unsupportedElementType, "its \(role) has element type \(t.elementType)"))
                }
                guard let values = try? t.doubles() else {
                    return .failure(Miss(.nonConstantBNParameters, "its \(role) '\(bn.inputs[slot])' could not be read"))
                }
                params.append(values)
            }
        }

        // Shapes and types.
        let type = weight.elementType
        guard type.isFoldableFloat else {
            return .failure(Miss(.unsupportedElementType, "the weight of \(convLabel) has element type \(type); bnfold folds float, double, float16 and bfloat16"))
        }
        guard weight.dims.count >= 3, let channels = weight.dims.first.map(Int.init), channels > 0 else {
            return .failure(Miss(.shapeMismatch, "the weight of \(convLabel) has shape \(weight.dims), not [C_out, C_in/group, k...]"))
        }
        for (values, role) in zip(params, ["scale", "bias", "mean", "variance"]) where values.count != channels {
            return .failure(Miss(.shapeMismatch, "its \(role) has \(values.count) values but \(convLabel) has \(channels) output channels"))
        }
        if let (b, _) = bias {
            guard b.elementCount == channels else {
                return .failure(Miss(.shapeMismatch, "the bias of \(convLabel) has \(b.elementCount ?? -1) values for \(channels) output channels"))
            }
            guard b.elementType == type else {
                return .failure(Miss(.unsupportedElementType, "the bias of \(convLabel) has element type \(b.elementType), the weight \(type)"))
            }
        }
        let epsilon = bn.floatAttribute("epsilon") ?? 1e-5

        // The fold, in Double.
        let b: [Double]
        if let (existing, _) = bias {
            guard let values = try? existing.doubles(), values.count == channels else {
                return .failure(Miss(.nonConstantWeights, "the bias of \(convLabel) could not be read"))
            }
            b = values
        } else {
            b = [Double](repeating: 0, count: channels)
        }
        let (gamma, beta, mean, variance) = (params[0], params[1], params[2], params[3])
        let eps = Double(epsilon)
        var scale = [Double](repeating: 0, count: channels)
        var newBias = [Double](repeating: 0, count: channels)
        for c in 0..<channels {
            let denominator = variance[c] + eps
            guard denominator > 0 else {
                return .failure(Miss(.nonPositiveVariance, "channel \(c) has variance \(variance[c]) + ε \(epsilon) ≤ 0"))
            }
            scale[c] = gamma[c] / denominator.squareRoot()
            newBias[c] = (b[c] - mean[c]) * scale[c] + beta[c]
            // The scale is never stored, so only the Double value must be finite.
            guard scale[c].isFinite, type.roundsToFinite(newBias[c]) else {
                return .failure(Miss(.notRepresentable, "channel \(c): the folded bias \(newBias[c]) (scale \(scale[c])) is not representable in \(type)"))
            }
        }
        let foldedWeight: Tensor
        do {
            // W is [C_out, C_in/group, k...]: block c is output channel c.
            let perChannel = (weight.elementCount ?? 0) / channels
            foldedWeight = try weight.scaledBlocks(blockSize: perChannel, scale: scale, channelOfBlock: { $0 })
        } catch let e as UnrepresentableElement {
            return .failure(Miss(.notRepresentable, "weight element \(e.index) of \(convLabel) becomes \(e.value), which is not representable in \(type)"))
        } catch {
            return .failure(Miss(.nonConstantWeights, "the weight of \(convLabel) could not be read: \(error)"))
        }
        let foldedBias: Tensor
        if let (existing, _) = bias, let t = existing.replacingData(with: newBias) {
            foldedBias = t
        } else if let t = Tensor(name: nil, elementType: type, dims: [Int64(channels)], values: newBias) {
            foldedBias = t
        } else {
            return .failure(Miss(.unsupportedElementType, "cannot write element type \(type)"))
        }
        return .success(Fold(bn: index, conv: convIndex, channels: channels, epsilon: epsilon,
                             weight: foldedWeight, weightSource: weightSource,
                             bias: foldedBias, biasSource: bias?.1))
    }

    // MARK: Rewriting

    func apply(_ fold: Fold, to graph: inout Graph, context: PassContext) {
        let bn = graph.nodes[fold.bn]
        let oldOutput = graph.nodes[fold.conv].outputs[0]
        let oldConstants = graph.nodes[fold.conv].inputs.dropFirst()  // read through Identity chains, maybe
        graph.replaceConstantInput(node: fold.conv, slot: 1, with: fold.weight, source: fold.weightSource,
                                   context: context)
        if let source = fold.biasSource {
            graph.replaceConstantInput(node: fold.conv, slot: 2, with: fold.bias, source: source, context: context)
        } else {
            let base = graph.nodes[fold.conv].name.flatMap { $0.isEmpty ? nil : $0 } ?? graph.nodes[fold.conv].inputs[1]
            let biasName = context.uniqueName(base + "_bias", in: graph)
            graph.addInitializer(fold.bias, named: biasName, context: context)
            if graph.nodes[fold.conv].inputs.count >= 3 {
                graph.nodes[fold.conv].inputs[2] = biasName
            } else {
                graph.nodes[fold.conv].inputs.append(biasName)
            }
        }
        // The Conv now computes the BN's output, under the BN's name.
        graph.nodes[fold.conv].outputs[0] = bn.outputs[0]
        graph.nodes.remove(at: fold.bn)
        var candidates = Set(bn.inputs.dropFirst())
        candidates.formUnion(bn.outputs.dropFirst())
        candidates.insert(oldOutput)
        candidates.formUnion(oldConstants)
        graph.removeDeadValues(candidates, context: context)
    }
}

extension PassContext {
    /// Forgets this pass's `missed` remarks of the current run (the pass
    /// re-decides them after a rewrite moved node indices).
    mutating func dropMissedRemarks(pass: String) {
        remarks.removeAll { $0.kind == .missed && $0.pass == pass }
    }
}

