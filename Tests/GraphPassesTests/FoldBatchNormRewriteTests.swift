import Testing
@testable import GraphPasses
import ONNXGraph
import TestSupport

/// Rewrites around the basic fold: shared and Constant-node weights,
/// subgraphs, old IR versions, opset errors, graphs with nothing to do.
@Suite("FoldBatchNorm: rewrites")
struct FoldBatchNormRewriteTests {
    /// Two Conv → BN chains on the same input `X` in one graph (names `a_…`
    /// and `b_…`). With `shareWeight`, both Convs read `a_W` (equal weights).
    func twoChains(type: DataType = .float, shareWeight: Bool) -> (model: Model, a: ConvBNFixture, b: ConvBNFixture) {
        var specA = ConvBNSpec(rank: 2, grouping: .two, elementType: type, seed: 11)
        specA.namePrefix = "a_"
        var specB = ConvBNSpec(rank: 2, grouping: .two, elementType: type, seed: 12)
        specB.namePrefix = "b_"
        specB.weightSeed = shareWeight ? 11 : 12
        let a = ConvBNFixture(specA), b = ConvBNFixture(specB)
        var graph = a.graph
        var other = b.graph
        if shareWeight {
            other.initializers.removeAll { $0.name == "b_W" }
            other.nodes[0].inputs[1] = "a_W"
        }
        graph.nodes += other.nodes
        graph.initializers += other.initializers
        graph.outputs += other.outputs
        graph.valueInfo += other.valueInfo
        var model = a.model
        model.graph = graph
        return (model, a, b)
    }

    @Test("A weight shared by two Convs, each followed by a BN: both fold, into different weights",
          arguments: [DataType.float, .float16])
    func sharedWeightBothFold(_ type: DataType) throws {
        var (model, a, b) = twoChains(type: type, shareWeight: true)
        #expect(a.weight == b.weight)
        #expect(model.graph!.value(named: "a_W").uses.count == 2)
        let report = try runFold(&model)
        #expect(report.remarks.count == 2)
        #expect(report.remarks.allSatisfy { $0.kind == .applied && $0.reason == "ConvBatchNormFolded" })
        #expect(Set(report.remarks.map(\.node)) == ["a_bn", "b_bn"])

        let graph = try #require(model.graph)
        #expect(graph.nodes(ofType: "BatchNormalization").isEmpty)
        let convA = try #require(graph.node(named: "a_conv"))
        let convB = try #require(graph.node(named: "b_conv"))
        #expect(convA.outputs == ["a_Y"])
        #expect(convB.outputs == ["b_Y"])
        // Different weights now, one of them still under the original name, both constant.
        #expect(convA.inputs[1] != convB.inputs[1])
        #expect([convA.inputs[1], convB.inputs[1]].contains("a_W"))
        #expect(graph.initializer(named: convA.inputs[1]) != nil)
        #expect(graph.initializer(named: convB.inputs[1]) != nil)
        #expect(graph.value(named: convA.inputs[1]).uses.count == 1)
        #expect(graph.value(named: convB.inputs[1]).uses.count == 1)
        #expect(graph.initializers.count == 4)  // two weights, two biases
        // Both numerically right.
        try expectMatchesReference(a, graph: graph)
        try expectMatchesReference(b, graph: graph)
    }

    @Test("A weight shared with a Conv that has no BN keeps its values for that Conv")
    func sharedWeightOneFolds() throws {
        var (model, a, _) = twoChains(shareWeight: true)
        let originalW = try #require(model.graph?.initializer(named: "a_W"))
        // b's Conv output goes straight out: b's BN is not foldable.
        model.updateGraph { g in
            g.outputs.append(valueInfo("b_conv_out", .float, dims: [1, 6, 6, 3]))
        }
        let report = try runFold(&model)
        let applied = report.remarks.filter { $0.kind == .applied }
        let missed = report.remarks.filter { $0.kind == .missed }
        #expect(applied.map(\.node) == ["a_bn"])
        // Missed once, although the pipeline ran twice (the second round decided it again).
        #expect(report.iterations == 2)
        #expect(missed.map(\.node) == ["b_bn"])
        #expect(missed.map(\.reason) == ["ProducerIsGraphOutput"])

        let graph = try #require(model.graph)
        let convA = try #require(graph.node(named: "a_conv"))
        let convB = try #require(graph.node(named: "b_conv"))
        #expect(convB.inputs[1] == "a_W")
        #expect(convA.inputs[1] != "a_W")
        #expect(graph.initializer(named: "a_W") == originalW)
        try expectMatchesReference(a, graph: graph)
    }

    @Test("Two independent chains fold in one run")
    func twoChainsFold() throws {
        var (model, a, b) = twoChains(type: .bfloat16, shareWeight: false)
        let report = try runFold(&model)
        #expect(report.remarks.map(\.node).sorted() == ["a_bn", "b_bn"])
        let graph = try #require(model.graph)
        #expect(graph.node(named: "a_conv")?.inputs[1] == "a_W")
        #expect(graph.node(named: "b_conv")?.inputs[1] == "b_W")
        try expectMatchesReference(a, graph: graph)
        try expectMatchesReference(b, graph: graph)
    }

    @Test("Weights and parameters in Constant nodes fold", arguments: [true, false])
    func constantNodes(_ bias: Bool) throws {
        var spec = ConvBNSpec(rank: 2, grouping: .single, hasBias: bias, elementType: .float, seed: 21)
        spec.constantsAsNodes = true
        let fixture = ConvBNFixture(spec)
        #expect(fixture.graph.initializers.isEmpty)
        var model = fixture.model
        let report = try runFold(&model)
        expectSingleFold(report, bn: "bn")
        let graph = try #require(model.graph)
        #expect(graph.nodes(ofType: "BatchNormalization").isEmpty)
        // The BN parameters' Constant nodes are gone; W's (and B's) were rewritten in place.
        let constants = graph.nodes(ofType: "Constant").compactMap(\.name).sorted()
        #expect(constants == (bias ? ["const_B", "const_W"] : ["const_W"]))
        let conv = try #require(graph.node(named: "conv"))
        #expect(conv.inputs[1] == "W")
        #expect(conv.outputs == ["Y"])
        #expect(graph.value(named: "W").producer != nil)
        if bias {
            #expect(conv.inputs[2] == "B")
            #expect(graph.initializers.isEmpty)
        } else {
            #expect(graph.initializers.map(\.name) == [conv.inputs[2]])
        }
        // The Conv still comes after the constants it reads.
        let convIndex = try #require(graph.nodeIndex(named: "conv"))
        #expect(graph.nodes[..<convIndex].allSatisfy { $0.isOp("Constant") })
        try expectMatchesReference(fixture, graph: graph)
    }

    @Test("BN output captured by an If branch: folds, and the branch still reads the same name")
    func bnOutputCaptured() throws {
        let fixture = ConvBNFixture(ConvBNSpec(seed: 23))
        var model = fixture.model
        let thenBranch = Graph(name: "then", nodes: [Node(opType: "Identity", inputs: ["Y"], outputs: ["t"])],
                               outputs: [valueInfo("t", .float, dims: [1, 5, 6, 3])])
        model.updateGraph { g in
            g.inputs.append(ValueInfo(name: "cond", type: .tensor(.bool, dims: [])))
            g.nodes.append(Node(opType: "If", inputs: ["cond"], outputs: ["if_out"], name: "if",
                                attributes: [.graph("then_branch", thenBranch), .graph("else_branch", thenBranch)]))
            g.outputs.append(valueInfo("if_out", .float, dims: [1, 5, 6, 3]))
        }
        let report = try runFold(&model)
        expectSingleFold(report, bn: "bn")
        let graph = try #require(model.graph)
        let y = graph.value(named: "Y")
        #expect(y.producer.map { graph[$0.node].opType } == "Conv")
        #expect(y.uses.map { graph[$0.node].name } == ["if"])
        #expect(y.uses.map(\.input) == [nil])
        try expectMatchesReference(fixture, graph: graph)
    }

    @Test("IR version 3: the new bias becomes a graph input too, removed parameters leave the inputs",
          arguments: [false, true])
    func irVersion3(_ bias: Bool) throws {
        let fixture = ConvBNFixture(ConvBNSpec(rank: 1, grouping: .depthwise, hasBias: bias, elementType: .float16,
                                               irVersion: 3, seed: 27))
        let before = Set(fixture.graph.inputs.compactMap(\.name))
        #expect(before == Set(["X", "W", "bn_scale", "bn_bias", "bn_mean", "bn_var"] + (bias ? ["B"] : [])))
        var model = fixture.model
        let report = try runFold(&model)
        expectSingleFold(report, bn: "bn")
        let graph = try #require(model.graph)
        expectFoldedStructure(fixture, graph: graph)
        let conv = try #require(graph.nodes(ofType: "Conv").first)
        let biasName = conv.inputs[2]
        #expect(graph.inputs.compactMap(\.name) == ["X", "W"] + [biasName])
        #expect(Set(graph.initializers.compactMap(\.name)) == ["W", biasName])
        let biasInput = try #require(graph.inputs.first { $0.name == biasName })
        #expect(biasInput.type == .tensor(.float16, dims: [4]))
        // The pass treats IR 3 initializers listed as inputs as constants, so it could fold at all.
        try expectMatchesReference(fixture, graph: graph)
    }

    @Test("A default-domain opset bnfold does not know is an error", arguments: [99, 0] as [Int64])
    func unknownOpset(_ version: Int64) throws {
        let fixture = ConvBNFixture(ConvBNSpec(bnOpset: 15, seed: 29))
        var model = fixture.model
        model.opsetImports = [OperatorSetID(domain: "ai.onnx", version: version)]
        let unchanged = model
        let error = #expect(throws: PassError.self) { try runFold(&model) }
        #expect(error?.pass == "fold-batchnorm")
        #expect(error?.message.contains("\(version)") == true)
        #expect(model == unchanged)
    }

    @Test("A model using BN without a default-domain opset import is an error")
    func missingOpset() throws {
        var model = ConvBNFixture(ConvBNSpec(seed: 29)).model
        model.opsetImports = [OperatorSetID(domain: "com.example", version: 1)]
        #expect(throws: PassError.self) { try runFold(&model) }
    }

    @Test("A graph without BatchNormalization: nothing happens, no remarks", arguments: [15, 99] as [Int64])
    func noBatchNorm(_ opset: Int64) throws {
        var model = ConvBNFixture(ConvBNSpec(bnOpset: 15, seed: 31)).model
        model.opsetImports = [OperatorSetID(domain: "", version: opset)]
        model.updateGraph { g in
            g.nodes.removeAll { $0.isOp("BatchNormalization") }
            g.outputs = [valueInfo("conv_out", .float, dims: [1, 5, 6, 3])]
        }
        let unchanged = model
        let report = try runFold(&model)
        #expect(report.remarks.isEmpty)
        #expect(report.iterations == 1)
        #expect(report.hitIterationCap == false)
        #expect(model == unchanged)

        var graph = try #require(model.graph)
        var context = PassContext(irVersion: 8, opsetImports: model.opsetImports)
        let result = try FoldBatchNorm().run(on: &graph, context: &context)
        #expect(result == PassResult(modified: false))
        #expect(context.remarks.isEmpty)
    }

    @Test("A model without a graph is left alone")
    func noGraph() throws {
        var model = Model(irVersion: 8, opsetImports: [OperatorSetID(domain: "", version: 15)])
        let report = try runFold(&model)
        #expect(report.remarks.isEmpty)
        #expect(model.graph == nil)
    }

    @Test("A weight over the 4 MiB chunk size folds in several chunks, each element rounded once")
    func largeWeight() throws {
        // [512, 256, 3, 3] float = 4.5 MiB: two chunks of whole output channels.
        var spec = ConvBNSpec(rank: 2, grouping: .single, elementType: .float, seed: 41)
        (spec.inChannels, spec.outChannels) = (256, 512)
        (spec.spatial, spec.strides, spec.pads, spec.dilations) = ([3, 3], [1, 1], [0, 0, 0, 0], [1, 1])
        let fixture = ConvBNFixture(spec)
        var model = fixture.model
        let report = try runFold(&model)
        expectSingleFold(report, bn: "bn")
        let graph = try #require(model.graph)
        // Each stored weight is W·s rounded once to float.
        let stored = try #require(try graph.initializer(named: "W")?.doubles())
        let s = fixture.bnScale()
        let perChannel = 256 * 9
        var wrong = 0
        for (i, w) in fixture.weight.enumerated() where Float(w * s[i / perChannel]) != Float(stored[i]) {
            wrong += 1
        }
        #expect(wrong == 0)
        try expectMatchesReference(fixture, graph: graph)
    }

    @Test("An unrepresentable weight in a later chunk is reported (and nothing changes)")
    func largeWeightOverflowLate() throws {
        var spec = ConvBNSpec(rank: 2, grouping: .single, elementType: .float, seed: 43)
        (spec.inChannels, spec.outChannels) = (128, 1024)
        (spec.spatial, spec.strides, spec.pads, spec.dilations) = ([3, 3], [1, 1], [0, 0, 0, 0], [1, 1])
        // [1024, 128, 3, 3] float = 4.5 MiB: two chunks; channel 1000 is in the second.
        let fixture = ConvBNFixture(spec)
        var model = fixture.model
        var w = fixture.weight
        let channel = 1000
        w[channel * 128 * 9 + 5] = 3e38
        model.setInitializer("W", values: w)
        var scale = fixture.scale
        scale[channel] = 4
        model.setInitializer("bn_scale", values: scale)
        try expectMissed(model, reason: .notRepresentable)
    }
}

/// A `Constant` whose attribute name and type disagree is not a constant to
/// bnfold (runtimes go by the type; guessing would fold the wrong values).
@Suite struct ConstantAttributeTypeTests {
    @Test func nameAndTypeMustAgree() throws {
        var t = Tensor(name: nil, elementType: .float, dims: [2])
        t.rawData = ByteBuffer([0, 0, 128, 63, 0, 0, 0, 64])
        var attribute = Attribute.tensor("value", t)
        attribute.type = .floats
        attribute.floats = [10, 20]
        let graph = Graph(nodes: [Node(opType: "Constant", inputs: [], outputs: ["c"], attributes: [attribute])],
                          outputs: [ValueInfo(name: "c")])
        let context = PassContext(irVersion: 8, opsetImports: [])
        guard case .failure(.unreadableConstant) = context.constant(named: "c", in: graph) else {
            Issue.record("a Constant with value/FLOATS was read as a constant")
            return
        }
        // Agreeing name and type: read.
        let good = Graph(nodes: [Node(opType: "Constant", inputs: [], outputs: ["c"], attributes: [.tensor("value", t)])],
                         outputs: [ValueInfo(name: "c")])
        guard case .success(let (value, _)) = context.constant(named: "c", in: good) else {
            Issue.record("a proper Constant was not read")
            return
        }
        #expect(try value.doubles() == [1, 2])
    }
}
