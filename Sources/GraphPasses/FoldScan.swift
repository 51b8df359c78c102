import ONNXGraph

/// The driver every fold pass runs: a worklist of candidate nodes, taken
/// lowest ``NodeID`` first (file order for a read model), each matched and,
/// when it matches, rewritten. A rewrite re-queues what it could have made
/// foldable — the nodes its edits touched (``Graph/recordingTouchedNodes(_:)``),
/// the producers of their inputs and the readers of their outputs — so the
/// work is proportional to the folds and their neighbourhoods, not to the
/// graph per fold.
///
/// (Its first form restarted from the first node after every fold, with the
/// index rebuilt per edit: 1,000 Conv → BN took 33 s. Its second swept the
/// graph until a sweep folded nothing, over positions that every removal
/// renumbered: still quadratic, ~33 s for 4,000 blocks.)
///
/// A miss is provisional until the end: the misses decided before the last
/// fold are matched once more on the final graph (a fold can reach further
/// than one neighbour, e.g. MatMul → Add → BN), and the driver goes on until
/// every miss was decided after the last fold. Each candidate that does not
/// fold then gets exactly one `missed` remark, emitted in ID order after the
/// `applied` ones (emitted as they happen), the order the sweeping driver
/// had.
///
/// ``RewritePattern``s run on the same driver (``runWorklist``); the fold
/// passes use it through ``foldEachCandidate``.
///
/// - Parameters:
///   - isCandidate: whether a node is one this pass looks at.
///   - fold: matches the node and, on success, rewrites the graph and
///     returns the applied reason, message and ``RewriteRecord`` (handed to
///     the context for verification); on failure leaves the graph alone.
/// - Returns: whether anything was folded.
func foldEachCandidate(in graph: inout Graph, context: inout PassContext, pass: String,
                       isCandidate: (Graph, NodeID) -> Bool,
                       fold: (inout Graph, NodeID) -> Result<Folded, FoldMiss>) throws -> Bool {
    try runWorklist(in: &graph, context: &context, pass: pass, seeds: graph.nodeIDs.filter { isCandidate(graph, $0) },
                isCandidate: isCandidate) { g, id in
        switch fold(&g, id) {
        case .success(let folded): .applied(reason: folded.reason.rawValue, message: folded.message, records: [folded.record])
        case .failure(let miss): .missed(reason: miss.reason.rawValue, message: miss.message)
        }
    }
}

/// What one step of the worklist did at a candidate.
enum StepOutcome {
    /// Rewritten (the remark, and the records the step made).
    case applied(reason: String, message: String, records: [RewriteRecord])
    /// Left alone, with a reason (a provisional `missed` remark).
    case missed(reason: String, message: String)
    /// Left alone, no remark: not a candidate after all.
    case skipped
}

/// The worklist driver (see ``foldEachCandidate``): candidates lowest ID
/// first, re-queueing the neighbourhood of whatever a rewrite touched, and
/// misses re-decided until every one was decided after the last rewrite.
///
/// A rewrite that keeps applying (a pattern whose result matches it
/// again) would never end: past ``rewriteLimit(nodes:)`` rewrites in one
/// run the driver throws a ``PassError`` naming the pass, as MLIR's greedy
/// driver reports a failure to converge.
func runWorklist(in graph: inout Graph, context: inout PassContext, pass: String, seeds: [NodeID],
                 isCandidate: (Graph, NodeID) -> Bool,
                 step: (inout Graph, NodeID) throws -> StepOutcome) throws -> Bool {
    let limit = rewriteLimit(nodes: graph.nodeCount)
    var queue = NodeQueue()
    for id in seeds { queue.push(id) }
    /// Per missed candidate: its remark and the rewrite count when decided.
    var misses: [NodeID: (remark: Remark, folds: Int)] = [:]
    var folds = 0
    while true {
        while let id = queue.pop() {
            guard graph.contains(id), isCandidate(graph, id) else { misses[id] = nil; continue }
            let label = graph.label(id)
            let (result, touched) = try graph.recordingTouchedNodes { try step(&$0, id) }
            switch result {
            case .skipped:
                misses[id] = nil
            case .missed(let reason, let message):
                misses[id] = (Remark(kind: .missed, pass: pass, reason: reason, node: label,
                                     message: message, nodeID: id), folds)
            case .applied(let reason, let message, let records):
                context.remark(Remark(kind: .applied, pass: pass, reason: reason, node: label,
                                      message: message, nodeID: id))
                for record in records { context.record(record) }
                folds += 1
                if folds > limit {
                    throw PassError(pass: pass, "pass \(pass) did not converge: more than \(limit) rewrites in a graph of \(graph.nodeCount) nodes (a rewrite whose result it matches again?)")
                }
                misses[id] = nil
                for t in touched where graph.contains(t) {
                    for n in graph.neighbourhood(of: t) where isCandidate(graph, n) { queue.push(n) }
                }
            }
        }
        let stale = misses.filter { $0.value.folds < folds }.keys
        if stale.isEmpty { break }
        for id in stale { queue.push(id) }
    }
    for (_, miss) in misses.sorted(by: { $0.key < $1.key }) { context.remark(miss.remark) }
    return folds > 0
}

/// Rewrites one worklist run may make before it is taken not to converge:
/// 16 per node the graph had (a fold removes a node; a pattern may add a
/// few), at least 4,096.
func rewriteLimit(nodes: Int) -> Int {
    let (product, overflow) = nodes.multipliedReportingOverflow(by: 16)
    return overflow ? Int.max : max(4096, product)
}

/// One fold's outcome for ``foldEachCandidate``: the applied remark's
/// reason and sentence, and the record of the rewrite.
struct Folded {
    let reason: FoldReason
    let message: String
    let record: RewriteRecord
}

extension Graph {
    /// A node, the producers of its inputs and the readers of its outputs.
    func neighbourhood(of id: NodeID) -> [NodeID] {
        let node = self[id]
        var result = [id]
        for input in node.inputs where !input.isEmpty {
            if let p = value(named: input).producer { result.append(p.node) }
        }
        for output in node.outputs where !output.isEmpty {
            result += value(named: output).uses.map(\.node)
        }
        return result
    }
}

/// A min-heap of node IDs without duplicates: the worklist, lowest ID first.
struct NodeQueue {
    private var heap: [NodeID] = []
    private var queued: Set<NodeID> = []

    mutating func push(_ id: NodeID) {
        guard queued.insert(id).inserted else { return }
        heap.append(id)
        var i = heap.count - 1
        while i > 0, heap[(i - 1) / 2] > heap[i] { heap.swapAt(i, (i - 1) / 2); i = (i - 1) / 2 }
    }

    mutating func pop() -> NodeID? {
        guard let top = heap.first else { return nil }
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count, heap[l] < heap[m] { m = l }
                if r < heap.count, heap[r] < heap[m] { m = r }
                if m == i { break }
                heap.swapAt(i, m); i = m
            }
        }
        queued.remove(top)
        return top
    }
}
