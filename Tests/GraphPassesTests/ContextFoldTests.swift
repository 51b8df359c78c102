import Testing
@testable import GraphPasses
import ONNXGraph
import TestSupport

/// The BN, Mul/Add and forward folds ask their ``PassContext`` for
/// constants: they read through `Identity` chains and `Constant` nodes, see
/// the constants of enclosing graphs from inside If branches, respect
/// overridable initializers, and rewrite with the context's editing forms.
@Suite("Folds through the pass context")
struct ContextFoldTests {
    @Test("ConvTranspose → BN: weight behind two Identity nodes, BN variance a Constant(value_floats), bias a Constant(value)")
    func convTransposeThroughDisguises() throws {
        let c = BackwardCase(producer: .convTranspose, rank: 2, grouping: .two, bias: .vector, type: .float, index: 3)
        let (sketch, built, _, _) = c.build()
        var original = built
        original.hideBehindIdentities("op_W", count: 2)
        try original.moveToConstantNode("bn_var", as: .valueFloats)
        try original.moveToConstantNode("op_B", as: .value)
        #expect(opTypes(original) == ["Constant", "Constant", "Identity", "Identity", "ConvTranspose", "BatchNormalization"])
        let model = try expectFolded(original, sketch: sketch,
                                     remarks: [RemarkKey(.applied, "fold-batchnorm", .convTransposeBatchNormFolded, "bn")],
                                     ops: ["Constant", "ConvTranspose"], iterations: 2)
        let graph = try #require(model.graph)
        // The weight is replaced where it lives (the Identity chain goes);
        // the bias Constant keeps its node and name, holding the new values.
        #expect(nodeNames(graph) == ["const_op_B", "op"])
        #expect(graph.nodes[1].inputs == ["X", "op_W_raw", "op_B"])
        #expect(graph.nodes[1].outputs == ["Y"])
        #expect(initializerNames(graph) == ["op_W_raw"])
        #expect(graph.initializer(named: "op_W_raw")?.dims == [4, 3, 2, 3])
        #expect(graph.nodes[0].attributes.map(\.name) == ["value"])
        #expect(graph.nodes[0].attributes.first?.t?.dims == [6])
    }

    @Test("Gemm → BN: weight a Constant node, C behind an Identity")
    func gemmThroughDisguises() throws {
        let c = BackwardCase(producer: .gemm, bias: .vector, transB: true, type: .float, index: 11)
        let (sketch, built, _, _) = c.build()
        var original = built
        original.hideBehindIdentities("op_C", count: 1)
        try original.moveToConstantNode("op_W", as: .value)
        let model = try expectFolded(original, sketch: sketch,
                                     remarks: [RemarkKey(.applied, "fold-batchnorm", .gemmBatchNormFolded, "bn")],
                                     ops: ["Constant", "Gemm"], iterations: 2)
        let graph = try #require(model.graph)
        #expect(nodeNames(graph) == ["const_op_W", "op"])
        #expect(graph.nodes[1].inputs == ["X", "op_W", "op_C_raw"])
        #expect(graph.nodes[1].floatAttribute("beta") == 1)
        #expect(initializerNames(graph) == ["op_C_raw"])
        #expect(graph.nodes[0].attributes.first?.t?.dims == [5, 4])
    }

    @Test("Conv → Mul → Add: Mul constant a Constant node, Add constant and weight behind Identity nodes")
    func mulAddThroughDisguises() throws {
        let c = AffineCase(producer: .conv2d, pattern: .mulAdd, shape: .batchChannel, type: .float, index: 0)
        #expect(!c.constantFirst && c.bias)
        let (sketch, built) = c.build()
        var original = built
        try original.moveToConstantNode("mul_c", as: .value)
        original.hideBehindIdentities("add_c", count: 1)
        original.hideBehindIdentities("op_W", count: 2)
        let model = try expectFolded(original, sketch: sketch,
                                     remarks: [RemarkKey(.applied, "fold-mul-add", .convMulFolded, "mul"),
                                               RemarkKey(.applied, "fold-mul-add", .convAddFolded, "add")],
                                     ops: ["Conv"], iterations: 2, roundings: 2)
        let graph = try #require(model.graph)
        #expect(graph.nodes[0].inputs == ["X", "op_W_raw", "op_B"])
        #expect(graph.nodes[0].outputs == ["Y"])
        #expect(initializerNames(graph) == ["op_W_raw", "op_B"])
    }

    @Test("BN → Conv with auto_pad SAME_UPPER and no kernel_shape: the 1×1 kernel is read from a weight behind Identity nodes; BN mean a Constant")
    func forwardThroughDisguises() throws {
        var s = ModelSketch(type: .float, seed: 73, inputShape: [1, 4, 5, 6])
        s.batchNorm("X", "x", channels: 4, name: "bn")
        s.node("Conv", ["x", s.randomConstant("W", dims: [6, 2, 1, 1])], "Y", name: "op",
               [.string("auto_pad", "SAME_UPPER"), .int("group", 2)])
        var original = s.model(output: "Y")
        original.hideBehindIdentities("W", count: 2)
        try original.moveToConstantNode("bn_mean", as: .value)
        let model = try expectFolded(original, sketch: s,
                                     remarks: [RemarkKey(.applied, "fold-batchnorm-forward", .batchNormConvFolded, "bn")],
                                     ops: ["Conv"], iterations: 2)
        let graph = try #require(model.graph)
        #expect(graph.nodes[0].inputs == ["X", "W_raw", "op_bias"])
        #expect(initializerNames(graph) == ["W_raw", "op_bias"])
        #expect(graph.initializer(named: "op_bias")?.dims == [6])
    }

    @Test("MatMul → BN inside an If branch: the outer weight is copied in, the rank of X comes from the outer declaration")
    func matMulInBranchReadsOuterWeight() throws {
        var s = ModelSketch(type: .float, seed: 74, inputShape: [denseM, denseK])
        s.node("MatMul", ["X", s.randomConstant("W", dims: [denseK, denseN])], "y", name: "op")
        s.batchNorm("y", "Y", channels: denseN, name: "bn")
        let original = s.model(output: "Y")
        var branch = s.graph
        branch.inputs = []
        branch.outputs = [ValueInfo(name: "Y")]  // no shape: the rank must come from outside
        let weight = try #require(branch.initializers.first)
        branch.initializers.removeFirst()
        let passThrough = Graph(nodes: [Node(opType: "Identity", inputs: ["X"], outputs: ["x_out"])],
                                outputs: [ValueInfo(name: "x_out")])
        let ifNode = Node(opType: "If", inputs: ["cond"], outputs: ["out"], name: "if",
                          attributes: [.graph("then_branch", branch), .graph("else_branch", passThrough)])
        let main = Graph(name: "main", nodes: [ifNode],
                         inputs: [valueInfo("X", .float, dims: [denseM, denseK]), ValueInfo(name: "cond", type: .tensor(.bool, dims: []))],
                         outputs: [ValueInfo(name: "out")], initializers: [weight])
        var model = Model(irVersion: 8, opsetImports: [OperatorSetID(domain: "", version: 15)], graph: main)
        let report = try runBuiltins(&model)
        expectRemarks(report, [RemarkKey(.applied, "fold-batchnorm", .matMulBatchNormFolded, "if/then_branch/bn")])
        let graph = try #require(model.graph)
        let thenBranch = try #require(graph.node(named: "if")?.attribute("then_branch")?.g)
        #expect(opTypes(Model(graph: thenBranch)) == ["Gemm"])
        #expect(thenBranch.nodes[0].inputs == ["X", "W_bnfold", "op_bias"])
        #expect(thenBranch.nodes[0].outputs == ["Y"])
        #expect(initializerNames(thenBranch) == ["W_bnfold", "op_bias"])
        #expect(thenBranch.inputs.isEmpty)
        // Nothing reads the outer W any more: the manager removes it; the interface stays.
        #expect(graph.initializers.isEmpty)
        #expect(graph.inputs.map(\.name) == ["X", "cond"])
        var evaluated = thenBranch
        evaluated.inputs = [valueInfo("X", .float, dims: [denseM, denseK])]
        try expectMatchesUnfolded(original: original, folded: Model(graph: evaluated), sketch: s)
    }

    @Test("A BN in a branch gets one verdict: the forward miss replaces NoFoldableProducer there, not for a main-graph BN of the same name")
    func oneVerdictPerScope() throws {
        var inner = ModelSketch(type: .float, seed: 75, inputShape: [1, 3, 6, 7])
        inner.batchNorm("X", "xb", channels: 3, name: "bn")
        // Its parameters get names of their own (the main graph's BN is also "bn").
        for i in inner.graph.initializers.indices { inner.graph.initializers[i].name = "inner_" + inner.graph.initializers[i].name! }
        inner.graph.nodes[0].inputs = ["X"] + inner.graph.nodes[0].inputs.dropFirst().map { "inner_" + $0 }
        inner.node("Conv", ["xb", inner.randomConstant("W", dims: [2, 3, 3, 3])], "z", name: "conv",
                   [.ints("pads", [1, 1, 1, 1])])
        var branch = inner.graph
        branch.inputs = []
        branch.outputs = [ValueInfo(name: "z")]
        let passThrough = Graph(nodes: [Node(opType: "Identity", inputs: ["X"], outputs: ["x_out"])],
                                outputs: [ValueInfo(name: "x_out")])
        var outer = ModelSketch(type: .float, seed: 76, inputShape: [1, 3, 6, 7])
        outer.batchNorm("X", "xb_main", channels: 3, name: "bn")
        outer.node("Relu", ["xb_main"], "Y", name: "relu")
        outer.graph.inputs.append(ValueInfo(name: "cond", type: .tensor(.bool, dims: [])))
        outer.node("If", ["cond"], "out", name: "if", [.graph("then_branch", branch), .graph("else_branch", passThrough)])
        var model = outer.model(output: "Y")
        model.updateGraph { $0.outputs.append(ValueInfo(name: "out")) }
        let before = model
        let report = try runBuiltins(&model)
        expectRemarks(report, [RemarkKey(.missed, "fold-batchnorm", .noFoldableProducer, "bn"),
                               RemarkKey(.missed, "fold-batchnorm-forward", .paddingBreaksForwardFold, "if/then_branch/bn")])
        let unchanged = model == before
        #expect(unchanged)
    }

    /// `X → Gemm(W, C) → BN → Y` with W also declared as a graph input.
    func gemmWithWeightInput(irVersion: Int64) -> (ModelSketch, Model) {
        let c = BackwardCase(producer: .gemm, bias: .vector, type: .float, index: 2)
        var (sketch, model, _, _) = c.build()
        model.irVersion = irVersion
        model.updateGraph { g in g.inputs.append(valueInfo("op_W", .float, dims: [denseK, denseN])) }
        return (sketch, model)
    }

    @Test("IR 8: a Gemm weight that is also a graph input is kept with OverridableInitializer, folded with assumeConstantInputs")
    func overridableGemmWeight() throws {
        let (sketch, original) = gemmWithWeightInput(irVersion: 8)
        var kept = original
        let report = try runBuiltins(&kept)
        expectRemarks(report, [RemarkKey(.missed, "fold-batchnorm", .overridableInitializer, "bn")])
        #expect(report.remarks.first?.message == "the weight 'op_W' of op is an initializer that is also a graph input, so a caller can replace it at run time (IR version 4 or later); pass --assume-constant-inputs to treat it as a constant")
        #expect(report.remarks.first?.reason == NotConstant.overridableReason)
        let unchanged = kept == original
        #expect(unchanged)

        var folded = original
        let assumed = try runBuiltins(&folded, assumeConstantInputs: true)
        expectRemarks(assumed, [RemarkKey(.applied, "fold-batchnorm", .gemmBatchNormFolded, "bn")])
        let graph = try #require(folded.graph)
        #expect(graph.nodes.map(\.opType) == ["Gemm"])
        #expect(graph.nodes[0].inputs == ["X", "op_W", "op_C"])
        // Folded in place, so it stops being an input: callers cannot feed unfolded values.
        #expect(graph.inputs.map(\.name) == ["X"])
        #expect(initializerNames(graph) == ["op_W", "op_C"])
        try expectMatchesUnfolded(original: original, folded: folded, sketch: sketch)
    }

    @Test("IR 8: an overridable BN mean behind an Identity is OverridableInitializer too")
    func overridableBehindIdentity() throws {
        let c = BackwardCase(producer: .gemm, bias: .none, type: .float, index: 4)
        var original = c.build().model
        original.hideBehindIdentities("bn_mean", count: 1)
        original.updateGraph { g in g.inputs.append(valueInfo("bn_mean_raw", .float, dims: [denseN])) }
        var model = original
        let report = try runBuiltins(&model)
        expectRemarks(report, [RemarkKey(.missed, "fold-batchnorm", .overridableInitializer, "bn")])
        #expect(report.remarks.first?.message.hasPrefix("its mean 'bn_mean' is an Identity of 'bn_mean_raw', which is an initializer that is also a graph input") == true)
        let unchanged = model == original
        #expect(unchanged)
    }

    @Test("IR 3: initializers listed as graph inputs are constants; folded in place, they stay inputs")
    func ir3InitializerInputs() throws {
        let (sketch, built) = gemmWithWeightInput(irVersion: 3)
        var original = built
        original.updateGraph { g in g.inputs.append(valueInfo("op_C", .float, dims: [denseN])) }
        var model = original
        let report = try runBuiltins(&model)
        expectRemarks(report, [RemarkKey(.applied, "fold-batchnorm", .gemmBatchNormFolded, "bn")])
        let graph = try #require(model.graph)
        #expect(graph.nodes[0].inputs == ["X", "op_W", "op_C"])
        #expect(graph.inputs.map(\.name) == ["X", "op_W", "op_C"])
        #expect(initializerNames(graph) == ["op_W", "op_C"])
        try expectMatchesUnfolded(original: original, folded: model, sketch: sketch)
    }

    @Test("Gemm → BN with training_info reading W and binding the BN mean: both kept, W not rewritten in place")
    func trainingInfoPinsGemmWeight() throws {
        let c = BackwardCase(producer: .gemm, bias: .vector, type: .float, index: 6)
        let (sketch, built, _, _) = c.build()
        var original = built
        var info = TrainingInfo()
        info.algorithm = Graph(name: "train", nodes: [Node(opType: "Identity", inputs: ["op_W"], outputs: ["t"])],
                               outputs: [ValueInfo(name: "t")])
        info.updateBinding = [StringPair(key: "bn_mean", value: "t")]
        original.trainingInfo = [info]
        var model = original
        let report = try runBuiltins(&model)
        expectRemarks(report, [RemarkKey(.applied, "fold-batchnorm", .gemmBatchNormFolded, "bn")])
        let graph = try #require(model.graph)
        #expect(graph.nodes[0].inputs == ["X", "op_W_bnfold", "op_C"])
        #expect(initializerNames(graph) == ["op_W", "op_C", "bn_mean", "op_W_bnfold"])
        #expect(graph.initializer(named: "op_W") == original.graph?.initializer(named: "op_W"))
        #expect(graph.initializer(named: "bn_mean") == original.graph?.initializer(named: "bn_mean"))
        try expectMatchesUnfolded(original: original, folded: model, sketch: sketch)
    }
}
