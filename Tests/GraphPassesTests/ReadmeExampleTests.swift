import Foundation
import GraphPasses
import ONNXFile
import ONNXGraph
import Testing
import TestSupport

// The library example from README.md, kept compiling and working here.
// Keep the two in step.

/// A pass is anything with `run(on:context:)`: here, drop Identity nodes by
/// renaming their consumers' inputs (graph outputs keep their names).
struct RemoveIdentity: GraphPass {
    let name = "remove-identity"
    let summary = "Remove Identity nodes whose output is not a graph output."

    func run(on graph: inout Graph, context: inout PassContext) throws -> PassResult {
        var modified = false
        var index = 0
        while index < graph.nodes.count {
            let node = graph.nodes[index]
            guard node.isOp("Identity"), node.inputs.count == 1, node.outputs.count == 1,
                  !graph.value(named: node.outputs[0]).isGraphOutput else { index += 1; continue }
            for use in graph.value(named: node.outputs[0]).uses {
                if let slot = use.input {
                    graph.nodes[use.node].inputs[slot] = node.inputs[0]
                    modified = true
                }
            }
            if graph.value(named: node.outputs[0]).uses.isEmpty {
                graph.nodes.remove(at: index)
                modified = true
            } else {
                index += 1  // still read inside a subgraph: keep it
            }
        }
        return PassResult(modified: modified)
    }
}

@Suite struct ReadmeExampleTests {
    @Test func readmeLibraryExampleRuns() throws {
        let scratch = ScratchDirectory()
        // The README's steps, on a fixture with an Identity added after the Conv.
        var model = try ModelReader.read(path: TestPaths.fixture("conv2d_bn.onnx"))
        var graph = try #require(model.graph)
        let bnIndex = try #require(graph.nodes.firstIndex { $0.opType == "BatchNormalization" })
        let convOutput = graph.nodes[bnIndex].inputs[0]
        graph.nodes.insert(Node(opType: "Identity", inputs: [convOutput], outputs: ["id_out"], name: "id"), at: bnIndex)
        graph.nodes[bnIndex + 1].inputs[0] = "id_out"
        model.graph = graph

        let manager = PassManager(passes: [FoldBatchNorm(), RemoveIdentity()])
        let report = try manager.run(on: &model)
        #expect(report.remarks.filter { $0.kind == .missed }.isEmpty)
        #expect(report.remarks.map(\.reason) == ["ConvBatchNormFolded"])
        // Round 1 removes the Identity (the BN's producer is then the Conv),
        // round 2 folds, round 3 finds nothing to do.
        #expect(report.iterations == 3)
        #expect(model.graph?.nodes.map(\.opType) == ["Conv"])
        _ = try ModelWriter.write(model, to: scratch.file("fused.onnx"))
        #expect(scratch.contents() == ["fused.onnx"])
    }
}
