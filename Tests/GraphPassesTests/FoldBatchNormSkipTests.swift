import Testing
@testable import GraphPasses
import ONNXGraph
import TestSupport

/// One test (or a few variants) per reason id in FoldBatchNorm's doc comment:
/// the graph must come back unchanged with exactly that `missed` remark.
@Suite("FoldBatchNorm: candidates left alone")
struct FoldBatchNormSkipTests {
    /// A float 2-D Conv → BN model to break in one way.
    func fixture(opset: Int64 = 15, type: DataType = .float, bias: Bool = true, ir: Int64 = 8) -> ConvBNFixture {
        ConvBNFixture(ConvBNSpec(rank: 2, grouping: .single, hasBias: bias, elementType: type, bnOpset: opset,
                                 irVersion: ir, seed: 4242))
    }

    @Test("Every reason id is covered by a test (here, in FoldSkipReasonTests, or a grid for the applied ones)")
    func reasonIds() {
        // The ids are a public, stable vocabulary: this list changes only on purpose.
        #expect(Set(FoldReason.allCases.map(\.rawValue)) == [
            "ConvBatchNormFolded", "ConvTransposeBatchNormFolded", "GemmBatchNormFolded", "MatMulBatchNormFolded",
            "ConvMulFolded", "ConvAddFolded", "ConvTransposeMulFolded", "ConvTransposeAddFolded", "GemmMulFolded",
            "GemmAddFolded", "BatchNormConvFolded", "BatchNormGemmFolded", "BatchNormMatMulFolded",
            "TrainingMode", "ExtraOutputsUsed", "NotSpatial", "NoFoldableProducer",
            "ProducerHasOtherUses", "ProducerIsGraphOutput", "NonConstantWeights", "NonConstantBNParameters",
            "ShapeMismatch", "UnsupportedElementType", "NonPositiveVariance", "NotRepresentable",
            "ChannelAxisMismatch", "UnknownRank", "BroadcastNotPerChannel", "RankMismatch", "PaddingBreaksForwardFold",
            "BatchNormOutputHasOtherUses", "BatchNormOutputIsGraphOutput", "UnsupportedAttribute", "OverridableInitializer",
            "ConstantFolded", "UnsupportedOperator", "ExceedsSizeLimit", "EvaluationFailed",
        ])
        #expect(FoldBatchNorm.Reason.self == FoldReason.self)
    }

    // MARK: TrainingMode

    @Test("training_mode = 1 (opsets 14 and 15)", arguments: [14, 15] as [Int64])
    func trainingMode(_ opset: Int64) throws {
        var model = fixture(opset: opset).model
        model.updateNode(named: "bn") { bn in
            bn.attributes.removeAll { $0.name == "training_mode" }
            bn.attributes.append(.int("training_mode", 1))
        }
        try expectMissed(model, reason: .trainingMode)
    }

    @Test("Opset 6: is_test = 0, or is_test absent (default 0)", arguments: [true, false])
    func opset6NotTest(_ explicitZero: Bool) throws {
        var model = fixture(opset: 6).model
        model.updateNode(named: "bn") { bn in
            bn.attributes.removeAll { $0.name == "is_test" }
            if explicitZero { bn.attributes.append(.int("is_test", 0)) }
        }
        try expectMissed(model, reason: .trainingMode)
    }

    // MARK: ExtraOutputsUsed

    @Test("The running mean is a graph output (opset 9)")
    func extraOutputIsGraphOutput() throws {
        var model = fixture(opset: 9).model
        model.updateNode(named: "bn") { $0.outputs += ["running_mean", "running_var"] }
        model.updateGraph { $0.outputs.append(valueInfo("running_mean", .float, dims: [5])) }
        try expectMissed(model, reason: .extraOutputsUsed)
    }

    @Test("The running variance is read by another node (opset 9)")
    func extraOutputIsUsed() throws {
        var model = fixture(opset: 9).model
        model.updateNode(named: "bn") { $0.outputs += ["", "running_var"] }
        model.updateGraph { g in
            g.nodes.append(Node(opType: "Identity", inputs: ["running_var"], outputs: ["rv"], name: "id"))
            g.outputs.append(valueInfo("rv", .float, dims: [5]))
        }
        try expectMissed(model, reason: .extraOutputsUsed)
    }

    // MARK: NotSpatial

    @Test("spatial = 0 before opset 9", arguments: [6, 7] as [Int64])
    func notSpatial(_ opset: Int64) throws {
        var model = fixture(opset: opset).model
        model.updateNode(named: "bn") { $0.attributes.append(.int("spatial", 0)) }
        try expectMissed(model, reason: .notSpatial)
    }

    @Test("spatial = 1 before opset 9 still folds")
    func spatialOne() throws {
        let f = fixture(opset: 7)
        var model = f.model
        model.updateNode(named: "bn") { $0.attributes.append(.int("spatial", 1)) }
        let report = try runFold(&model)
        expectSingleFold(report, bn: "bn")
        try expectMatchesReference(f, graph: try #require(model.graph))
    }

    // MARK: NoFoldableProducer

    @Test("The BN reads a graph input")
    func inputIsGraphInput() throws {
        // Depthwise: C_in = C_out, so the BN on X alone is a valid model.
        var model = ConvBNFixture(ConvBNSpec(grouping: .depthwise, seed: 8)).model
        model.updateGraph { g in
            g.nodes.removeAll { $0.isOp("Conv") }
            g.initializers.removeAll { $0.name == "W" || $0.name == "B" }
            g.valueInfo = []
            g.nodes[0].inputs[0] = "X"
        }
        try expectMissed(model, reason: .noFoldableProducer)
    }

    @Test("A Relu sits between Conv and BN")
    func reluBetween() throws {
        var model = fixture().model
        model.updateGraph { g in
            g.nodes.insert(Node(opType: "Relu", inputs: ["conv_out"], outputs: ["relu_out"], name: "relu"), at: 1)
            g.nodes[2].inputs[0] = "relu_out"
        }
        try expectMissed(model, reason: .noFoldableProducer)
    }

    @Test("A Conv from another domain is not the ONNX Conv")
    func customDomainConv() throws {
        var model = fixture().model
        model.opsetImports.append(OperatorSetID(domain: "com.example", version: 1))
        model.updateNode(named: "conv") { $0.domain = "com.example" }
        try expectMissed(model, reason: .noFoldableProducer)
    }

    // MARK: ProducerHasOtherUses / ProducerIsGraphOutput

    @Test("The Conv output is also read by another node")
    func producerHasOtherUses() throws {
        var model = fixture().model
        model.updateGraph { g in
            g.nodes.append(Node(opType: "Relu", inputs: ["conv_out"], outputs: ["relu_out"], name: "relu"))
            g.outputs.append(valueInfo("relu_out", .float, dims: [1, 5, 6, 3]))
        }
        try expectMissed(model, reason: .producerHasOtherUses)
    }

    @Test("The Conv output is also a graph output")
    func producerIsGraphOutput() throws {
        var model = fixture().model
        model.updateGraph { $0.outputs.append(valueInfo("conv_out", .float, dims: [1, 5, 6, 3])) }
        try expectMissed(model, reason: .producerIsGraphOutput)
    }

    @Test("The Conv output is captured by an If branch")
    func producerCapturedBySubgraph() throws {
        var model = fixture().model
        model.updateGraph { g in
            let thenBranch = Graph(
                name: "then", nodes: [Node(opType: "Identity", inputs: ["conv_out"], outputs: ["then_out"])],
                outputs: [valueInfo("then_out", .float, dims: [1, 5, 6, 3])])
            let elseBranch = Graph(
                name: "else", nodes: [Node(opType: "Identity", inputs: ["Y"], outputs: ["else_out"])],
                outputs: [valueInfo("else_out", .float, dims: [1, 5, 6, 3])])
            g.inputs.append(ValueInfo(name: "cond", type: .tensor(.bool, dims: [])))
            g.nodes.append(Node(opType: "If", inputs: ["cond"], outputs: ["if_out"], name: "if",
                                attributes: [.graph("then_branch", thenBranch), .graph("else_branch", elseBranch)]))
            g.outputs.append(valueInfo("if_out", .float, dims: [1, 5, 6, 3]))
        }
        let uses = model.graph!.value(named: "conv_out").uses
        #expect(uses.contains(Use(node: 2, input: nil)))
        try expectMissed(model, reason: .producerHasOtherUses)
    }

    // MARK: NonConstantWeights

    @Test("The weight is a graph input")
    func weightIsGraphInput() throws {
        var model = fixture().model
        model.updateGraph { g in
            g.initializers.removeAll { $0.name == "W" }
            g.inputs.append(valueInfo("W", .float, dims: [5, 3, 3, 3]))
        }
        try expectMissed(model, reason: .nonConstantWeights)
    }

    @Test("The weight is an initializer that is also a graph input (IR ≥ 4: overridable)", arguments: [4, 8, 10] as [Int64])
    func weightIsOverridable(_ ir: Int64) throws {
        var model = fixture(ir: ir).model
        model.updateGraph { $0.inputs.append(valueInfo("W", .float, dims: [5, 3, 3, 3])) }
        try expectMissed(model, reason: .overridableInitializer)
    }

    @Test("The Conv bias is a graph input")
    func biasIsGraphInput() throws {
        var model = fixture().model
        model.updateGraph { g in
            g.initializers.removeAll { $0.name == "B" }
            g.inputs.append(valueInfo("B", .float, dims: [5]))
        }
        try expectMissed(model, reason: .nonConstantWeights)
    }

    @Test("The weight is computed by a node")
    func weightIsComputed() throws {
        var model = fixture().model
        model.updateGraph { g in
            g.nodes.insert(Node(opType: "Neg", inputs: ["W"], outputs: ["W2"], name: "w_neg"), at: 0)
            g.nodes[1].inputs[1] = "W2"
        }
        try expectMissed(model, reason: .nonConstantWeights)
    }

    // MARK: NonConstantBNParameters

    @Test("The BN mean is a graph input")
    func meanIsGraphInput() throws {
        var model = fixture().model
        model.updateGraph { g in
            g.initializers.removeAll { $0.name == "bn_mean" }
            g.inputs.append(valueInfo("bn_mean", .float, dims: [5]))
        }
        try expectMissed(model, reason: .nonConstantBNParameters)
    }

    @Test("The BN variance is an overridable initializer (IR 8)")
    func varianceIsOverridable() throws {
        var model = fixture().model
        model.updateGraph { $0.inputs.append(valueInfo("bn_var", .float, dims: [5])) }
        try expectMissed(model, reason: .overridableInitializer)
    }

    @Test("The BN scale is computed by a node")
    func scaleIsComputed() throws {
        var model = fixture().model
        model.updateGraph { g in
            g.nodes.insert(Node(opType: "Abs", inputs: ["bn_scale"], outputs: ["abs_scale"], name: "abs"), at: 0)
            g.nodes[2].inputs[1] = "abs_scale"
        }
        try expectMissed(model, reason: .nonConstantBNParameters)
    }

    // MARK: ShapeMismatch

    @Test("A BN parameter has C + 1 values")
    func parameterLength() throws {
        var model = fixture().model
        model.updateGraph { g in
            let i = g.initializers.firstIndex { $0.name == "bn_scale" }!
            g.initializers[i] = makeTensor("bn_scale", .float, dims: [6], values: [1, 1, 1, 1, 1, 1])
        }
        try expectMissed(model, reason: .shapeMismatch)
    }

    @Test("The Conv bias has C − 1 values")
    func convBiasLength() throws {
        var model = fixture().model
        model.updateGraph { g in
            let i = g.initializers.firstIndex { $0.name == "B" }!
            g.initializers[i] = makeTensor("B", .float, dims: [4], values: [0, 0, 0, 0])
        }
        try expectMissed(model, reason: .shapeMismatch)
    }

    @Test("The BN has only four inputs")
    func missingInput() throws {
        var model = fixture().model
        model.updateNode(named: "bn") { $0.inputs.removeLast() }
        try expectMissed(model, reason: .shapeMismatch)
    }

    // MARK: UnsupportedElementType

    @Test("The Conv weight is int8")
    func int8Weight() throws {
        var model = fixture().model
        model.updateGraph { g in
            let i = g.initializers.firstIndex { $0.name == "W" }!
            g.initializers[i] = makeTensor("W", .int8, dims: [5, 3, 3, 3], values: (0..<135).map { Double($0 % 7 - 3) })
        }
        try expectMissed(model, reason: .unsupportedElementType)
    }

    @Test("The BN scale is int32")
    func intParameter() throws {
        var model = fixture().model
        model.updateGraph { g in
            let i = g.initializers.firstIndex { $0.name == "bn_scale" }!
            g.initializers[i] = makeTensor("bn_scale", .int32, dims: [5], values: [1, 2, 1, 2, 1])
        }
        try expectMissed(model, reason: .unsupportedElementType)
    }

    @Test("The Conv bias type differs from the weight type")
    func biasTypeDiffers() throws {
        var model = fixture().model
        model.updateGraph { g in
            let i = g.initializers.firstIndex { $0.name == "B" }!
            g.initializers[i] = makeTensor("B", .float16, dims: [5], values: [0, 0.5, 1, 0, 0])
        }
        try expectMissed(model, reason: .unsupportedElementType)
    }

    // MARK: NonPositiveVariance

    @Test("σ² + ε < 0 for one channel")
    func negativeVariance() throws {
        let f = fixture()
        var model = f.model
        var variance = f.variance
        variance[3] = -0.5
        model.setInitializer("bn_var", values: variance)
        try expectMissed(model, reason: .nonPositiveVariance)
    }

    @Test("σ² + ε = 0 exactly for one channel")
    func zeroVariancePlusEpsilon() throws {
        var model = fixture().model
        model.updateNode(named: "bn") { bn in
            bn.attributes.removeAll { $0.name == "epsilon" }
            bn.attributes.append(.float("epsilon", 0.25))
        }
        model.setInitializer("bn_var", values: [1, 1, -0.25, 1, 1])
        try expectMissed(model, reason: .nonPositiveVariance)
    }

    // MARK: NotRepresentable

    /// A float16 fixture whose BN scale is exactly γ on every channel (σ² + ε = 1).
    func unitVarianceFP16(scale: [Double], type: DataType = .float16) -> Model {
        var model = fixture(type: type).model
        model.updateNode(named: "bn") { bn in
            bn.attributes.removeAll { $0.name == "epsilon" }
            bn.attributes.append(.float("epsilon", 0.25))
        }
        model.setInitializer("bn_var", values: [0.75, 0.75, 0.75, 0.75, 0.75])
        model.setInitializer("bn_scale", values: scale)
        return model
    }

    @Test("A folded float16 weight overflows: 40000 · 2 > 65504")
    func fp16WeightOverflow() throws {
        let f = fixture(type: .float16)
        var model = unitVarianceFP16(scale: [2, 1, 1, 1, 1])
        var w = f.weight
        w[7] = 40000  // channel 0
        model.setInitializer("W", values: w)
        try expectMissed(model, reason: .notRepresentable)
    }

    @Test("A folded float16 bias overflows")
    func fp16BiasOverflow() throws {
        var model = unitVarianceFP16(scale: [1, 1, 2, 1, 1])
        model.setInitializer("bn_mean", values: [0, 0, -30000, 0, 0])
        model.setInitializer("bn_bias", values: [0, 0, 10000, 0, 0])  // b' ≈ 70000
        try expectMissed(model, reason: .notRepresentable)
    }

    @Test("float16 overflow is decided at the rounding boundary 65520, not at 65504")
    func fp16Boundary() throws {
        // W = 32752 (representable); the scale is a float so it can be finer than float16.
        // 32752 · 2.0004 = 65517.1 rounds to 65504: folds.
        // 32752 · 2.00049 = 65520.0…: rounds to infinity: missed.
        func model(gamma: Float) -> Model {
            var m = unitVarianceFP16(scale: [1, 1, 1, 1, 1])
            m.updateGraph { g in
                let i = g.initializers.firstIndex { $0.name == "bn_scale" }!
                g.initializers[i] = makeTensor("bn_scale", .float, dims: [5], values: [Double(gamma), 1, 1, 1, 1])
            }
            var w = [Double](repeating: 0.25, count: 135)
            w[0] = 32752
            m.setInitializer("W", values: w)
            return m
        }
        var folds = model(gamma: 2.0004)
        let report = try runFold(&folds)
        expectSingleFold(report, bn: "bn")
        let w = try #require(try folds.graph?.initializer(named: "W")?.doubles())
        #expect(w[0] == 65504)

        #expect(Double(Float(2.00049)) * 32752 >= 65520)
        try expectMissed(model(gamma: 2.00049), reason: .notRepresentable)
    }

    @Test("A folded float weight overflows to infinity")
    func floatWeightOverflow() throws {
        let f = fixture()
        var model = f.model
        var w = f.weight
        w[0] = 3e38
        model.setInitializer("W", values: w)
        model.setInitializer("bn_scale", values: [-4, 1, 1, 1, 1])
        model.setInitializer("bn_var", values: [1, 1, 1, 1, 1])
        try expectMissed(model, reason: .notRepresentable)
    }

    @Test("A folded bfloat16 weight that rounds to infinity is not folded")
    func bf16WeightOverflow() throws {
        // Largest bfloat16 is 0x1.FEp127; halfway to 2^128 (0x1.FFp127) rounds to infinity.
        let f = fixture(type: .bfloat16)
        var model = unitVarianceFP16(scale: [1, 1, 1, 1, 1], type: .bfloat16)
        model.updateGraph { g in
            let i = g.initializers.firstIndex { $0.name == "bn_scale" }!
            g.initializers[i] = makeTensor("bn_scale", .float, dims: [5], values: [1.0025, 1, 1, 1, 1])
        }
        var w = f.weight
        w[0] = 0x1.FEp127
        model.setInitializer("W", values: w)
        try expectMissed(model, reason: .notRepresentable)
    }

    @Test("A folded bfloat16 bias that rounds to infinity is not folded")
    func bf16BiasOverflow() throws {
        // b' = (0 − μ)·1 + β = 0x1.4p119 + 0x1.FEp127 = 0x1.FF4p127: a finite
        // Float, above the halfway point 0x1.FFp127 between the largest
        // bfloat16 (0x1.FEp127) and 2^128, so it rounds to +infinity.
        var model = unitVarianceFP16(scale: [1, 1, 1, 1, 1], type: .bfloat16)
        model.setInitializer("bn_mean", values: [-0x1.4p119, 0, 0, 0, 0])
        model.setInitializer("bn_bias", values: [0x1.FEp127, 0, 0, 0, 0])
        model.updateGraph { g in
            g.initializers.removeAll { $0.name == "B" }
            g.nodes[0].inputs.removeLast()
        }
        #expect(Float(0x1.FEp127 + 0x1.4p119 as Double).isFinite)
        try expectMissed(model, reason: .notRepresentable)
    }

    @Test("A float16 BN scale above 65504 is fine when every folded value is representable")
    func fp16LargeScaleSmallWeights() throws {
        // σ² = 0 (a dead channel), ε = 1e-5, γ = 256: s = 256/sqrt(1e-5) ≈ 80954,
        // which float16 cannot hold, but s is never stored: W' = 2^-10 · s ≈ 79
        // and b' = 0 are. NotRepresentable is only for stored (folded) values.
        let f = fixture(type: .float16, bias: false)
        var model = f.model
        model.setInitializer("W", values: [Double](repeating: 0x1p-10, count: f.weight.count))
        model.setInitializer("bn_scale", values: [256, 1, 1, 1, 1])
        model.setInitializer("bn_var", values: [0, 1, 1, 1, 1])
        model.setInitializer("bn_mean", values: [0, 0, 0, 0, 0])
        model.setInitializer("bn_bias", values: [0, 0, 0, 0, 0])
        let report = try runFold(&model)
        expectSingleFold(report, bn: "bn")
    }

    // MARK: Node names in remarks

    @Test("A remark names an unnamed BN by type and index")
    func unnamedNode() throws {
        var model = fixture().model
        model.updateGraph { g in
            g.nodes[1].name = nil
            g.outputs.append(valueInfo("conv_out", .float, dims: [1, 5, 6, 3]))
        }
        try expectMissed(model, reason: .producerIsGraphOutput, node: "BatchNormalization#1")
    }
}
