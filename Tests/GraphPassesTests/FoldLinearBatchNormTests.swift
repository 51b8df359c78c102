import Testing
@testable import GraphPasses
import ONNXGraph
import TestSupport

/// The producer of a BN in the backward grid.
enum Producer: String, Sendable, CaseIterable {
    case conv = "Conv", convTranspose = "ConvTranspose", gemm = "Gemm", matMul = "MatMul", matMulAdd = "MatMul+Add"
}

/// How the producer's bias is given. Convolutions: none or `[C]`. Gemm's C:
/// absent, scalar, `[N]`, `[1, N]`, `[M, N]`. MatMul + Add: the Add's
/// constant (scalar, `[N]`, `[1, N]`).
enum BiasForm: String, Sendable { case none, scalar, vector, row, full }

/// One model of the backward grid: producer → BN.
struct BackwardCase: Sendable, CustomTestStringConvertible {
    var producer: Producer
    var rank = 0
    var grouping = Grouping.single
    var bias: BiasForm
    var transA = false, transB = false
    var type: DataType
    var index: Int

    var testDescription: String {
        switch producer {
        case .conv, .convTranspose: "\(producer.rawValue) \(rank)d \(grouping) \(bias) \(type)"
        case .gemm: "Gemm transA=\(transA ? 1 : 0) transB=\(transB ? 1 : 0) C=\(bias) \(type)"
        case .matMul, .matMulAdd: "\(producer.rawValue) \(bias) \(type)\(transA ? " constant-first" : "")"
        }
    }

    static let types: [DataType] = [.float, .float16, .bfloat16, .double]

    static let all: [BackwardCase] = {
        var cases: [BackwardCase] = []
        for producer in [Producer.conv, .convTranspose] {
            for rank in 1...3 {
                for grouping in Grouping.allCases {
                    for bias in [BiasForm.vector, .none] {
                        for type in types {
                            cases.append(BackwardCase(producer: producer, rank: rank, grouping: grouping, bias: bias,
                                                      type: type, index: cases.count))
                        }
                    }
                }
            }
        }
        for bias in [BiasForm.none, .scalar, .vector, .row, .full] {
            for transA in [false, true] {
                for transB in [false, true] {
                    for type in types {
                        cases.append(BackwardCase(producer: .gemm, bias: bias, transA: transA, transB: transB,
                                                  type: type, index: cases.count))
                    }
                }
            }
        }
        for type in types { cases.append(BackwardCase(producer: .matMul, bias: .none, type: type, index: cases.count)) }
        for bias in [BiasForm.vector, .scalar, .row] {
            for type in types {
                // transA here: the Add's constant is its first operand.
                cases.append(BackwardCase(producer: .matMulAdd, bias: bias, transA: type == .float16 || type == .double,
                                          type: type, index: cases.count))
            }
        }
        return cases
    }()

    /// Gemm's alpha and beta: not 1 in most cases, beta 0 once per type.
    var alpha: Float { transA ? 0.75 : (transB ? 1 : -1.25) }
    var beta: Float {
        switch bias {
        case .none, .vector: 1.5
        case .scalar: transB ? 0 : 1
        case .row: 1
        case .full: 0.5
        }
    }

    /// The model `X → producer → BN → Y`, its sketch (for inputs), the op
    /// types expected after the fold and the applied reason id.
    func build() -> (sketch: ModelSketch, model: Model, ops: [String], reason: FoldReason) {
        let seed = UInt64(index) &* 7919 &+ 3
        switch producer {
        case .conv, .convTranspose:
            let transpose = producer == .convTranspose
            var s = ModelSketch(type: type, seed: seed,
                                inputShape: ModelSketch.convolutionInput(transpose: transpose, rank: rank, grouping: grouping))
            let c = s.convolution(transpose: transpose, rank: rank, grouping: grouping, bias: bias != .none,
                                  input: "X", output: "y", name: "op")
            s.batchNorm("y", "Y", channels: c, name: "bn")
            return (s, s.model(output: "Y"), [producer.rawValue],
                    transpose ? .convTransposeBatchNormFolded : .convBatchNormFolded)
        case .gemm:
            var s = ModelSketch(type: type, seed: seed, inputShape: transA ? [denseK, denseM] : [denseM, denseK])
            var inputs = ["X", s.randomConstant("op_W", dims: transB ? [denseN, denseK] : [denseK, denseN])]
            let cDims: [Int]? = switch bias {
            case .none: nil
            case .scalar: []
            case .vector: [denseN]
            case .row: [1, denseN]
            case .full: [denseM, denseN]
            }
            if let cDims { inputs.append(s.randomConstant("op_C", dims: cDims, scale: 0.5)) }
            s.node("Gemm", inputs, "y", name: "op", [.float("alpha", alpha), .float("beta", beta),
                                                    .int("transA", transA ? 1 : 0), .int("transB", transB ? 1 : 0)])
            s.batchNorm("y", "Y", channels: denseN, name: "bn")
            return (s, s.model(output: "Y"), ["Gemm"], .gemmBatchNormFolded)
        case .matMul, .matMulAdd:
            var s = ModelSketch(type: type, seed: seed, inputShape: [denseM, denseK])
            s.node("MatMul", ["X", s.randomConstant("op_W", dims: [denseK, denseN])], "y", name: "op")
            var bnInput = "y"
            if producer == .matMulAdd {
                let dims = bias == .scalar ? [] : bias == .row ? [1, denseN] : [denseN]
                let a = s.randomConstant("add_C", dims: dims, scale: 0.5)
                s.node("Add", transA ? [a, "y"] : ["y", a], "z", name: "add")
                bnInput = "z"
            }
            s.batchNorm(bnInput, "Y", channels: denseN, name: "bn")
            return (s, s.model(output: "Y"), ["Gemm"], .matMulBatchNormFolded)
        }
    }
}

@Suite("FoldBatchNorm: every producer")
struct FoldLinearBatchNormTests {
    @Test("Producer → BN folds into one op that matches the unfolded graph", arguments: BackwardCase.all)
    func backwardGrid(_ c: BackwardCase) throws {
        let (sketch, original, ops, reason) = c.build()
        let model = try expectFolded(original, sketch: sketch, remarks: [RemarkKey(.applied, "fold-batchnorm", reason, "bn")],
                                     ops: ops, iterations: 2)
        let graph = try #require(model.graph)
        let op = try #require(graph.node(named: "op"))
        #expect(op.outputs == ["Y"])
        #expect(op.inputs.first == "X")
        // Only the op's weight and bias are left; the BN's parameters are gone.
        #expect(graph.initializers.count == 2)
        #expect(graph.initializers.allSatisfy { $0.elementType == c.type })
        #expect(!graph.initializers.contains { $0.name?.hasPrefix("bn_") == true })
        #expect(op.inputs[1] == "op_W", "an unshared weight is replaced in place")
        if c.producer == .gemm {
            #expect(op.floatAttribute("beta") == 1)
            #expect(op.floatAttribute("alpha") == c.alpha)
            #expect(op.intAttribute("transB") == (c.transB ? 1 : 0))
            #expect(graph.constantTensor(named: op.inputs[2])?.dims == (c.bias == .full ? [3, 5] : c.bias == .row ? [1, 5] : [5]))
        }
        if c.producer == .matMul || c.producer == .matMulAdd {
            #expect(op.attributes.isEmpty)
            #expect(graph.constantTensor(named: op.inputs[2])?.dims == [5])
        }
    }

    @Test("ConvTranspose with group 2 and C_out/group = 3: a fold on the wrong axis fails the tolerance",
          arguments: [DataType.float, .float16, .bfloat16, .double])
    func convTransposeWrongAxisIsCaught(_ type: DataType) throws {
        let c = BackwardCase(producer: .convTranspose, rank: 2, grouping: .two, bias: .vector, type: type, index: 5)
        let (sketch, original, _, _) = c.build()
        var model = original
        _ = try runBuiltins(&model)
        try expectMatchesUnfolded(original: original, folded: model, sketch: sketch)

        // The classic bug: W[c, …] treated as output channel c (the Conv
        // layout). W is [4, 3, k…]: scale its 4 first-axis slices by s_0…s_3.
        let bn = try #require(original.graph?.node(named: "bn"))
        let g = try #require(original.graph)
        let gamma = try #require(try g.constantValues(named: bn.inputs[1]))
        let variance = try #require(try g.constantValues(named: bn.inputs[4]))
        let mean = try #require(try g.constantValues(named: bn.inputs[3]))
        let beta = try #require(try g.constantValues(named: bn.inputs[2]))
        let s = zip(gamma, variance).map { $0 / ($1 + Double(Float(1e-5))).squareRoot() }
        let w = try #require(g.initializer(named: "op_W"))
        let b = try #require(try g.constantValues(named: "op_B"))
        let wrongWeight = try w.scaledBlocks(blockSize: (w.elementCount ?? 0) / 4, scale: s, channelOfBlock: { $0 })
        let rightBias = (0..<6).map { (b[$0] - mean[$0]) * s[$0] + beta[$0] }
        var wrong = original
        wrong.updateGraph { graph in
            graph.nodes.removeAll { $0.opType == "BatchNormalization" }
            graph.nodes[0].outputs = ["Y"]
            graph.initializers = [wrongWeight, makeTensor("op_B", type, dims: [6], values: rightBias)]
        }
        let result = try compareWithUnfolded(original: original, folded: wrong, input: sketch.randomInput(seed: 99),
                                             inputShape: sketch.inputShape)
        #expect(result.worstRatio > 10, "ratio \(result.worstRatio)")
    }

    @Test("The tolerance notices 16 units of u in one folded Gemm weight", arguments: [DataType.float, .float16, .bfloat16])
    func toleranceDetectsSmallErrors(_ type: DataType) throws {
        let c = BackwardCase(producer: .gemm, bias: .vector, transB: true, type: type, index: 9)
        let (sketch, original, _, _) = c.build()
        var model = original
        _ = try runBuiltins(&model)
        model.updateGraph { g in
            let i = g.initializers.firstIndex { $0.name == "op_W" }!
            var w = try! g.initializers[i].doubles()
            let j = w.indices.max { w[$0].magnitude < w[$1].magnitude }!
            w[j] += w[j] * 16 * unitRoundoff(type)
            g.initializers[i] = g.initializers[i].replacingData(with: w)!
        }
        // An input that isolates that weight: B is [N, K], the weight reads feature j % K.
        let w = try #require(try model.graph?.initializer(named: "op_W")?.doubles())
        let j = try #require(w.indices.max { w[$0].magnitude < w[$1].magnitude })
        var input = [Double](repeating: 0, count: denseM * denseK)
        input[j % denseK] = 100
        let result = try compareWithUnfolded(original: original, folded: model, input: input, inputShape: sketch.inputShape)
        #expect(result.worstRatio > 1, "ratio \(result.worstRatio)")
    }

    @Test("A Gemm weight shared with another Gemm is cloned, not changed")
    func sharedGemmWeight() throws {
        var s = ModelSketch(type: .float, seed: 5, inputShape: [denseM, denseK])
        s.randomConstant("W", dims: [denseK, denseN])
        s.node("Gemm", ["X", "W"], "y", name: "op")
        s.batchNorm("y", "z", channels: denseN, name: "bn")
        s.node("Gemm", ["X", "W"], "w", name: "other")
        s.node("Add", ["z", "w"], "Y", name: "sum")
        let original = s.model(output: "Y")
        var model = original
        let report = try runBuiltins(&model)
        expectRemarks(report, [RemarkKey(.applied, "fold-batchnorm", .gemmBatchNormFolded, "bn")])
        let graph = try #require(model.graph)
        #expect(graph.node(named: "other")?.inputs[1] == "W")
        #expect(graph.initializer(named: "W") == original.graph?.initializer(named: "W"))
        #expect(graph.node(named: "op")?.inputs[1] != "W")
        try expectMatchesUnfolded(original: original, folded: model, sketch: s)
    }

    @Test("Gemm before opset 7 gets broadcast = 1 with its new [N] bias")
    func oldGemmBroadcast() throws {
        var s = ModelSketch(type: .float, seed: 6, inputShape: [denseM, denseK])
        s.node("Gemm", ["X", s.randomConstant("W", dims: [denseK, denseN]), s.randomConstant("C", dims: [denseM, denseN])],
               "y", name: "op")
        s.batchNorm("y", "Y", channels: denseN, name: "bn")
        s.graph.nodes[1].attributes.append(.int("is_test", 1))
        let original = s.model(output: "Y", opset: 6)
        var model = original
        _ = try runBuiltins(&model)
        // C was [M, N]: it stays [M, N] and needs no broadcast.
        #expect(model.graph?.node(named: "op")?.intAttribute("broadcast") == nil)
        try expectMatchesUnfolded(original: original, folded: model, sketch: s)

        var t = ModelSketch(type: .float, seed: 6, inputShape: [denseM, denseK])
        t.node("MatMul", ["X", t.randomConstant("W", dims: [denseK, denseN])], "y", name: "op")
        t.batchNorm("y", "Y", channels: denseN, name: "bn")
        t.graph.nodes[1].attributes.append(.int("is_test", 1))
        var matMul = t.model(output: "Y", opset: 6)
        let before = matMul
        _ = try runBuiltins(&matMul)
        #expect(matMul.graph?.node(named: "op")?.opType == "Gemm")
        #expect(matMul.graph?.node(named: "op")?.intAttribute("broadcast") == 1)
        try expectMatchesUnfolded(original: before, folded: matMul, sketch: t)
    }
}
