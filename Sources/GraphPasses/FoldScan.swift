import ONNXGraph

/// The scan every fold pass runs: visit candidate nodes in order, fold the
/// first that folds, and start again — a fold removes nodes, so indices
/// move, and it may make an earlier candidate foldable.
///
/// Each candidate that does not fold gets one `missed` remark per run: the
/// misses of a scan that a fold interrupted are dropped and decided again.
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
    var decided: Set<Int> = []  // given a missed remark this scan (by index; stable until a fold)
    var index = 0
    while index < graph.nodes.count {
        guard !decided.contains(index), isCandidate(graph, index) else { index += 1; continue }
        let label = graph.nodes[index].displayName(index: index)
        switch fold(&graph, index) {
        case .failure(let miss):
            recordMiss(&context, Remark(kind: .missed, pass: pass, reason: miss.reason.rawValue, node: label,
                                        message: miss.message))
            decided.insert(index)
            index += 1
        case .success(let (reason, message)):
            context.remark(Remark(kind: .applied, pass: pass, reason: reason.rawValue, node: label, message: message))
            modified = true
            decided = []
            index = 0
            context.dropMissedRemarks(pass: pass)
        }
    }
    return modified
}
