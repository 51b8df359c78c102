import ONNXGraph

/// An inference-mode `BatchNormalization` as a per-channel affine map,
/// `z_c = s_c·(x_c − μ_c) + β_c` with `s_c = γ_c / sqrt(σ²_c + ε)`: what
/// the forward and backward folds read from the node.
struct InferenceBatchNorm {
    let node: NodeID
    let gamma: [Double], beta: [Double], mean: [Double], variance: [Double]
    /// ε from the attribute (default 1e-5); ONNX stores it as a float.
    let epsilon: Float
    /// The parameter tensors as read, by input name (for the fold's record).
    var tensors: [String: Tensor] = [:]
    /// `s_c = γ_c / sqrt(σ²_c + ε)`, in Double.
    let scale: [Double]
    var channels: Int { scale.count }

    /// `t_c = β_c − μ_c·s_c`: the map is `z_c = s_c·x_c + t_c`.
    var shift: [Double] { (0..<channels).map { beta[$0] - mean[$0] * scale[$0] } }

    /// Why the node is not an inference-mode, per-channel normalization
    /// with one used output, per the BatchNormalization version in force
    /// (`TrainingMode`, `NotSpatial`, `ExtraOutputsUsed`, `ShapeMismatch`);
    /// nil when it is one.
    static func modeProblem(bn index: NodeID, in graph: Graph, opset: Int64) -> FoldMiss? {
        let bn = graph[index]
        if opset >= 14, let t = bn.intAttribute("training_mode"), t != 0 {
            return FoldMiss(.trainingMode, "training_mode = \(t): the output is normalized with batch statistics, which change with every batch" + trainingHint)
        }
        if opset < 7, (bn.intAttribute("is_test") ?? 0) == 0 {
            return FoldMiss(.trainingMode, "is_test is not set (opset \(opset)): the output is normalized with batch statistics, not the running ones" + trainingHint)
        }
        if opset < 9, let spatial = bn.intAttribute("spatial"), spatial == 0 {
            return FoldMiss(.notSpatial, "spatial = 0: statistics are per activation, not per channel")
        }
        guard bn.inputs.count == 5, bn.outputs.count >= 1, !bn.outputs[0].isEmpty, !bn.inputs[0].isEmpty else {
            return FoldMiss(.shapeMismatch, "expects 5 inputs and an output, has \(bn.inputs.count) inputs")
        }
        for extra in bn.outputs.dropFirst() where !extra.isEmpty {
            if !graph.value(named: extra).isDead {
                return FoldMiss(.extraOutputsUsed, "its running mean/variance output '\(extra)' is used")
            }
        }
        // Before opset 14 the outputs decide the mode: a BatchNormalization
        // that declares its mean/variance outputs is in training mode (and
        // runtimes compute it with batch statistics), used or not. From 14
        // on, training_mode = 0 with those outputs is not a valid node.
        if let extra = bn.outputs.dropFirst().first(where: { !$0.isEmpty }) {
            return FoldMiss(.trainingMode, "it declares the mean/variance output '\(extra)', which only training mode produces: the output is normalized with batch statistics" + trainingHint)
        }
        return nil
    }

    /// Reads γ, β, μ, σ² (constants of a float type, `channels` values
    /// each) and computes the scale. `partner` names the op in messages.
    static func read(bn index: NodeID, in graph: Graph, context: PassContext, channels: Int,
                     partner: String) -> Result<InferenceBatchNorm, FoldMiss> {
        let bn = graph[index]
        var params: [[Double]] = []
        var tensors: [String: Tensor] = [:]
        for (slot, role) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")] {
            switch context.constant(named: bn.inputs[slot], in: graph, else: .nonConstantBNParameters,
                                    describing: "its \(role) '\(bn.inputs[slot])'") {
            case .failure(let miss): return .failure(miss)
            case .success(let (t, _)):
                guard t.elementType.isFoldableFloat else {
                    return .failure(FoldMiss(.unsupportedElementType, "its \(role) has element type \(t.elementType)"))
                }
                guard let values = try? t.doubles() else {
                    return .failure(FoldMiss(.nonConstantBNParameters, "its \(role) '\(bn.inputs[slot])' could not be read"))
                }
                params.append(values)
                tensors[bn.inputs[slot]] = t
            }
        }
        for (values, role) in zip(params, ["scale", "bias", "mean", "variance"]) where values.count != channels {
            return .failure(FoldMiss(.shapeMismatch, "its \(role) has \(values.count) values but \(partner) has \(channels) channels"))
        }
        let epsilon = bn.floatAttribute("epsilon") ?? 1e-5
        var scale = [Double](repeating: 0, count: channels)
        for c in 0..<channels {
            let denominator = params[3][c] + Double(epsilon)
            guard denominator > 0 else {
                return .failure(FoldMiss(.nonPositiveVariance, "channel \(c) has variance \(params[3][c]) + ε \(epsilon) ≤ 0"))
            }
            scale[c] = params[0][c] / denominator.squareRoot()
            // The scale is never stored, so only the Double value must be finite.
            guard scale[c].isFinite else {
                return .failure(FoldMiss(.notRepresentable, "channel \(c): the scale \(scale[c]) is not finite"))
            }
        }
        var read = InferenceBatchNorm(node: index, gamma: params[0], beta: params[1], mean: params[2],
                                      variance: params[3], epsilon: epsilon, scale: scale)
        read.tensors = tensors
        return .success(read)
    }
}

/// What to do about a training-mode BatchNormalization: almost always the
/// model was exported from a network still in training mode.
let trainingHint = " (was the model exported in training mode? call model.eval() before torch.onnx.export, or export with training=TrainingMode.EVAL)"
