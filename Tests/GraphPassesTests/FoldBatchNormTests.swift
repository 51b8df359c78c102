import Testing
@testable import GraphPasses
import ONNXGraph
import TestSupport

/// One model of the fold grid.
struct FoldCase: Sendable, CustomTestStringConvertible {
    var rank: Int
    var grouping: Grouping
    var bias: Bool
    var type: DataType

    var testDescription: String { "\(rank)d \(grouping) \(bias ? "bias" : "no-bias") \(type)" }

    /// A distinct seed per case, so the grid covers many parameter draws.
    var seed: UInt64 {
        UInt64(rank) &* 1000 &+ UInt64(Grouping.allCases.firstIndex(of: grouping)!) &* 100
            &+ (bias ? 10 : 0) &+ UInt64(type.rawValue)
    }

    static let all: [FoldCase] = [1, 2, 3].flatMap { rank in
        Grouping.allCases.flatMap { grouping in
            [true, false].flatMap { bias in
                [DataType.float, .float16, .bfloat16, .double].map {
                    FoldCase(rank: rank, grouping: grouping, bias: bias, type: $0)
                }
            }
        }
    }
}

@Suite("FoldBatchNorm: folding")
struct FoldBatchNormTests {
    @Test("Conv → BN folds into one Conv that matches the reference", arguments: FoldCase.all)
    func foldGrid(_ c: FoldCase) throws {
        let fixture = ConvBNFixture(ConvBNSpec(rank: c.rank, grouping: c.grouping, hasBias: c.bias,
                                               elementType: c.type, seed: c.seed))
        var model = fixture.model
        let report = try runFold(&model)
        expectSingleFold(report, bn: "bn")
        #expect(report.hitIterationCap == false)
        let graph = try #require(model.graph)
        expectFoldedStructure(fixture, graph: graph)
        try expectMatchesReference(fixture, graph: graph)
        try expectMatchesReference(fixture, graph: graph, inputSeed: 7)
        // Nothing else about the model changed.
        #expect(model.irVersion == fixture.model.irVersion)
        #expect(model.opsetImports == fixture.model.opsetImports)
        #expect(graph.inputs == fixture.graph.inputs)
    }

    @Test("The tolerance notices a few units in the last place of one weight", arguments: [
        DataType.float, .float16, .bfloat16, .double,
    ])
    func toleranceDetectsSmallErrors(_ type: DataType) throws {
        // Guards the bound against being vacuous: move the largest folded
        // weight by 16 units of u (256 for double, whose bound is dominated by
        // the (K + 10)·2^-52 evaluation term) and feed an input that isolates it.
        let fixture = ConvBNFixture(ConvBNSpec(rank: 1, grouping: .single, elementType: type, seed: 5))
        var model = fixture.model
        _ = try runFold(&model)
        var graph = try #require(model.graph)
        let i = try #require(graph.initializers.firstIndex { $0.name == fixture.names.weight })
        var w = try graph.initializers[i].doubles()
        let j = try #require(w.indices.max { w[$0].magnitude < w[$1].magnitude })
        w[j] += w[j] * (type == .double ? 256 : 16) * unitRoundoff(type)
        graph.initializers[i] = try #require(graph.initializers[i].replacingData(with: w))
        // An input that is zero except where that weight's tap reads.
        var input = [Double](repeating: 0, count: Reference.product(fixture.inputShape))
        let perChannel = w.count / fixture.spec.outChannels
        let channelIn = (j % perChannel) / fixture.spec.kernel[0]
        let tap = j % fixture.spec.kernel[0]
        // Output position 1 reads input 1·stride − pad + tap·dilation.
        let position = 1 * fixture.spec.strides[0] - fixture.spec.pads[0] + tap * fixture.spec.dilations[0]
        input[channelIn * fixture.spec.spatial[0] + position] = 100
        let result = try compareFolded(fixture, graph: graph, input: input)
        #expect(result.worstRatio > 1)
    }

    @Test("Each BatchNormalization version folds", arguments: [6, 7, 9, 14, 15] as [Int64])
    func bnOpsets(_ opset: Int64) throws {
        var spec = ConvBNSpec(rank: 2, grouping: .two, elementType: .float, epsilon: 1e-3, bnOpset: opset,
                              seed: 600 + UInt64(opset))
        spec.hasBias = opset % 2 == 0
        let fixture = ConvBNFixture(spec)
        let bn = try #require(fixture.graph.node(named: "bn"))
        if opset < 7 { #expect(bn.intAttribute("is_test") == 1) }
        if opset == 14 { #expect(bn.intAttribute("training_mode") == 0) }
        var model = fixture.model
        let report = try runFold(&model)
        expectSingleFold(report, bn: "bn")
        let graph = try #require(model.graph)
        expectFoldedStructure(fixture, graph: graph)
        try expectMatchesReference(fixture, graph: graph)
    }

    @Test("Opset 9 BN that declares its mean/variance outputs is training mode even when they are unused",
          arguments: [7, 9, 13])
    func declaredExtraOutputsMeanTrainingMode(_ opset: Int) throws {
        // Before opset 14 the output count is the mode: onnxruntime computes a
        // BN with named mean/var outputs from batch statistics, so folding it
        // would change the model (the review measured a difference of 13.5).
        let fixture = ConvBNFixture(ConvBNSpec(elementType: .float, bnOpset: Int64(opset), seed: 31))
        var model = fixture.model
        model.updateNode(named: "bn") { $0.outputs += ["running_mean", "running_var", "", "saved_var"] }
        let before = model
        let report = try runFold(&model)
        #expect(report.remarks.map(\.reason) == ["TrainingMode"])
        #expect(model == before)
    }

    @Test("Empty optional output names are not declared outputs: the BN folds")
    func emptyOptionalOutputsFold() throws {
        let fixture = ConvBNFixture(ConvBNSpec(elementType: .float, bnOpset: 9, seed: 31))
        var model = fixture.model
        model.updateNode(named: "bn") { $0.outputs += ["", "", "", ""] }
        let report = try runFold(&model)
        expectSingleFold(report, bn: "bn")
        let graph = try #require(model.graph)
        expectFoldedStructure(fixture, graph: graph)
        try expectMatchesReference(fixture, graph: graph)
    }

    // MARK: Epsilon

    @Test("ε comes from the attribute: ε = 0.1 is used, and 1e-5 would be measurably wrong",
          arguments: [DataType.float, .float16, .double])
    func epsilonFromAttribute(_ type: DataType) throws {
        var spec = ConvBNSpec(rank: 2, grouping: .single, elementType: type, epsilon: 0.1, bnOpset: 15, seed: 77)
        spec.varianceRange = 0.01...0.05  // ε = 0.1 dominates σ² + ε
        let fixture = ConvBNFixture(spec)
        #expect(fixture.epsilon == Double(Float(0.1)))
        var model = fixture.model
        let report = try runFold(&model)
        expectSingleFold(report, bn: "bn")
        #expect(report.remarks.first?.message.contains("ε = 0.1") == true)
        let graph = try #require(model.graph)
        try expectMatchesReference(fixture, graph: graph)

        // Folding with the default ε instead would be far outside the tolerance.
        let input = fixture.randomInput()
        let wrong = try compareFolded(fixture, graph: graph, input: input, referenceEpsilon: Double(Float(1e-5)))
        #expect(wrong.worstRatio > 100)
    }

    @Test("Without the attribute ε is 1e-5 (as a float), not 0 and not a larger value")
    func defaultEpsilon() throws {
        var spec = ConvBNSpec(rank: 1, grouping: .single, elementType: .double, epsilon: nil, bnOpset: 15, seed: 78)
        spec.varianceRange = 1e-5...4e-5  // σ² comparable to the default ε
        let fixture = ConvBNFixture(spec)
        #expect(fixture.graph.node(named: "bn")?.attribute("epsilon") == nil)
        #expect(fixture.epsilon == Double(Float(1e-5)))
        var model = fixture.model
        let report = try runFold(&model)
        expectSingleFold(report, bn: "bn")
        let graph = try #require(model.graph)
        // Double weights: the bound is a few ulps, tight enough to tell the
        // Float value of 1e-5 from the Double one.
        try expectMatchesReference(fixture, graph: graph)
        let input = fixture.randomInput()
        #expect(try compareFolded(fixture, graph: graph, input: input, referenceEpsilon: 0).worstRatio > 100)
        #expect(try compareFolded(fixture, graph: graph, input: input, referenceEpsilon: 0.1).worstRatio > 100)
        #expect(try compareFolded(fixture, graph: graph, input: input, referenceEpsilon: 1e-5).worstRatio > 1)
    }

    @Test("An explicit epsilon of 1e-5 folds exactly like an absent one", arguments: [DataType.float, .bfloat16])
    func explicitDefaultEpsilon(_ type: DataType) throws {
        let absent = ConvBNFixture(ConvBNSpec(elementType: type, epsilon: nil, seed: 3))
        let explicit = ConvBNFixture(ConvBNSpec(elementType: type, epsilon: 1e-5, seed: 3))
        var a = absent.model, b = explicit.model
        _ = try runFold(&a)
        _ = try runFold(&b)
        #expect(a.graph?.initializers == b.graph?.initializers)
    }
}

/// The pass manager's pipeline controls: disabling by name and the round cap.
@Suite("PassManager")
struct PassManagerTests {
    /// Built-in passes have unique, kebab-case names that `named(_:)` finds.
    @Test func registryNamesAreUnique() {
        let names = BuiltinPasses.all.map(\.name)
        #expect(names == ["fold-constants", "fold-batchnorm", "fold-mul-add", "fold-batchnorm-forward"])
        #expect(Set(names).count == names.count)
        for name in names { #expect(BuiltinPasses.named(name)?.name == name) }
        #expect(BuiltinPasses.named("no-such-pass") == nil)
    }

    /// A disabled pass does not run: the BN stays, no remark from it, graph unchanged.
    @Test func disabledPassDoesNotRun() throws {
        let fixture = ConvBNFixture(ConvBNSpec(rank: 2, grouping: .single, hasBias: true, elementType: .float, seed: 7))
        var model = fixture.model
        let manager = PassManager(passes: BuiltinPasses.all, disabled: ["fold-batchnorm"])
        #expect(manager.activePasses.map(\.name) == ["fold-constants", "fold-mul-add", "fold-batchnorm-forward"])
        let report = try manager.run(on: &model)
        #expect(model.graph == fixture.model.graph)
        // The forward pass has no op after this BN to look at: it says nothing.
        #expect(report.remarks.isEmpty)

        var again = fixture.model
        _ = try PassManager(passes: BuiltinPasses.all).run(on: &again)
        #expect(!again.graph!.nodes.contains { $0.isOp("BatchNormalization") })
    }

    /// Two passes that undo each other stop at the cap, which the report says.
    @Test func iterationCapStopsPingPong() throws {
        struct Rename: GraphPass {
            let name: String
            let summary = "renames the first node back and forth"
            let from: String, to: String
            func run(on graph: inout Graph, context: inout PassContext) throws -> PassResult {
                guard graph.nodes.first?.name == from else { return PassResult(modified: false) }
                graph.nodes[0].name = to
                return PassResult(modified: true)
            }
        }
        var model = ConvBNFixture(ConvBNSpec(rank: 1, grouping: .single, hasBias: false, elementType: .float, seed: 1)).model
        let first = model.graph!.nodes[0].name ?? ""
        let manager = PassManager(passes: [Rename(name: "a", from: first, to: "x"), Rename(name: "b", from: "x", to: first)],
                                  maxIterations: 3)
        let report = try manager.run(on: &model)
        #expect(report.iterations == 3)
        #expect(report.hitIterationCap)
    }
}
