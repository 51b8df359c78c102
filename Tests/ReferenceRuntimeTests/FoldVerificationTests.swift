import Testing
import GraphPasses
import ONNXFile
import ONNXGraph
@testable import ReferenceRuntime
import TestSupport

/// What the fold's verification step will do: run a model before and after
/// `FoldBatchNorm` on the same input and compare.
@Suite("Fold verification")
struct FoldVerificationTests {
    /// A copy of the graph computing in float64: every float initializer,
    /// Constant value and graph input widened (exactly) to double, so the same network runs
    /// with 2⁻⁵³ rounding. Its outputs are the "truth" the float32 runs are
    /// measured against.
    static func widenedToDouble(_ graph: Graph) throws -> Graph {
        var g = graph
        func widen(_ t: Tensor) throws -> Tensor {
            guard t.elementType == .float else { return t }
            return Tensor(name: t.name, elementType: .double, dims: t.dims, values: try t.doubles())!
        }
        g.initializers = try g.initializers.map(widen)
        for i in g.inputs.indices {
            if case .tensor(var tt)? = g.inputs[i].type?.value, tt.elementType == .float {
                tt.elementType = .double
                g.inputs[i].type = TypeProto(value: .tensor(tt))
            }
        }
        for i in g.nodes.indices where g.nodes[i].isOp("Constant") {
            for j in g.nodes[i].attributes.indices {
                if let t = g.nodes[i].attributes[j].t { g.nodes[i].attributes[j].t = try widen(t) }
            }
        }
        return g
    }

    static func inputs(of model: Model, seed: UInt64, type: DataType? = nil) throws -> [String: RuntimeTensor] {
        let graph = model.graph!
        let initializerNames = Set(graph.initializers.compactMap(\.name))
        var rng = SeededGenerator(seed: seed)
        var feeds: [String: RuntimeTensor] = [:]
        for input in graph.inputs where !initializerNames.contains(input.name ?? "") {
            let tt = try #require(input.type?.tensorType)
            let dims = try #require(tt.shape?.dims.map { d -> Int in
                if case .value(let v)? = d.value { return Int(v) }
                return 1  // symbolic (batch) dimension
            })
            let elementType = type ?? tt.elementType ?? .float
            feeds[input.name!] = try RuntimeTensor(shape: dims, values: randomValues(product(dims), &rng, type: elementType),
                                                   elementType: elementType)
        }
        return feeds
    }

    /// Original and folded ResNets agree. Tolerance: both float32 runs are
    /// compared with a float64 run of the original. Each carries the
    /// accumulated float32 rounding of every layer (dot products of up to
    /// K = C·k² terms: worst case K·u₃₂ relative per layer, in practice
    /// √K·u₃₂ because rounding errors of random-sign terms do not add up
    /// coherently); folding adds one rounding of each folded weight (u₃₂
    /// relative). So each float32 run must be within 1e-5·max|y| of the
    /// float64 run (≈ 170 u₃₂, comfortably above √K·u₃₂·depth for these
    /// nets, K ≤ 1152, ≤ 20 layers, and the same rule Tests/CrossCheck
    /// applies to onnxruntime), and hence the two runs within 2e-5·max|y|
    /// of each other.
    @Test(arguments: ["torch_tiny_resnet.onnx", "torch_resnet18.onnx"])
    func resnetOriginalVersusFolded(_ fixture: String) throws {
        let original = try ModelReader.read(path: TestPaths.fixture(fixture))
        var folded = original
        let report = try PassManager(passes: [FoldBatchNorm()]).run(on: &folded)
        #expect(report.remarks.contains { $0.kind == .applied })
        #expect(!folded.graph!.nodes.contains { $0.isOp("BatchNormalization") })
        #expect(Interpreter.unsupportedOperators(in: original.graph!).isEmpty)

        let feeds = try Self.inputs(of: original, seed: 42)
        let a = try Interpreter(model: original).run(inputs: feeds)
        let b = try Interpreter(model: folded).run(inputs: feeds)
        let truthInterpreter = try Interpreter(graph: Self.widenedToDouble(original.graph!), opset: original.opsetVersion()!)
        let truth = try truthInterpreter.run(inputs: feeds.mapValues { try cast($0, to: .double) })
        #expect(!a.isEmpty)
        for (name, ya) in a {
            let yb = try #require(b[name]), yt = try #require(truth[name])
            #expect(ya.shape == yb.shape && ya.shape == yt.shape)
            let scale = yt.doubles().map(abs).max() ?? 0
            #expect(scale > 0)
            expectClose(ya.doubles(), yt.doubles(), bound: ya.doubles().map { _ in 1e-5 * scale }, "\(fixture) original vs float64")
            expectClose(yb.doubles(), yt.doubles(), bound: yb.doubles().map { _ in 1e-5 * scale }, "\(fixture) folded vs float64")
            expectClose(ya.doubles(), yb.doubles(), bound: ya.doubles().map { _ in 2e-5 * scale }, "\(fixture) original vs folded")
        }
    }

    /// Every fixture the fold accepts either runs before and after folding
    /// with matching outputs, or names the operators that keep it from
    /// running. float32 models use the ResNet rule against each other
    /// (2e-5·max|y|); float16/bfloat16 outputs are rounded after every
    /// operator, so the two runs may differ by a few units in the last place
    /// of the output scale: 8 ulp of max|y| (2⁻¹⁰ resp. 2⁻⁷ relative), the
    /// rule Tests/CrossCheck uses; float64 1e-12·max|y|.
    @Test func everyFoldFixture() throws {
        let manifest = try TestPaths.manifest()
        var ran = 0
        for entry in manifest {
            guard let file = entry["file"] as? String, !file.hasPrefix("bad/"), (entry["folded"] as? Int ?? 0) > 0 else { continue }
            let original = try ModelReader.read(path: TestPaths.fixture(file))
            guard Interpreter.unsupportedOperators(in: original.graph!).isEmpty else { continue }
            var folded = original
            _ = try PassManager(passes: [FoldBatchNorm()]).run(on: &folded)
            let feeds = try Self.inputs(of: original, seed: 7)
            let a = try Interpreter(model: original).run(inputs: feeds)
            let b = try Interpreter(model: folded).run(inputs: feeds)
            for (name, ya) in a {
                let yb = try #require(b[name])
                let scale = ya.doubles().map(abs).max() ?? 0
                let relative: Double
                switch ya.elementType {
                case .float16: relative = 8 * 0x1p-10
                case .bfloat16: relative = 8 * 0x1p-7
                case .double: relative = 1e-12
                default: relative = 2e-5
                }
                expectClose(yb.doubles(), ya.doubles(), bound: ya.doubles().map { _ in relative * scale }, "\(file) \(name)")
            }
            ran += 1
        }
        #expect(ran >= 15, "only \(ran) fixtures ran")
    }
}
