// example-pass: times README's example pass (RemoveIdentityAndDropout,
// kept identical to README.md, the DocC article and
// Tests/GraphPassesTests/ReadmeExampleTests.swift by a test) on a model, for
// `make bench` (issue 13: the pass users copy must be linear).
//
//   ExamplePass IN.onnx
//
// Reads IN, runs the pass alone through PassManager, and prints one JSON
// line: {"nodes_before": …, "nodes_after": …, "pass_seconds": …}. Exit 0 on
// success, 2 on bad usage or an unreadable model.

import Foundation
import GraphPasses
import ONNXFile
import ONNXGraph

/// Removes Identity nodes and inference Dropout nodes by pointing their
/// readers at their input (graph outputs keep their names).
struct RemoveIdentityAndDropout: GraphPass {
    let name = "remove-identity-dropout"
    let summary = "Remove Identity nodes and inference Dropout nodes whose output is not a graph output."

    func run(on graph: inout Graph, context: inout PassContext) throws -> PassResult {
        var modified = false
        // A NodeID names the same node through every edit (erasing a node
        // moves no other), so the list taken here stays valid as we remove.
        for id in graph.nodeIDs(ofType: ["Identity", "Dropout"]) {
            let node = graph[id]
            let passThrough = node.isOp("Identity")
                || (node.inputs.count == 1
                    && node.outputs.dropFirst().allSatisfy { $0.isEmpty || graph.value(named: $0).isDead })
            guard passThrough, node.inputs.count >= 1, let output = node.outputs.first,
                  !graph.value(named: output).isGraphOutput else { continue }
            // The edits keep the use/def index current: each costs what it touches.
            graph.replaceAllUses(of: output, with: node.inputs[0])
            modified = true
            if graph.value(named: output).uses.isEmpty {
                let label = graph.label(id)
                graph.removeNodes([id])
                context.remark(Remark(kind: .applied, pass: name, reason: "PassThroughRemoved", node: label,
                                      message: "\(node.opType) removed; its readers now read '\(node.inputs[0])'"))
            }  // else still read inside a subgraph: keep it
        }
        return PassResult(modified: modified)
    }
}

let arguments = CommandLine.arguments.dropFirst()
guard arguments.count == 1, let path = arguments.first else {
    FileHandle.standardError.write(Data("usage: ExamplePass IN.onnx\n".utf8))
    exit(2)
}
do {
    var model = try ModelReader.read(path: path)
    let before = model.graph?.nodeCount ?? 0
    let clock = ContinuousClock()
    let start = clock.now
    _ = try PassManager(passes: [RemoveIdentityAndDropout()]).run(on: &model)
    let elapsed = clock.now - start
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    print("{\"nodes_before\": \(before), \"nodes_after\": \(model.graph?.nodeCount ?? 0), \"pass_seconds\": \(seconds)}")
} catch {
    FileHandle.standardError.write(Data("ExamplePass: \(path): \(error)\n".utf8))
    exit(2)
}
