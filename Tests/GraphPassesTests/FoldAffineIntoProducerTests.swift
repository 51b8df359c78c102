import Testing
@testable import GraphPasses
import ONNXGraph
import TestSupport

/// One model of the decomposed-BN grid: producer → Mul and/or Add by a constant.
struct AffineCase: Sendable, CustomTestStringConvertible {
    enum ProducerShape: String, Sendable, CaseIterable {
        case conv1d, conv2d, conv3d, convTranspose2d, gemm
    }
    enum Pattern: String, Sendable, CaseIterable { case mul = "Mul", add = "Add", mulAdd = "Mul+Add" }
    /// The constant's shape: a scalar, `[C, 1, …, 1]` (Gemm: `[N]`), or `[1, C, 1, …, 1]` (Gemm: `[1, N]`).
    enum ConstantShape: String, Sendable, CaseIterable { case scalar, channel, batchChannel }

    var producer: ProducerShape
    var pattern: Pattern
    var shape: ConstantShape
    var type: DataType
    var index: Int

    /// Constant first in every other case (Mul(c, y) / Add(c, y)).
    var constantFirst: Bool { index % 2 == 1 }
    /// Convolutions alternate bias / no bias; Gemm has a C when the index is a multiple of 3.
    var bias: Bool { producer == .gemm ? index % 3 == 0 : index % 4 < 2 }

    var testDescription: String {
        "\(producer) → \(pattern) \(shape)\(constantFirst ? " constant-first" : "") \(bias ? "bias" : "no-bias") \(type)"
    }

    static let all: [AffineCase] = {
        var cases: [AffineCase] = []
        for producer in ProducerShape.allCases {
            for pattern in Pattern.allCases {
                for shape in ConstantShape.allCases {
                    for type in BackwardCase.types {
                        cases.append(AffineCase(producer: producer, pattern: pattern, shape: shape, type: type,
                                                index: cases.count))
                    }
                }
            }
        }
        return cases
    }()

    var producerOp: String { producer == .gemm ? "Gemm" : producer == .convTranspose2d ? "ConvTranspose" : "Conv" }

    func reason(mul: Bool) -> FoldReason {
        FoldAffineIntoProducer.reason(producer == .gemm ? .gemm : producer == .convTranspose2d ? .convTranspose : .conv,
                                      isMul: mul)
    }

    /// The constant's dims for C channels against an output of `rank`.
    func constantDims(channels: Int, rank: Int) -> [Int] {
        switch shape {
        case .scalar: []
        case .channel: [channels] + Array(repeating: 1, count: rank - 2)
        case .batchChannel: [1, channels] + Array(repeating: 1, count: rank - 2)
        }
    }

    func build() -> (sketch: ModelSketch, model: Model) {
        let seed = UInt64(index) &* 104_729 &+ 11
        var s: ModelSketch
        let channels: Int, rank: Int
        switch producer {
        case .gemm:
            s = ModelSketch(type: type, seed: seed, inputShape: [denseM, denseK])
            var inputs = ["X", s.randomConstant("op_W", dims: [denseK, denseN])]
            if bias { inputs.append(s.randomConstant("op_C", dims: [denseN], scale: 0.5)) }
            s.node("Gemm", inputs, "y", name: "op", [.float("beta", 0.5)])
            (channels, rank) = (denseN, 2)
        default:
            let transpose = producer == .convTranspose2d
            let r = producer == .conv1d ? 1 : producer == .conv3d ? 3 : 2
            let grouping = Grouping.allCases[index % 3]
            s = ModelSketch(type: type, seed: seed,
                            inputShape: ModelSketch.convolutionInput(transpose: transpose, rank: r, grouping: grouping))
            channels = s.convolution(transpose: transpose, rank: r, grouping: grouping, bias: bias, input: "X",
                                     output: "y", name: "op")
            rank = r + 2
        }
        let dims = constantDims(channels: channels, rank: rank)
        var last = "y"
        func step(_ op: String, _ name: String, _ output: String, scale: Double, offset: Double) {
            let values = s.rng.normals(Reference.product(dims), standardDeviation: scale).map { $0 + offset }
            let c = s.constant(name + "_c", dims: dims, values: values)
            s.node(op, constantFirst ? [c, last] : [last, c], output, name: name)
            last = output
        }
        switch pattern {
        case .mul: step("Mul", "mul", "Y", scale: 0.5, offset: 1)
        case .add: step("Add", "add", "Y", scale: 0.5, offset: 0)
        case .mulAdd:
            step("Mul", "mul", "z", scale: 0.5, offset: 1)
            step("Add", "add", "Y", scale: 0.5, offset: 0)
        }
        return (s, s.model(output: "Y"))
    }
}

@Suite("FoldAffineIntoProducer (fold-mul-add)")
struct FoldAffineIntoProducerTests {
    @Test("Producer → Mul / Add / Mul → Add by a per-channel constant folds into the producer", arguments: AffineCase.all)
    func grid(_ c: AffineCase) throws {
        let (sketch, original) = c.build()
        var expected: [RemarkKey] = []
        if c.pattern != .add { expected.append(RemarkKey(.applied, "fold-mul-add", c.reason(mul: true), "mul")) }
        if c.pattern != .mul { expected.append(RemarkKey(.applied, "fold-mul-add", c.reason(mul: false), "add")) }
        // Mul → Add rounds the bias twice (once per fold).
        let model = try expectFolded(original, sketch: sketch, remarks: expected, ops: [c.producerOp], iterations: 2,
                                     roundings: c.pattern == .mulAdd ? 2 : 1)
        let op = try #require(model.graph?.node(named: "op"))
        #expect(op.outputs == ["Y"])
        // A Mul alone adds no bias where there was none.
        #expect(op.inputs.count == (c.pattern == .mul && !c.bias ? 2 : 3))
        #expect(model.graph?.initializers.allSatisfy { !($0.name ?? "").hasSuffix("_c") } == true)
        if c.producer == .gemm, op.inputs.count == 3 { #expect(op.floatAttribute("beta") == 1) }
    }
}
