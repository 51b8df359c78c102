import ONNXGraph

/// The stable reason ids of the built-in passes' remarks, one vocabulary
/// for all of them (`fold-constants` included): a reason means the same thing whichever pass gives it, so
/// users can filter on it (`--json`, `bnfold inspect`).
///
/// Applied ids name the pattern in graph order (`ConvBatchNormFolded`: a
/// Conv followed by a BatchNormalization). Missed ids name the obstacle.
/// Each pass's doc comment lists the ids it uses and what they mean there.
public enum FoldReason: String, CaseIterable, Sendable {
    // MARK: Applied: BatchNormalization folded into the op before it (fold-batchnorm)
    case convBatchNormFolded = "ConvBatchNormFolded"
    case convTransposeBatchNormFolded = "ConvTransposeBatchNormFolded"
    case gemmBatchNormFolded = "GemmBatchNormFolded"
    /// MatMul → BN and MatMul → Add(constant) → BN, rewritten to one Gemm.
    case matMulBatchNormFolded = "MatMulBatchNormFolded"

    // MARK: Applied: constant Mul / Add folded into the op before it (fold-mul-add)
    case convMulFolded = "ConvMulFolded"
    case convAddFolded = "ConvAddFolded"
    case convTransposeMulFolded = "ConvTransposeMulFolded"
    case convTransposeAddFolded = "ConvTransposeAddFolded"
    case gemmMulFolded = "GemmMulFolded"
    case gemmAddFolded = "GemmAddFolded"

    // MARK: Applied: BatchNormalization folded into the op after it (fold-batchnorm-forward)
    case batchNormConvFolded = "BatchNormConvFolded"
    case batchNormGemmFolded = "BatchNormGemmFolded"
    /// BN → MatMul, rewritten to one Gemm.
    case batchNormMatMulFolded = "BatchNormMatMulFolded"

    // MARK: fold-constants
    /// A node whose inputs are all constant was computed and stored as initializers.
    case constantFolded = "ConstantFolded"
    /// Its inputs are constant, but the reference runtime lacks the operator.
    case unsupportedOperator = "UnsupportedOperator"
    /// An input or the predicted output is over the pass's element limits.
    case exceedsSizeLimit = "ExceedsSizeLimit"
    /// The reference runtime could not compute it.
    case evaluationFailed = "EvaluationFailed"

    // MARK: Missed
    /// The BN uses batch statistics (`training_mode = 1`, `is_test = 0`, or
    /// declared mean/variance outputs before opset 14).
    case trainingMode = "TrainingMode"
    /// The BN's running mean/variance outputs are used.
    case extraOutputsUsed = "ExtraOutputsUsed"
    /// `spatial = 0` (opset < 9): statistics per activation, not per channel.
    case notSpatial = "NotSpatial"
    /// The BN's input does not come from an op bnfold can fold it into.
    case noFoldableProducer = "NoFoldableProducer"
    /// The producer's output is also read by another node, which needs it unchanged.
    case producerHasOtherUses = "ProducerHasOtherUses"
    /// The producer's output is also a graph output.
    case producerIsGraphOutput = "ProducerIsGraphOutput"
    /// A weight or bias of the linear op is not known before run time.
    case nonConstantWeights = "NonConstantWeights"
    /// A BN parameter (or the Mul/Add operand) is not known before run time.
    case nonConstantBNParameters = "NonConstantBNParameters"
    /// A weight or parameter is an initializer that is also a graph input of
    /// an IR ≥ 4 model, which callers may replace at run time; folded only
    /// with `--assume-constant-inputs` (``PassContext/assumeConstantInputs``).
    case overridableInitializer = "OverridableInitializer"
    /// Lengths or shapes disagree (parameters vs channels, weight rank).
    case shapeMismatch = "ShapeMismatch"
    /// Not float, double, float16 or bfloat16, or types differ.
    case unsupportedElementType = "UnsupportedElementType"
    /// σ² + ε ≤ 0 for some channel.
    case nonPositiveVariance = "NonPositiveVariance"
    /// A folded value is not finite or overflows the element type.
    case notRepresentable = "NotRepresentable"
    /// The BN normalizes axis 1, which is not the feature axis of the
    /// MatMul/Gemm it would fold into (MatMul input of rank > 2, Gemm with transA = 1).
    case channelAxisMismatch = "ChannelAxisMismatch"
    /// The rank of a MatMul input is not declared anywhere, so whether axis 1
    /// is its feature axis cannot be known.
    case unknownRank = "UnknownRank"
    /// A Mul/Add constant varies along an axis other than the channel axis
    /// (e.g. shape `[C]` against NCHW aligns with W), so it is not a
    /// per-channel scale or shift.
    case broadcastNotPerChannel = "BroadcastNotPerChannel"
    /// A Mul/Add constant has more axes than the op's output: broadcasting
    /// would change the output's shape.
    case rankMismatch = "RankMismatch"
    /// A forward fold into a Conv that pads: padded zeros are not shifted by
    /// the BN, so the folded bias would be wrong at the borders.
    case paddingBreaksForwardFold = "PaddingBreaksForwardFold"
    /// A forward fold: the BN's output is read by more than the one op.
    case batchNormOutputHasOtherUses = "BatchNormOutputHasOtherUses"
    /// A forward fold: the BN's output is a graph output.
    case batchNormOutputIsGraphOutput = "BatchNormOutputIsGraphOutput"
    /// An attribute the fold depends on has a type or value the ONNX schema
    /// does not allow (e.g. a FLOAT `transB`, an unknown `auto_pad`).
    case unsupportedAttribute = "UnsupportedAttribute"
}

/// A failed match: the reason id and a sentence for the user.
struct FoldMiss: Error {
    let reason: FoldReason
    let message: String
    init(_ reason: FoldReason, _ message: String) { self.reason = reason; self.message = message }
}

extension PassContext {
    /// ``constant(named:in:)`` for a fold: the constant, or the miss that
    /// explains why `what` (e.g. "the weight 'W' of conv") is not one.
    ///
    /// The reason is `reason` — except for a value that is only not constant
    /// because a caller may override it at run time (an IR ≥ 4 initializer
    /// that is also a graph input, also behind `Identity` nodes): that is
    /// `OverridableInitializer`, which tells the user the option that folds it.
    func constant(named name: String, in graph: Graph, else reason: FoldReason,
                  describing what: @autoclosure () -> String) -> Result<(Tensor, ConstantSource), FoldMiss> {
        // The description is built only for a miss (every fold looks up
        // half a dozen constants; formatting each name was measurable).
        constant(named: name, in: graph).mapError { why in
            FoldMiss(why.root == .overridableInitializer ? .overridableInitializer : reason, "\(what()) \(why.explanation)")
        }
    }
}

extension FoldReason {
    /// True for the one reason that says only "nothing to fold into here":
    /// when another pass said more about the same node, its remark is the
    /// node's verdict (``PassManager/Report/remarks``).
    public var isUninformative: Bool { self == .noFoldableProducer }

    /// True for the applied ids of a fold that removed a BatchNormalization
    /// (backward or forward; not the Mul/Add folds).
    public var removesBatchNormalization: Bool {
        switch self {
        case .convBatchNormFolded, .convTransposeBatchNormFolded, .gemmBatchNormFolded, .matMulBatchNormFolded,
             .batchNormConvFolded, .batchNormGemmFolded, .batchNormMatMulFolded: true
        default: false
        }
    }
}

extension Remark {
    /// True when this remark reports a folded BatchNormalization (for
    /// counting them: `remarks.filter(\.foldedBatchNormalization).count`).
    public var foldedBatchNormalization: Bool {
        kind == .applied && (FoldReason(rawValue: reason)?.removesBatchNormalization ?? false)
    }
}
