import ONNXGraph

/// The scan every fold pass runs: visit candidate nodes in order and fold
/// each that folds, resuming right after what the fold rewrote; when a sweep
/// folded anything, sweep again, since a fold may make an earlier candidate
/// foldable. The last sweep folds nothing, so its misses are decided on the
/// final graph.
///
/// (It used to start again from the first node after every fold: with the
/// index rebuilt per edit as well, a chain of n blocks cost far more than
/// n² — 1,000 Conv → BN took 33 s.)
///
/// Each candidate that does not fold gets one `missed` remark per run: the
/// misses of a sweep that folded something are dropped and decided again.
/// Candidates are remembered by their first output's name (unique in a valid
/// graph), which, unlike a position, survives the removals a fold makes.
///
/// - Parameters:
///   - isCandidate: whether node i is one this pass looks at.
///   - fold: matches node i and, on success, rewrites the graph and returns
///     the applied reason and message; on failure leaves the graph alone.
///   - recordMiss: how a miss is recorded (default: appended).
/// - Returns: whether anything was folded.
func foldEachCandidate(in graph: inout Graph, context: inout PassContext, pass: String,
                       isCandidate: (Graph, Int) -> Bool,
                       fold: (inout Graph, Int) -> Result<(FoldReason, String), FoldMiss>,
                       recordMiss: (inout PassContext, Remark) -> Void = { $0.remark($1) }) -> Bool {
    var modified = false
    var foldedThisSweep = true
    while foldedThisSweep {
        foldedThisSweep = false
        var decided: Set<String> = []
        var index = 0
        while index < graph.nodes.count {
            let key = graph.nodes[index].outputs.first ?? ""
            guard !decided.contains(key), isCandidate(graph, index) else { index += 1; continue }
            let label = graph.nodes[index].displayName(index: index)
            let after = graph.nodes.count - index - 1   // nodes after this one
            switch fold(&graph, index) {
            case .failure(let miss):
                recordMiss(&context, Remark(kind: .missed, pass: pass, reason: miss.reason.rawValue, node: label,
                                            message: miss.message))
                decided.insert(key)
                index += 1
            case .success(let (reason, message)):
                context.remark(Remark(kind: .applied, pass: pass, reason: reason.rawValue, node: label, message: message))
                modified = true
                foldedThisSweep = true
                // Folds remove the candidate and what only it read, at or
                // before it (a fold-mul-add also its Add, just after): go on
                // with the first node that came after it.
                index = max(0, graph.nodes.count - after)
            }
        }
        if foldedThisSweep { context.dropMissedRemarks(pass: pass) }
    }
    return modified
}
