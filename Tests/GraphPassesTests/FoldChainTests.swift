import Testing
@testable import GraphPasses
import ONNXGraph
import TestSupport

/// Folds that enable other folds: the pass manager's rounds reach one op.
@Suite("Fold chains to a fixed point")
struct FoldChainTests {
    @Test("Conv → BN → BN ends as one Conv", arguments: [DataType.float, .float16])
    func convBatchNormBatchNorm(_ type: DataType) throws {
        var s = ModelSketch(type: type, seed: 1, inputShape: ModelSketch.convolutionInput(transpose: false, rank: 2, grouping: .two))
        let c = s.convolution(transpose: false, rank: 2, grouping: .two, bias: true, input: "X", output: "y", name: "op")
        s.batchNorm("y", "z", channels: c, name: "bn1")
        s.batchNorm("z", "Y", channels: c, name: "bn2")
        // The weights are rounded twice, once per fold.
        let model = try expectFolded(s.model(output: "Y"), sketch: s,
                                     remarks: [RemarkKey(.applied, "fold-batchnorm", .convBatchNormFolded, "bn1"),
                                               RemarkKey(.applied, "fold-batchnorm", .convBatchNormFolded, "bn2")],
                                     ops: ["Conv"], iterations: 2, roundings: 2)
        #expect(model.graph?.initializers.count == 2)
    }

    @Test("Conv → Mul → Add → BN ends as one Conv", arguments: [DataType.float, .bfloat16])
    func convMulAddBatchNorm(_ type: DataType) throws {
        var s = ModelSketch(type: type, seed: 2, inputShape: ModelSketch.convolutionInput(transpose: false, rank: 2, grouping: .single))
        let c = s.convolution(transpose: false, rank: 2, grouping: .single, bias: false, input: "X", output: "y", name: "op")
        s.node("Mul", ["y", s.randomConstant("m", dims: [1, c, 1, 1])], "z", name: "mul")
        s.node("Add", [s.randomConstant("a", dims: [c, 1, 1]), "z"], "w", name: "add")
        s.batchNorm("w", "Y", channels: c, name: "bn")
        // Round 1: the BN's producer is an Add (missed, then forgotten); the Mul and Add fold.
        // Round 2: the BN folds. Round 3 finds nothing.
        let model = try expectFolded(s.model(output: "Y"), sketch: s,
                                     remarks: [RemarkKey(.applied, "fold-mul-add", .convMulFolded, "mul"),
                                               RemarkKey(.applied, "fold-mul-add", .convAddFolded, "add"),
                                               RemarkKey(.applied, "fold-batchnorm", .convBatchNormFolded, "bn")],
                                     ops: ["Conv"], iterations: 3, roundings: 3)
        #expect(model.graph?.initializers.count == 2)
        // Only the BN counts as a folded BatchNormalization.
        var again = s.model(output: "Y")
        #expect(try runBuiltins(&again).remarks.filter(\.foldedBatchNormalization).map(\.node) == ["bn"])
    }

    @Test("BN → Conv → BN ends as one Conv", arguments: [DataType.float, .double])
    func batchNormConvBatchNorm(_ type: DataType) throws {
        var s = ModelSketch(type: type, seed: 3, inputShape: ModelSketch.convolutionInput(transpose: false, rank: 2, grouping: .depthwise))
        s.batchNorm("X", "x", channels: 4, name: "bn1")
        let geometry = ConvGeometry(rank: 2, transpose: false)
        let c = s.convolution(transpose: false, rank: 2, grouping: .depthwise, bias: true, input: "x", output: "y",
                              name: "op", attributes: [.ints("kernel_shape", geometry.kernel.map(Int64.init)),
                                                       .ints("strides", [1, 2]), .int("group", 4)])
        s.batchNorm("y", "Y", channels: c, name: "bn2")
        let model = try expectFolded(s.model(output: "Y"), sketch: s,
                                     remarks: [RemarkKey(.applied, "fold-batchnorm", .convBatchNormFolded, "bn2"),
                                               RemarkKey(.applied, "fold-batchnorm-forward", .batchNormConvFolded, "bn1")],
                                     ops: ["Conv"], iterations: 2, roundings: 2)
        #expect(model.graph?.node(named: "op")?.inputs.first == "X")
    }

    @Test("BN → MatMul → Add → BN → Mul ends as one Gemm")
    func denseChain() throws {
        var s = ModelSketch(type: .float, seed: 4, inputShape: [denseM, denseK])
        s.batchNorm("X", "x", channels: denseK, name: "bn1")
        s.node("MatMul", ["x", s.randomConstant("W", dims: [denseK, denseN])], "y", name: "op")
        s.node("Add", ["y", s.randomConstant("b", dims: [denseN])], "z", name: "add")
        s.batchNorm("z", "w", channels: denseN, name: "bn2")
        s.node("Mul", ["w", s.randomConstant("m", dims: [1, denseN])], "Y", name: "mul")
        try expectFolded(s.model(output: "Y"), sketch: s,
                         remarks: [RemarkKey(.applied, "fold-batchnorm", .matMulBatchNormFolded, "bn2"),
                                   RemarkKey(.applied, "fold-mul-add", .gemmMulFolded, "mul"),
                                   RemarkKey(.applied, "fold-batchnorm-forward", .batchNormGemmFolded, "bn1")],
                         ops: ["Gemm"], iterations: 2, roundings: 3)
    }
}
