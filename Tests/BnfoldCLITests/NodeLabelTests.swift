import Foundation
import Testing
import TestSupport
import ONNXGraph

/// Unnamed nodes are reported as `OpType#index` with the index they have in
/// the input file, however the folds move them (issue 13: the fold report
/// said BatchNormalization#3, #5, #7 for the file's #4, #7, #10, and
/// `inspect` joined remarks to the wrong BNs by that label).
@Suite struct NodeLabelTests {
    let model = TestPaths.fixture("unnamed_nodes.onnx")

    @Test func foldReportNumbersNodesAsTheFileDoes() throws {
        let scratch = ScratchDirectory()
        let r = try runBnfold([model, "-o", scratch.file("o.onnx"), "--remarks", "all"])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map(String.init).filter { $0.hasPrefix("    ") }
        #expect(lines == [
            "    applied BatchNormalization#1 [ConvBatchNormFolded]: folded into Conv#0 (4 channels, ε = 1e-05)",
            "    applied BatchNormalization#4 [ConvBatchNormFolded]: folded into Conv#3 (4 channels, ε = 1e-05)",
            "    applied BatchNormalization#7 [ConvBatchNormFolded]: folded into Conv#6 (4 channels, ε = 1e-05)",
            "    kept BatchNormalization#10 [ProducerHasOtherUses]: the output 'c3' of Conv#9 is also used by Add#11, which needs its unnormalized values",
        ])
    }

    @Test func inspectGivesEachBatchNormItsOwnVerdict() throws {
        let r = try runBnfold(["inspect", model])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map(String.init).filter { $0.hasPrefix("  BatchNormalization#") }
        #expect(lines == [
            "  BatchNormalization#1 (after Conv 'Conv#0', before Relu 'Relu#2'): would fold [ConvBatchNormFolded]: folded into Conv#0 (4 channels, ε = 1e-05)",
            "  BatchNormalization#4 (after Conv 'Conv#3', before Relu 'Relu#5'): would fold [ConvBatchNormFolded]: folded into Conv#3 (4 channels, ε = 1e-05)",
            "  BatchNormalization#7 (after Conv 'Conv#6', before Relu 'Relu#8'): would fold [ConvBatchNormFolded]: folded into Conv#6 (4 channels, ε = 1e-05)",
            "  BatchNormalization#10 (after Conv 'Conv#9', before Add 'Add#11'): kept [ProducerHasOtherUses]: the output 'c3' of Conv#9 is also used by Add#11, which needs its unnormalized values",
        ])
    }

    /// The origin travels with the node through edits and copies, is set
    /// for graphs built in memory, and is not part of equality.
    @Test func originSurvivesEditsAndIsNotPartOfTheMessage() {
        var graph = Graph(name: "g", nodes: [Node(opType: "Relu", inputs: ["x"], outputs: ["a"]),
                                             Node(opType: "Relu", inputs: ["a"], outputs: ["b"])])
        #expect(graph.nodes.map { $0.displayName(index: 9) } == ["Relu#0", "Relu#1"])
        graph.nodes.remove(at: 0)
        #expect(graph.nodes[0].displayName(index: 0) == "Relu#1")
        var fresh = Node(opType: "Relu", inputs: ["a"], outputs: ["b"])
        #expect(fresh.displayName(index: 5) == "Relu#5")   // made in memory: its position now
        fresh.origin = NodeOrigin(index: 1)
        #expect(fresh == graph.nodes[0])
        #expect(Node(opType: "Relu", inputs: ["a"], outputs: ["b"]) == graph.nodes[0])
    }
}
