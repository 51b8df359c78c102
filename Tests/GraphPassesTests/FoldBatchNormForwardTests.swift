import Testing
@testable import GraphPasses
import ONNXGraph
import TestSupport

/// One model of the forward grid: X → BN → consumer.
struct ForwardCase: Sendable, CustomTestStringConvertible {
    enum Consumer: String, Sendable { case conv = "Conv", gemm = "Gemm", matMul = "MatMul" }
    /// How a Conv says it pads nothing: `pads` all zero, `auto_pad = VALID`, or no `pads` at all.
    enum NoPadding: String, Sendable, CaseIterable { case zeroPads, valid, absent }

    var consumer: Consumer
    var rank = 0
    var grouping = Grouping.single
    var bias: BiasForm
    var transB = false
    var type: DataType
    var index: Int

    var padding: NoPadding { NoPadding.allCases[index % 3] }

    var testDescription: String {
        switch consumer {
        case .conv: "BN → Conv \(rank)d \(grouping) \(bias) \(padding) \(type)"
        case .gemm: "BN → Gemm transB=\(transB ? 1 : 0) C=\(bias) \(type)"
        case .matMul: "BN → MatMul \(type)"
        }
    }

    static let all: [ForwardCase] = {
        var cases: [ForwardCase] = []
        for rank in 1...3 {
            for grouping in Grouping.allCases {
                for bias in [BiasForm.vector, .none] {
                    for type in BackwardCase.types {
                        cases.append(ForwardCase(consumer: .conv, rank: rank, grouping: grouping, bias: bias, type: type,
                                                 index: cases.count))
                    }
                }
            }
        }
        for transB in [false, true] {
            for bias in [BiasForm.none, .vector, .full] {
                for type in BackwardCase.types {
                    cases.append(ForwardCase(consumer: .gemm, bias: bias, transB: transB, type: type, index: cases.count))
                }
            }
        }
        for type in BackwardCase.types { cases.append(ForwardCase(consumer: .matMul, bias: .none, type: type, index: cases.count)) }
        return cases
    }()

    var reason: FoldReason {
        switch consumer {
        case .conv: .batchNormConvFolded
        case .gemm: .batchNormGemmFolded
        case .matMul: .batchNormMatMulFolded
        }
    }

    func build() -> (sketch: ModelSketch, model: Model) {
        let seed = UInt64(index) &* 15_485_863 &+ 5
        switch consumer {
        case .conv:
            var s = ModelSketch(type: type, seed: seed,
                                inputShape: ModelSketch.convolutionInput(transpose: false, rank: rank, grouping: grouping))
            let (cIn, _, group) = channels(grouping)
            let geometry = ConvGeometry(rank: rank, transpose: false)
            var attributes = geometry.attributes(transpose: false, group: group).filter { $0.name != "pads" }
            switch padding {
            case .zeroPads: attributes.append(.ints("pads", Array(repeating: 0, count: 2 * rank)))
            case .valid: attributes.append(.string("auto_pad", "VALID"))
            case .absent: break
            }
            s.batchNorm("X", "x", channels: cIn, name: "bn")
            s.convolution(transpose: false, rank: rank, grouping: grouping, bias: bias != .none, input: "x",
                          output: "Y", name: "op", attributes: attributes)
            return (s, s.model(output: "Y"))
        case .gemm:
            var s = ModelSketch(type: type, seed: seed, inputShape: [denseM, denseK])
            s.batchNorm("X", "x", channels: denseK, name: "bn")
            var inputs = ["x", s.randomConstant("op_W", dims: transB ? [denseN, denseK] : [denseK, denseN])]
            if bias != .none {
                inputs.append(s.randomConstant("op_C", dims: bias == .full ? [denseM, denseN] : [denseN], scale: 0.5))
            }
            s.node("Gemm", inputs, "Y", name: "op", [.float("alpha", 0.75), .float("beta", 1.5),
                                                    .int("transB", transB ? 1 : 0)])
            return (s, s.model(output: "Y"))
        case .matMul:
            var s = ModelSketch(type: type, seed: seed, inputShape: [denseM, denseK])
            s.batchNorm("X", "x", channels: denseK, name: "bn")
            s.node("MatMul", ["x", s.randomConstant("op_W", dims: [denseK, denseN])], "Y", name: "op")
            return (s, s.model(output: "Y"))
        }
    }
}

@Suite("FoldBatchNormForward (fold-batchnorm-forward)")
struct FoldBatchNormForwardTests {
    @Test("BN → unpadded Conv / Gemm / MatMul folds into the op after it", arguments: ForwardCase.all)
    func grid(_ c: ForwardCase) throws {
        let (sketch, original) = c.build()
        let model = try expectFolded(original, sketch: sketch,
                                     remarks: [RemarkKey(.applied, "fold-batchnorm-forward", c.reason, "bn")],
                                     ops: [c.consumer == .conv ? "Conv" : "Gemm"], iterations: 2)
        let graph = try #require(model.graph)
        let op = try #require(graph.node(named: "op"))
        #expect(op.inputs[0] == "X")
        #expect(op.inputs.count == 3)
        #expect(op.inputs[1] == "op_W")
        #expect(graph.initializers.count == 2)
        #expect(!graph.initializers.contains { $0.name?.hasPrefix("bn_") == true })
        if c.consumer == .gemm {
            #expect(op.floatAttribute("alpha") == 0.75)
            #expect(op.floatAttribute("beta") == 1)
        }
    }

    @Test("SAME_UPPER / SAME_LOWER with a 1×1 kernel pads nothing: the BN folds forward",
          arguments: ["SAME_UPPER", "SAME_LOWER"])
    func sameWithUnitKernel(_ autoPad: String) throws {
        var s = ModelSketch(type: .float, seed: 71, inputShape: [1, 4, 5, 6])
        s.batchNorm("X", "x", channels: 4, name: "bn")
        s.node("Conv", ["x", s.randomConstant("W", dims: [6, 2, 1, 1])], "Y", name: "op",
               [.string("auto_pad", autoPad), .ints("strides", [2, 1]), .int("group", 2)])
        try expectFolded(s.model(output: "Y"), sketch: s,
                         remarks: [RemarkKey(.applied, "fold-batchnorm-forward", .batchNormConvFolded, "bn")], ops: ["Conv"])
    }
}
