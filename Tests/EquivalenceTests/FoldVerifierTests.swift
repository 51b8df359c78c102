import Foundation
import Testing
import Equivalence
import GraphPasses
import ONNXFile
import ONNXGraph
import TestSupport

/// A deliberately wrong fold, for these tests only: Conv → BN folded with
/// ε = 0 (the "forgotten ε" mistake). Only initializer weights, group = 1.
/// It records its folds as a pass should, so the pair check sees each one.
struct FoldWithoutEpsilon: GraphPass {
    let name = "test-fold-without-epsilon"
    let summary = "folds BatchNormalization ignoring ε (wrong on purpose)"

    func run(on graph: inout Graph, context: inout PassContext) throws -> PassResult {
        var modified = false
        while let bnID = graph.nodeIDs.first(where: { id in
            graph[id].isOp("BatchNormalization") && graph.value(named: graph[id].inputs[0]).producer.map { graph[$0.node].isOp("Conv") } == true
        }) {
            let bn = graph[bnID]
            let convID = graph.value(named: bn.inputs[0]).producer!.node
            let conv = graph[convID]
            var record = RewriteRecord(pass: name, reason: "ConvBatchNormFolded", kind: .batchNormIntoProducer,
                                       subject: bnID, op: convID, replaced: [convID, bnID], in: graph, context: context)
            let w = graph.initializer(named: conv.inputs[1])!
            let p = try bn.inputs[1...4].map { try graph.initializer(named: $0)!.doubles() }
            let channels = Int(w.dims[0])
            let b = conv.inputs.count > 2 ? try graph.initializer(named: conv.inputs[2])!.doubles() : [Double](repeating: 0, count: channels)
            let s = (0..<channels).map { p[0][$0] / p[3][$0].squareRoot() }   // no ε
            let per = w.elementCount! / channels
            let wv = try w.doubles()
            let newW = makeTensor(conv.inputs[1] + "_broken", w.elementType, dims: w.dims.map(Int.init),
                                  values: wv.indices.map { wv[$0] * s[$0 / per] })
            let newB = makeTensor(conv.inputs[1] + "_broken_bias", w.elementType, dims: [channels],
                                  values: (0..<channels).map { (b[$0] - p[2][$0]) * s[$0] + p[1][$0] })
            graph.appendInitializer(newW)
            graph.appendInitializer(newB)
            graph.removeNodes([bnID])
            graph.updateNode(convID) { folded in
                folded.inputs = [conv.inputs[0], newW.name!, newB.name!]
                folded.outputs = [bn.outputs[0]]
            }
            record.finish(replacement: convID, in: graph, context: context)
            context.record(record)
            modified = true
        }
        return PassResult(modified: modified)
    }
}

@Suite("fold verification")
struct FoldVerifierTests {
    static func fold(_ model: Model, with pass: any GraphPass = FoldBatchNorm()) throws -> Model {
        try foldRecording(model, with: pass).model
    }

    /// The folded model and the passes' records.
    static func foldRecording(_ model: Model, with passes: any GraphPass...) throws -> (model: Model, records: [RewriteRecord]) {
        var m = model
        let report = try PassManager(passes: passes.isEmpty ? [FoldBatchNorm()] : passes).run(on: &m)
        return (m, report.records)
    }

    /// The pair checks of the records of folding `model` with `passes`.
    static func verify(_ model: Model, with passes: any GraphPass...) throws -> [FoldVerifier.PairResult] {
        var m = model
        let report = try PassManager(passes: passes.isEmpty ? [FoldBatchNorm()] : passes).run(on: &m)
        return FoldVerifier.verify(report.records, irVersion: m.irVersion, opsetImports: m.opsetImports)
    }

    /// `record` with the after side's weight scaled by 1.01: a wrong fold.
    static func broken(_ record: RewriteRecord) throws -> RewriteRecord {
        var r = record
        let name = r.after.inputs[1]
        let w = try #require(r.afterConstants[name])
        r.afterConstants[name] = try w.scaledBlocks(blockSize: try #require(w.elementCount), scale: [1.01], channelOfBlock: { _ in 0 })
        return r
    }

    /// The body of `node`'s attribute `name` in the main graph, edited in place.
    static func editBranch(_ model: inout Model, node: String, _ name: String, _ edit: (inout Graph, inout Graph) throws -> Void) rethrows {
        var g = model.graph!
        let i = g.nodes.firstIndex { $0.name == node }!
        let slot = g.nodes[i].attributes.firstIndex { $0.name == name }!
        var body = g.nodes[i].attributes[slot].g!
        try edit(&body, &g)
        g.nodes[i].attributes[slot].g = body
        model.graph = g
    }

    /// Folds inside If branches are checked pair by pair too — including a
    /// branch whose Conv reads its weight from the main graph — and a broken
    /// fold inside a branch fails its pair (the whole-model check cannot run
    /// If nodes).
    @Test func pairsInsideSubgraphsAreChecked() throws {
        var original = try ModelReader.read(path: TestPaths.fixture("subgraph_if.onnx"))
        try Self.editBranch(&original, node: "if", "then_branch") { branch, main in
            let w = try #require(branch.initializers.first { $0.name == "t_W" })
            branch.initializers.removeAll { $0.name == "t_W" }
            main.initializers.append(w)
        }
        try original.validate()
        let (folded, records) = try Self.foldRecording(original)
        let pairs = FoldVerifier.verify(records, irVersion: folded.irVersion, opsetImports: folded.opsetImports)
        #expect(Set(pairs.map(\.subject)) == ["m_bn", "if/else_branch/e_bn", "if/then_branch/t_bn"])
        let problems = pairs.filter { !$0.passed }.map { "\($0.subject): \($0.problem ?? "ratio \($0.ratio)")" }
        #expect(problems.isEmpty, "\(problems)")
        // The then-branch Conv's weight came from the main graph: the record holds it.
        let then = try #require(records.first { $0.subject == "if/then_branch/t_bn" })
        #expect(then.beforeConstants["t_W"] != nil)

        let brokenRecords = try records.map { $0.subject == "if/then_branch/t_bn" ? try Self.broken($0) : $0 }
        let brokenPairs = FoldVerifier.verify(brokenRecords, irVersion: folded.irVersion, opsetImports: folded.opsetImports)
        #expect(brokenPairs.filter { !$0.passed }.map(\.subject) == ["if/then_branch/t_bn"])
    }

    @Test(arguments: ["torch_tiny_resnet.onnx", "torch_resnet18.onnx", "conv2d_bn_fp16.onnx", "conv2d_bn_bf16.onnx", "conv2d_bn_f64.onnx"])
    func correctFoldPasses(fixture: String) throws {
        let original = try ModelReader.read(path: TestPaths.fixture(fixture))
        let folded = try Self.fold(original)
        let pairs = try Self.verify(original)
        let expected = original.graph!.nodes.filter { $0.isOp("BatchNormalization") }.count
        #expect(pairs.count == expected)
        for p in pairs {
            #expect(p.passed, "\(p.failureDescription)")
            #expect(p.ratio < 1)
        }
        let whole = FoldVerifier.verifyWholeModel(original: original, folded: folded)
        guard case .passed(let report) = whole else { Issue.record("whole model: \(whole)"); return }
        print("[measure] \(fixture): worst pair ratio \(pairs.map(\.ratio).max() ?? 0), whole model \(report.outputs.map(\.ratio).max() ?? 0)")
    }

    @Test func foldWithoutEpsilonIsCaught() throws {
        let original = try ModelReader.read(path: TestPaths.fixture("torch_tiny_resnet.onnx"))
        let broken = try Self.fold(original, with: FoldWithoutEpsilon())
        let pairs = try Self.verify(original, with: FoldWithoutEpsilon())
        #expect(pairs.count == 6)
        #expect(pairs.contains { !$0.passed })
        print("[measure] fold without ε: pair ratios \(pairs.map(\.ratio))")
        guard case .failed = FoldVerifier.verifyWholeModel(original: original, folded: broken) else {
            Issue.record("the whole-model check should fail"); return
        }
    }

    @Test func largeWeightsAreCheckedOnSampledChannels() throws {
        // Conv 512 → 1024, 3×3: 4.7 M weights > pairWeightLimit.
        var rng = SeededGenerator(seed: 5)
        let cout = 1024, cin = 512
        let w = (0..<cout * cin * 9).map { Double(($0 &* 7919) % 1000) / 50_000 - 0.01 }   // cheap, float-exact enough
        let c = [cout]
        let graph = Graph(name: "big", nodes: [
            Node(opType: "Conv", inputs: ["x", "W"], outputs: ["c"], name: "conv", attributes: [.ints("pads", [1, 1, 1, 1])]),
            Node(opType: "BatchNormalization", inputs: ["c", "g", "b", "m", "v"], outputs: ["y"], name: "bn"),
        ], inputs: [valueInfo("x", .float, dims: [1, cin, 7, 7])],
           outputs: [valueInfo("y", .float, dims: [1, cout, 7, 7])],
           initializers: [
            makeTensor("W", .float, dims: [cout, cin, 3, 3], values: w),
            makeTensor("g", .float, dims: c, values: rng.uniforms(cout, 0.5...1.5)),
            makeTensor("b", .float, dims: c, values: rng.uniforms(cout, -1...1)),
            makeTensor("m", .float, dims: c, values: rng.uniforms(cout, -1...1)),
            makeTensor("v", .float, dims: c, values: rng.uniforms(cout, 0.25...2)),
           ])
        let original = Model(irVersion: 8, opsetImports: [OperatorSetID(domain: "", version: 17)], graph: graph)
        let pairs = try Self.verify(original)
        #expect(pairs.count == 1)
        #expect(pairs.first?.passed == true, "\(pairs.first?.failureDescription ?? "")")
        #expect(pairs.first?.channels == cout)
        #expect((pairs.first?.channelsChecked ?? 0) < cout)
        let broken = try Self.verify(original, with: FoldWithoutEpsilon())
        #expect(broken.first?.passed == false)
    }
}

/// The pair check for every producer `fold-batchnorm` folds into, not only Conv.
@Suite("fold verification: ConvTranspose, Gemm, MatMul pairs")
struct LinearPairVerifierTests {
    enum Producer: String, CaseIterable, Sendable {
        case convTranspose = "ConvTranspose", gemm = "Gemm", matMul = "MatMul", matMulAdd = "MatMul+Add"
    }

    /// `X → producer (→ Add) → BN → Y`, the shape the pair is expected to
    /// run on, and the output channels.
    static func model(_ producer: Producer) -> (Model, shape: [Int], channels: Int) {
        switch producer {
        case .convTranspose:
            // W [C_in 4, C_out/g 3, 2, 3], group 2: 6 output channels.
            var s = ModelSketch(type: .float, seed: 31, inputShape: [1, 4, 3, 4])
            s.node("ConvTranspose", ["X", s.randomConstant("op_W", dims: [4, 3, 2, 3]), s.randomConstant("op_B", dims: [6])],
                   "y", name: "op", [.int("group", 2), .ints("strides", [1, 2]), .ints("pads", [0, 1, 1, 0]),
                                     .ints("dilations", [2, 1])])
            s.batchNorm("y", "Y", channels: 6, name: "bn")
            // The dilated kernel is 3 × 3: spatial size max(4, 3) = 4.
            return (s.model(output: "Y"), [1, 4, 4, 4], 6)
        case .gemm:
            // transA = transB = 1: A is [K 4, M 3], B [N 5, K 4]; C [M 3, N 5] fixes M = 3.
            var s = ModelSketch(type: .float, seed: 32, inputShape: [4, 3])
            s.node("Gemm", ["X", s.randomConstant("op_W", dims: [5, 4]), s.randomConstant("op_C", dims: [3, 5])], "y",
                   name: "op", [.int("transA", 1), .int("transB", 1), .float("alpha", 0.75), .float("beta", 1.5)])
            s.batchNorm("y", "Y", channels: 5, name: "bn")
            return (s.model(output: "Y"), [4, 3], 5)
        case .matMul, .matMulAdd:
            var s = ModelSketch(type: .float, seed: 33, inputShape: [3, 4])
            s.node("MatMul", ["X", s.randomConstant("op_W", dims: [4, 5])], "y", name: "op")
            var last = "y"
            if producer == .matMulAdd {
                s.node("Add", [s.randomConstant("add_C", dims: [5]), "y"], "z", name: "add")
                last = "z"
            }
            s.batchNorm(last, "Y", channels: 5, name: "bn")
            return (s.model(output: "Y"), [FoldVerifier.pairRows, 4], 5)
        }
    }

    @Test("A correct fold passes; 1.01 × the folded weight fails", arguments: Producer.allCases)
    func pairIsChecked(_ producer: Producer) throws {
        let (original, shape, channels) = Self.model(producer)
        let folded = try FoldVerifierTests.fold(original)
        let g = try #require(folded.graph)
        #expect(g.nodes.map(\.opType) == [producer == .convTranspose ? "ConvTranspose" : "Gemm"])
        let (_, records) = try FoldVerifierTests.foldRecording(original)
        #expect(records.map { $0.before.map(\.opType) } == [producer == .matMulAdd ? ["MatMul", "Add", "BatchNormalization"]
            : [producer == .convTranspose ? "ConvTranspose" : producer.rawValue, "BatchNormalization"]])
        #expect(records.first?.after == g.nodes.first)

        let results = FoldVerifier.verify(records, irVersion: folded.irVersion, opsetImports: folded.opsetImports)
        #expect(results.count == 1)
        let result = try #require(results.first)
        #expect(result.passed, "\(result.failureDescription)")
        #expect(result.ratio < 1)
        #expect(result.inputShape == shape)
        #expect(result.op == "op")
        #expect(result.subject == "bn")
        #expect(result.output == "Y")
        #expect((result.channels, result.channelsChecked) == (channels, channels))

        let failed = FoldVerifier.verify(try records.map(FoldVerifierTests.broken), irVersion: folded.irVersion,
                                         opsetImports: folded.opsetImports)
        #expect(failed.count == 1)
        #expect(failed.first?.passed == false)
        #expect((failed.first?.ratio ?? 0) > 1)
    }
}
