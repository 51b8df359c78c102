// README's example pass, word for word as in README.md and the DocC article
// (ReadmeExampleTests checks the three are the same and runs this one).

import GraphPasses
import ONNXGraph

/// Removes Identity nodes and inference Dropout nodes by pointing their
/// readers at their input (graph outputs keep their names).
struct RemoveIdentityAndDropout: RewritePattern {
    let name = "remove-identity-dropout"
    let summary = "Remove Identity nodes and inference Dropout nodes whose output is not a graph output."
    let rootOps: Set<String> = ["Identity", "Dropout"]

    func matchAndRewrite(_ id: NodeID, rewriter: inout Rewriter) -> MatchResult {
        // Match: read only, and say why when it fails.
        let node = rewriter[id]
        guard node.inputs.count == 1, let output = node.outputs.first, !output.isEmpty else {
            return .notMatched(reason: "NotAPassThrough", message: "a \(node.opType) with a training_mode or ratio input")
        }
        if node.outputs.dropFirst().contains(where: { !$0.isEmpty && !rewriter.value(named: $0).isDead }) {
            return .notMatched(reason: "MaskUsed", message: "its mask output is read")
        }
        let uses = rewriter.value(named: output)
        if uses.isGraphOutput {
            return .notMatched(reason: "OutputIsGraphOutput", message: "'\(output)' is a graph output, which keeps its name")
        }
        if uses.uses.contains(where: { $0.input == nil }) {
            return .notMatched(reason: "ReadInsideSubgraph", message: "a subgraph reads '\(output)' by name")
        }
        // Rewrite: each edit costs what it touches; the driver looks again
        // at the neighbours, and erasing takes along what only this node read.
        rewriter.replaceAllUses(of: output, with: node.inputs[0])
        rewriter.erase([id])
        return .applied(reason: "PassThroughRemoved", message: "\(node.opType) removed; its readers now read '\(node.inputs[0])'")
    }
}
