import GraphPasses
import ONNXFile
import ONNXGraph
import Testing
import TestSupport

/// Remarks carry the node's identity and scope and are append-only; the
/// report decides one verdict per node. Records say exactly what each fold
/// replaced.
@Suite struct RemarkAndRecordTests {
    static func run(_ fixture: String) throws -> (Model, PassManager.Report) {
        var model = try ModelReader.read(path: TestPaths.fixture(fixture))
        let report = try PassManager(passes: BuiltinPasses.all).run(on: &model)
        return (model, report)
    }

    /// A BN on the graph input before a padded Conv: fold-batchnorm says
    /// `NoFoldableProducer`, fold-batchnorm-forward says the Conv pads. Both
    /// stay in the log; the verdict is the informative one, keyed by the
    /// BN's identity.
    @Test func theVerdictIsTheMostInformativeMissAndTheLogKeepsBoth() throws {
        let (model, report) = try Self.run("skip_bn_conv_pad.onnx")
        let graph = try #require(model.graph)
        let bn = try #require(graph.nodeIDs.first { graph[$0].isOp("BatchNormalization") })
        let about = report.log.filter { $0.nodeID == bn }
        #expect(Set(about.map(\.reason)) == ["NoFoldableProducer", "PaddingBreaksForwardFold"])
        let verdicts = report.remarks.filter { $0.nodeID == bn }
        #expect(verdicts.map(\.reason) == ["PaddingBreaksForwardFold"])
        #expect(verdicts.first?.pass == "fold-batchnorm-forward")
        #expect(verdicts.first?.scope == [])
    }

    /// A more specific backward reason wins over the forward pass's.
    @Test func aSpecificBackwardReasonStays() throws {
        let (_, report) = try Self.run("skip_conv_output_used_twice.onnx")
        let missed = report.remarks.filter { $0.kind == .missed }
        #expect(missed.map(\.reason) == ["ProducerHasOtherUses"])
        #expect(missed.first?.nodeID != nil)
    }

    /// Remarks and records made inside If branches carry the branch's scope.
    @Test func remarksAndRecordsInsideBodiesCarryTheirScope() throws {
        let (_, report) = try Self.run("subgraph_if.onnx")
        let applied = report.remarks.filter { $0.kind == .applied && $0.pass == "fold-batchnorm" }
        #expect(Set(applied.map(\.node)) == ["m_bn", "if/then_branch/t_bn", "if/else_branch/e_bn"])
        for r in applied {
            #expect(r.node == (r.scope + [r.node.split(separator: "/").last.map(String.init) ?? ""]).joined(separator: "/"))
            #expect(r.nodeID != nil)
        }
        #expect(Set(report.records.map(\.path)) == [[], ["if", "then_branch"], ["if", "else_branch"]])
        #expect(Set(report.records.map(\.subject)) == Set(applied.map(\.node)))
        #expect(report.unrecordedPasses.isEmpty)
    }

    /// A record holds the nodes as they were and the op as the fold left
    /// it: for MatMul → Add → BN, the three nodes, and a Gemm reading the
    /// same input; constants on each side by name.
    @Test func aRecordHoldsBothSides() throws {
        let (model, report) = try Self.run("matmul_add_bn.onnx")
        let record = try #require(report.records.first)
        #expect(report.records.count == 1)
        #expect(record.kind == .batchNormIntoProducer)
        #expect(record.before.map(\.opType) == ["MatMul", "Add", "BatchNormalization"])
        #expect(record.after.opType == "Gemm")
        #expect(record.after.inputs.first == record.input)
        #expect(record.after.outputs.first == record.output)
        #expect(record.unresolved.isEmpty)
        #expect(Set(record.beforeConstants.keys) == Set(record.before.flatMap(\.inputs).filter {
            $0 != record.input && !record.before.flatMap(\.outputs).contains($0) }))
        #expect(Set(record.afterConstants.keys) == Set(record.after.inputs.dropFirst()))
        #expect(model.graph?.nodes.first == record.after)
    }
}

/// The pattern API on a small rewrite of its own: `Add(x, 0)` → `x`.
@Suite struct RewritePatternTests {
    struct RemoveAddOfZero: RewritePattern {
        let name = "remove-add-zero"
        let summary = "test pattern"
        let rootOps: Set<String> = ["Add"]
        func matchAndRewrite(_ id: NodeID, rewriter: inout Rewriter) throws -> MatchResult {
            let node = rewriter[id]
            guard case .success(let (zero, _)) = rewriter.constant(named: node.inputs[1]) else { return .notCandidate }
            guard try zero.doubles().allSatisfy({ $0 == 0 }) else { return .notMatched(reason: "NotZero", message: "adds a non-zero constant") }
            rewriter.replaceAllUses(of: node.outputs[0], with: node.inputs[0])
            rewriter.erase([id])
            return .applied(reason: "AddOfZeroRemoved", message: "removed")
        }
    }

    @Test func matchesRewritesAndExplains() throws {
        let graph = Graph(name: "g", nodes: [
            Node(opType: "Add", inputs: ["x", "zero"], outputs: ["a"], name: "add_zero"),
            Node(opType: "Add", inputs: ["a", "one"], outputs: ["b"], name: "add_one"),
            Node(opType: "Add", inputs: ["b", "x"], outputs: ["c"], name: "add_x"),
            Node(opType: "Relu", inputs: ["c"], outputs: ["y"], name: "relu"),
        ], inputs: [valueInfo("x", .float, dims: [2])], outputs: [valueInfo("y", .float, dims: [2])],
           initializers: [makeTensor("zero", .float, dims: [2], values: [0, 0]), makeTensor("one", .float, dims: [2], values: [1, 1])])
        var model = Model(irVersion: 8, opsetImports: [OperatorSetID(domain: "", version: 17)], graph: graph)
        let report = try PassManager(passes: [RemoveAddOfZero()]).run(on: &model)
        let g = try #require(model.graph)
        #expect(g.nodes.map(\.name) == ["add_one", "add_x", "relu"])
        #expect(g.nodes[0].inputs == ["x", "one"])
        // The erased node's constant went with it; the other stayed.
        #expect(g.initializers.map(\.name) == ["one"])
        // One applied, one missed with its reason, nothing for the Add of a non-constant.
        #expect(report.remarks.map(\.reason) == ["AddOfZeroRemoved", "NotZero"])
        #expect(report.remarks.map(\.node) == ["add_zero", "add_one"])
        #expect(report.remarks.map(\.nodeID) == [NodeID(0), NodeID(1)])
        // No record: the manager says so.
        #expect(report.unrecordedPasses == ["remove-add-zero"])
    }
}

/// Every record a pattern hands over reaches the report (none is dropped).
@Suite struct PatternRecordTests {
    /// Renames nothing and records the Conv → BN pair twice, at the root BN.
    struct RecordTwice: RewritePattern {
        let name = "record-twice"
        let summary = "test pattern"
        let rootOps: Set<String> = ["BatchNormalization"]
        func matchAndRewrite(_ id: NodeID, rewriter: inout Rewriter) throws -> MatchResult {
            guard rewriter[id].docString != "seen",
                  let conv = rewriter.value(named: rewriter[id].inputs[0]).producer?.node else { return .notCandidate }
            for _ in 0..<2 {
                var record = RewriteRecord(pass: name, reason: "Recorded", kind: .batchNormIntoProducer, subject: id,
                                           op: conv, replaced: [conv, id], in: rewriter.graph, context: rewriter.context)
                record.finish(replacement: conv, in: rewriter.graph, context: rewriter.context)
                rewriter.record(record)
            }
            rewriter.updateNode(id) { $0.docString = "seen" }   // a change, so the driver counts an application
            return .applied(reason: "Recorded", message: "recorded twice")
        }
    }

    @Test func everyRecordIsKept() throws {
        var model = try ModelReader.read(path: TestPaths.fixture("conv2d_bn.onnx"))
        let report = try PassManager(passes: [RecordTwice()]).run(on: &model)
        #expect(report.records.count == 2)
        #expect(report.remarks.filter { $0.kind == .applied }.count == 1)
        #expect(report.records.allSatisfy { $0.pass == "record-twice" && $0.before.map(\.opType) == ["Conv", "BatchNormalization"] })
        #expect(report.unrecordedPasses.isEmpty)
    }
}

/// A pattern whose result matches it again is stopped with an error naming it.
@Suite struct NonConvergingPatternTests {
    struct AlwaysApplies: RewritePattern {
        let name = "always-applies"
        let summary = "test pattern"
        let rootOps: Set<String> = ["BatchNormalization"]
        func matchAndRewrite(_ id: NodeID, rewriter: inout Rewriter) throws -> MatchResult {
            rewriter.updateNode(id) { $0.docString = ($0.docString ?? "") + "." }
            return .applied(reason: "Again", message: "again")
        }
    }

    @Test func isStoppedWithAPassError() throws {
        var model = try ModelReader.read(path: TestPaths.fixture("conv2d_bn.onnx"))
        #expect {
            _ = try PassManager(passes: [AlwaysApplies()]).run(on: &model)
        } throws: { error in
            (error as? PassError).map { $0.pass == "always-applies" && $0.message.contains("did not converge: more than 4096 rewrites") } ?? false
        }
    }
}

/// The manager does not re-run a pass on the graph it last left: a pass is
/// a function of the graph, so it would change nothing and say the same.
@Suite struct PassSkippingTests {
    final class Counter: @unchecked Sendable { var runs = 0 }
    struct Counting: GraphPass {
        let name = "count-runs"
        let summary = "test pass"
        let counter: Counter
        func run(on graph: inout Graph, context: inout PassContext) throws -> PassResult {
            counter.runs += 1
            return PassResult(modified: false)
        }
    }

    @Test func aPassRunsAgainOnlyAfterAChange() throws {
        var model = try ModelReader.read(path: TestPaths.fixture("skip_conv_output_used_twice.onnx"))
        let counter = Counter()
        let report = try PassManager(passes: [FoldBatchNorm(), Counting(counter: counter)]).run(on: &model)
        // Nothing folds: one round, each pass once, and the miss is reported.
        #expect(report.iterations == 1)
        #expect(counter.runs == 1)
        #expect(report.remarks.map(\.reason) == ["ProducerHasOtherUses"])

        var folding = try ModelReader.read(path: TestPaths.fixture("conv2d_bn.onnx"))
        let counted = Counter()
        let folded = try PassManager(passes: [FoldBatchNorm(), Counting(counter: counted)]).run(on: &folding)
        // Round 2 finds the graph as each pass left it in round 1: neither runs again.
        #expect(folded.iterations == 2)
        #expect(counted.runs == 1)
        #expect(folded.remarks.map(\.reason) == ["ConvBatchNormFolded"])
    }
}
