// README's example pass, word for word as in README.md and the DocC article
// (ReadmeExampleTests checks the three are the same and runs this one).

import GraphPasses
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
