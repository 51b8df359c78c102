import Foundation
import Testing
import Equivalence
import GraphPasses
import ONNXFile
import ONNXGraph
import ReferenceRuntime
import TestSupport

/// The default rule in both directions: correct folds pass, real mistakes fail.
@Suite("Default equivalence rule")
struct DefaultRuleTests {
    static func fold(_ model: Model) throws -> Model {
        var m = model
        _ = try PassManager(passes: [FoldBatchNorm()]).run(on: &m)
        return m
    }

    static func describe(_ r: EquivalenceReport) -> String {
        r.outputs.map { o in
            "\(o.name): error \(o.error ?? -1) bound \(o.bound ?? -1) noise \(o.referenceNoise ?? -1) scale \(o.scale ?? -1) ratio \(o.ratio)"
        }.joined(separator: "; ")
    }

    @Test(arguments: ["torch_tiny_resnet.onnx", "torch_resnet18.onnx"])
    func correctFoldPasses(_ fixture: String) throws {
        let original = try ModelReader.read(path: TestPaths.fixture(fixture))
        let report = try EquivalenceChecker(a: original, b: Self.fold(original)).compare(samples: 2, seed: 1)
        print("[measure] \(fixture) correct fold: \(Self.describe(report))")
        #expect(report.equivalent, "\(Self.describe(report))")
        // The original compared with itself is trivially within the bound.
        let same = try EquivalenceChecker(a: original, b: original).compare(samples: 1)
        #expect(same.equivalent)
    }

    /// A fold that left out ε (ε forced to 1e-12 before folding) must fail.
    @Test(arguments: ["torch_tiny_resnet.onnx", "torch_resnet18.onnx"])
    func foldWithoutEpsilonFails(_ fixture: String) throws {
        let original = try ModelReader.read(path: TestPaths.fixture(fixture))
        let broken = try Self.fold(original.withBatchNormEpsilon(1e-12))
        #expect(!broken.graph!.nodes.contains { $0.isOp("BatchNormalization") })
        let report = try EquivalenceChecker(a: original, b: broken).compare(samples: 2, seed: 1)
        print("[measure] \(fixture) ε = 0 fold: \(Self.describe(report))")
        #expect(!report.equivalent, "\(Self.describe(report))")
    }

    @Test func convTransposeFolds() throws {
        let original = ConvTransposeBN.original()
        let right = try EquivalenceChecker(a: original, b: ConvTransposeBN.folded(channelAxis: 1)).compare(samples: 4)
        print("[measure] ConvTranspose right axis: \(Self.describe(right))")
        #expect(right.equivalent, "\(Self.describe(right))")
        let wrong = try EquivalenceChecker(a: original, b: ConvTransposeBN.folded(channelAxis: 0)).compare(samples: 4)
        print("[measure] ConvTranspose wrong axis: \(Self.describe(wrong))")
        #expect(!wrong.equivalent)
        let noEpsilon = try EquivalenceChecker(a: original, b: ConvTransposeBN.folded(epsilon: 0)).compare(samples: 4)
        print("[measure] ConvTranspose ε = 0: \(Self.describe(noEpsilon))")
        #expect(!noEpsilon.equivalent)
    }

    /// float16 / bfloat16 / double fixtures: the fold passes against the float64 reference.
    @Test(arguments: ["conv2d_bn_fp16.onnx", "conv2d_bn_bf16.onnx", "conv2d_bn_f64.onnx", "conv2d_bn.onnx", "conv3d_bn.onnx"])
    func otherPrecisions(_ fixture: String) throws {
        let original = try ModelReader.read(path: TestPaths.fixture(fixture))
        let report = try EquivalenceChecker(a: original, b: Self.fold(original)).compare(samples: 3)
        print("[measure] \(fixture): \(Self.describe(report))")
        #expect(report.equivalent, "\(Self.describe(report))")
    }

    @Test func explicitTolerance() throws {
        let original = ConvTransposeBN.original()
        let folded = ConvTransposeBN.folded()
        #expect(try EquivalenceChecker(a: original, b: folded, tolerance: .explicit(rtol: 1e-4, atol: 1e-5)).compare().equivalent)
        let wrong = ConvTransposeBN.folded(channelAxis: 0)
        #expect(try !EquivalenceChecker(a: original, b: wrong, tolerance: .explicit(rtol: 1e-3, atol: 1e-4)).compare().equivalent)
    }

    @Test func inputSpecsBindSymbolicDimensions() throws {
        var graph = Graph(name: "g")
        graph.inputs = [ValueInfo(name: "x", type: TypeProto(value: .tensor(TypeProto.TensorType(elementType: .float, shape: TensorShape(dims: [
            TensorShape.Dimension(value: .param("N")), TensorShape.Dimension(value: .value(3)), TensorShape.Dimension(value: nil),
        ])))))]
        #expect(try InputSpec.inputs(of: graph) == [InputSpec(name: "x", elementType: .float, shape: [1, 3, 1])])
        #expect(try InputSpec.inputs(of: graph, shapes: ["x": [4, 3, 7]]) == [InputSpec(name: "x", elementType: .float, shape: [4, 3, 7])])
        #expect(throws: EquivalenceError.self) { try InputSpec.inputs(of: graph, shapes: ["x": [4, 2, 7]]) }
        #expect(throws: EquivalenceError.self) { try InputSpec.inputs(of: graph, shapes: ["x": [4, 3]]) }
    }
}
