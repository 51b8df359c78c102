import Testing
@testable import GraphPasses
import ONNXGraph
import TestSupport

/// One test per reason id the new folds introduced (and the old ids where
/// they now apply to new producers): every built-in pass runs, the graph
/// comes back unchanged, and exactly one `missed` remark says why.
@Suite("Fold passes: new reasons to leave a candidate alone")
struct FoldSkipReasonTests {
    /// X [2, 3, 4] → MatMul(W [4, 5]) → BN over axis 1 (3 channels).
    func rank3MatMul(declared: Bool) -> Model {
        var s = ModelSketch(type: .float, seed: 20, inputShape: [2, 3, 4])
        s.node("MatMul", ["X", s.randomConstant("W", dims: [4, 5])], "y", name: "op")
        s.batchNorm("y", "Y", channels: 3, name: "bn")
        var model = s.model(output: "Y")
        if !declared {
            model.updateGraph { $0.inputs = [ValueInfo(name: "X", type: TypeProto(value: .tensor(.init(elementType: .float, shape: nil))))] }
        }
        return model
    }

    @Test("ChannelAxisMismatch: a BN after a MatMul with a rank-3 input (not NoFoldableProducer)")
    func matMulRank3() throws {
        try expectUnchanged(rank3MatMul(declared: true), missed: .channelAxisMismatch, pass: "fold-batchnorm", node: "bn")
    }

    @Test("ChannelAxisMismatch: a BN before a Gemm with transA = 1 (the forward verdict replaces NoFoldableProducer)")
    func gemmTransA() throws {
        var s = ModelSketch(type: .float, seed: 21, inputShape: [denseK, denseM])
        s.batchNorm("X", "x", channels: denseM, name: "bn")
        s.node("Gemm", ["x", s.randomConstant("W", dims: [denseK, denseN])], "Y", name: "op", [.int("transA", 1)])
        try expectUnchanged(s.model(output: "Y"), missed: .channelAxisMismatch, pass: "fold-batchnorm-forward", node: "bn")
    }

    @Test("ChannelAxisMismatch: a BN before a MatMul on a rank-3 value")
    func forwardMatMulRank3() throws {
        var s = ModelSketch(type: .float, seed: 22, inputShape: [2, 4, 4])
        s.batchNorm("X", "x", channels: 4, name: "bn")
        s.node("MatMul", ["x", s.randomConstant("W", dims: [4, 5])], "Y", name: "op")
        try expectUnchanged(s.model(output: "Y"), missed: .channelAxisMismatch, pass: "fold-batchnorm-forward", node: "bn")
    }

    @Test("UnknownRank: nothing declares the rank of the MatMul's input")
    func unknownRank() throws {
        try expectUnchanged(rank3MatMul(declared: false), missed: .unknownRank, pass: "fold-batchnorm", node: "bn")
    }

    /// Conv1d 3 → 5 channels with output length 5 (= C), then `op` by a constant of `dims`.
    func convThen(_ op: String, constant dims: [Int], type: DataType = .float, values: [Double]? = nil) -> Model {
        var s = ModelSketch(type: type, seed: 23, inputShape: ModelSketch.convolutionInput(transpose: false, rank: 1, grouping: .single))
        s.convolution(transpose: false, rank: 1, grouping: .single, bias: true, input: "X", output: "y", name: "op")
        let c = values.map { s.constant("c", dims: dims, values: $0) } ?? s.randomConstant("c", dims: dims)
        s.node(op, ["y", c], "Y", name: "affine")
        return s.model(output: "Y")
    }

    @Test("BroadcastNotPerChannel: a [C] constant against [N, C, L] lines up with L, although its length is C",
          arguments: ["Mul", "Add"])
    func broadcastAlongSpatialAxis(_ op: String) throws {
        try expectUnchanged(convThen(op, constant: [5]), missed: .broadcastNotPerChannel, pass: "fold-mul-add", node: "affine")
    }

    @Test("BroadcastNotPerChannel: a [5, 5] constant varies along channels and L")
    func broadcastTwoAxes() throws {
        try expectUnchanged(convThen("Mul", constant: [5, 5]), missed: .broadcastNotPerChannel, pass: "fold-mul-add", node: "affine")
    }

    @Test("BroadcastNotPerChannel: the Add between MatMul and BN has an [M, N] constant")
    func matMulAddPerRow() throws {
        var s = ModelSketch(type: .float, seed: 24, inputShape: [denseM, denseK])
        s.node("MatMul", ["X", s.randomConstant("W", dims: [denseK, denseN])], "y", name: "op")
        s.node("Add", ["y", s.randomConstant("b", dims: [denseM, denseN])], "z", name: "add")
        s.batchNorm("z", "Y", channels: denseN, name: "bn")
        try expectUnchanged(s.model(output: "Y"), missed: .broadcastNotPerChannel, pass: "fold-batchnorm", node: "bn")
    }

    @Test("RankMismatch: a [1, 5, 1, 1] constant against a rank-3 Conv output would add an axis")
    func rankMismatch() throws {
        try expectUnchanged(convThen("Add", constant: [1, 5, 1, 1]), missed: .rankMismatch, pass: "fold-mul-add", node: "affine")
    }

    @Test("ShapeMismatch: a [1, 4, 1] constant cannot broadcast against 5 channels")
    func constantChannelCount() throws {
        try expectUnchanged(convThen("Mul", constant: [1, 4, 1]), missed: .shapeMismatch, pass: "fold-mul-add", node: "affine")
    }

    @Test("NotRepresentable: a float16 Mul that overflows a folded weight")
    func mulOverflow() throws {
        try expectUnchanged(convThen("Mul", constant: [], type: .float16, values: [60000]), missed: .notRepresentable,
                            pass: "fold-mul-add", node: "affine")
    }

    @Test("ProducerHasOtherUses: the Conv output also goes to a Relu")
    func mulProducerUsedTwice() throws {
        var model = convThen("Mul", constant: [1, 5, 1])
        model.updateGraph { g in
            g.nodes.append(Node(opType: "Relu", inputs: ["y"], outputs: ["r"], name: "relu"))
            g.outputs.append(valueInfo("r", .float, dims: [1, 5, 5]))
        }
        try expectUnchanged(model, missed: .producerHasOtherUses, pass: "fold-mul-add", node: "affine")
    }

    /// X → BN → Conv(3 → 5, kernel 3) with `attributes`.
    func batchNormThenConv(_ attributes: [Attribute], output: String = "Y") -> ModelSketch {
        var s = ModelSketch(type: .float, seed: 25, inputShape: [1, 3, 6, 6])
        s.batchNorm("X", "x", channels: 3, name: "bn")
        s.node("Conv", ["x", s.randomConstant("W", dims: [5, 3, 3, 3])], output, name: "op", attributes)
        return s
    }

    @Test("PaddingBreaksForwardFold: pads not all zero")
    func padded() throws {
        let s = batchNormThenConv([.ints("pads", [0, 1, 0, 0])])
        try expectUnchanged(s.model(output: "Y"), missed: .paddingBreaksForwardFold, pass: "fold-batchnorm-forward", node: "bn")
    }

    @Test("PaddingBreaksForwardFold: auto_pad SAME with a 3×3 kernel", arguments: ["SAME_UPPER", "SAME_LOWER"])
    func samePadded(_ autoPad: String) throws {
        let s = batchNormThenConv([.string("auto_pad", autoPad)])
        try expectUnchanged(s.model(output: "Y"), missed: .paddingBreaksForwardFold, pass: "fold-batchnorm-forward", node: "bn")
    }

    @Test("BatchNormOutputHasOtherUses: the BN output also feeds a Relu")
    func forwardOtherUses() throws {
        var s = batchNormThenConv([], output: "Y")
        s.node("Relu", ["x"], "R", name: "relu")
        var model = s.model(output: "Y")
        model.updateGraph { $0.outputs.append(valueInfo("R", .float, dims: [1, 3, 6, 6])) }
        try expectUnchanged(model, missed: .batchNormOutputHasOtherUses, pass: "fold-batchnorm-forward", node: "bn")
    }

    @Test("BatchNormOutputIsGraphOutput: the BN output is also a graph output")
    func forwardGraphOutput() throws {
        var model = batchNormThenConv([]).model(output: "Y")
        model.updateGraph { $0.outputs.append(valueInfo("x", .float, dims: [1, 3, 6, 6])) }
        try expectUnchanged(model, missed: .batchNormOutputIsGraphOutput, pass: "fold-batchnorm-forward", node: "bn")
    }

    @Test("UnsupportedAttribute: a Gemm whose transB is a FLOAT")
    func floatTransB() throws {
        var s = ModelSketch(type: .float, seed: 26, inputShape: [denseM, denseK])
        s.node("Gemm", ["X", s.randomConstant("W", dims: [denseN, denseK])], "y", name: "op", [.float("transB", 1)])
        s.batchNorm("y", "Y", channels: denseN, name: "bn")
        try expectUnchanged(s.model(output: "Y"), missed: .unsupportedAttribute, pass: "fold-batchnorm", node: "bn")
    }

    @Test("UnsupportedAttribute: a Conv after a BN with an auto_pad that is not an ONNX value")
    func badAutoPad() throws {
        let s = batchNormThenConv([.string("auto_pad", "SOMETIMES")])
        try expectUnchanged(s.model(output: "Y"), missed: .unsupportedAttribute, pass: "fold-batchnorm-forward", node: "bn")
    }

    // MARK: Old reasons, new producers

    @Test("ShapeMismatch: a BN with 4 channels after a Gemm with 5 columns")
    func gemmChannels() throws {
        var s = ModelSketch(type: .float, seed: 27, inputShape: [denseM, denseK])
        s.node("Gemm", ["X", s.randomConstant("W", dims: [denseK, denseN])], "y", name: "op")
        s.batchNorm("y", "Y", channels: 4, name: "bn")
        try expectUnchanged(s.model(output: "Y"), missed: .shapeMismatch, pass: "fold-batchnorm", node: "bn")
    }

    @Test("NonConstantWeights: a ConvTranspose whose weight is a graph input")
    func convTransposeRuntimeWeight() throws {
        var s = ModelSketch(type: .float, seed: 28, inputShape: [1, 4, 3, 4])
        s.graph.inputs.append(valueInfo("W", .float, dims: [4, 3, 2, 2]))
        s.node("ConvTranspose", ["X", "W"], "y", name: "op", [.int("group", 2)])
        s.batchNorm("y", "Y", channels: 6, name: "bn")
        try expectUnchanged(s.model(output: "Y"), missed: .nonConstantWeights, pass: "fold-batchnorm", node: "bn")
    }

    @Test("A BN after a graph input and before a Relu keeps fold-batchnorm's NoFoldableProducer (the forward pass says nothing)")
    func noCandidateEitherWay() throws {
        var s = ModelSketch(type: .float, seed: 29, inputShape: [1, 3, 4, 4])
        s.batchNorm("X", "x", channels: 3, name: "bn")
        s.node("Relu", ["x"], "Y", name: "relu")
        try expectUnchanged(s.model(output: "Y"), missed: .noFoldableProducer, pass: "fold-batchnorm", node: "bn")
    }

    @Test("A training-mode BN before a padded Conv keeps TrainingMode, the more specific verdict")
    func specificBackwardReasonStays() throws {
        var s = batchNormThenConv([.ints("pads", [1, 1, 1, 1])])
        s.graph.nodes[0].attributes.append(.int("training_mode", 1))
        try expectUnchanged(s.model(output: "Y"), missed: .trainingMode, pass: "fold-batchnorm", node: "bn")
    }

    @Test("Only the fold-batchnorm-forward pass: the BN still gets its verdict")
    func forwardAlone() throws {
        let model = batchNormThenConv([.ints("pads", [1, 1, 1, 1])]).model(output: "Y")
        var folded = model
        let report = try PassManager(passes: [FoldBatchNormForward()]).run(on: &folded)
        #expect(folded == model)
        expectRemarks(report, [RemarkKey(.missed, "fold-batchnorm-forward", .paddingBreaksForwardFold, "bn")])
    }
}
