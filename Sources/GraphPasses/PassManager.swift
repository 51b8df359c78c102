import ONNXGraph

/// Runs a pipeline of passes over a model's main graph and every
/// If/Loop/Scan body inside it, until nothing changes.
///
/// Folds enable other folds (BN → BN chains, a Mul exposing a Conv, a
/// computed bias becoming a constant), so the whole list is repeated until
/// a round changes nothing, up to `maxIterations` rounds. `applied` remarks
/// are kept from every round; `missed` remarks only from the last, which
/// describe the final graph — a candidate missed in round one and folded in
/// round two is not reported as missed.
///
/// Subgraphs: each pass runs on the main graph, then on each subgraph
/// (attributes `g` and `graphs`, recursively, outer before inner) before
/// the next pass runs. A pass sees one graph at a time; its
/// ``PassContext/scope`` carries the graphs around it, so that outer
/// constants count as constants inside, and remarks made there name the
/// node by its path (`If_0/then_branch/bn1`). A pass inside a subgraph
/// edits only that subgraph; when it stops reading an outer value, the
/// manager removes that value from the outer graph if it is now dead
/// (`Graph/removeDeadValues(_:keeping:)`, so only what the rewrite made
/// dead). Outer rewrites never remove a value a subgraph still reads: the
/// use/def index counts reads from inside subgraphs.
///
/// Values that `training_info` reads (its graphs' outer names and the
/// initializers its bindings assign) are pinned: never removed, never
/// rewritten in place.
public struct PassManager {
    public var passes: [any GraphPass]
    /// Upper bound on rounds, in case two passes undo each other.
    public var maxIterations: Int
    /// Treat initializers that are also main-graph inputs as constants even
    /// for IR ≥ 4 (``PassContext/assumeConstantInputs``,
    /// `--assume-constant-inputs`).
    public var assumeConstantInputs: Bool

    /// Names of passes to skip (`--disable`): a pipeline built from
    /// ``BuiltinPasses/all`` minus one pass, without rebuilding the list.
    public var disabled: Set<String>

    public init(passes: [any GraphPass], maxIterations: Int = 8, assumeConstantInputs: Bool = false,
                disabled: Set<String> = []) {
        self.passes = passes
        self.maxIterations = maxIterations
        self.assumeConstantInputs = assumeConstantInputs
        self.disabled = disabled
    }

    /// The passes that run, in order: ``passes`` without the ``disabled`` ones.
    public var activePasses: [any GraphPass] { passes.filter { !disabled.contains($0.name) } }

    /// The outcome of a pipeline run.
    public struct Report: Sendable {
        /// The verdicts: `applied` remarks from every round, then the last
        /// round's `missed` remarks with one per node — where several
        /// passes missed the same node (same ``Remark/scope`` and
        /// ``Remark/nodeID``), the first that says more than
        /// `NoFoldableProducer` (``FoldReason/isUninformative``), else the first.
        public var remarks: [Remark]
        /// Every remark of every round, in the order made (append-only):
        /// what ``remarks`` was decided from.
        public var log: [Remark] = []
        /// What every rewrite did, in the order they happened, from every
        /// round and every graph (``RewriteRecord``): what the fold's
        /// verification checks.
        public var records: [RewriteRecord] = []
        /// Passes that changed a graph without handing over a record (and
        /// are not ``GraphPass/isExactByConstruction``), in order of first
        /// change: only a whole-model check covers what they did.
        public var unrecordedPasses: [String] = []
        /// Rounds run (the last one changed nothing unless the cap was hit).
        public var iterations: Int
        /// True if the cap stopped the pipeline before a fixed point.
        public var hitIterationCap: Bool
    }

    /// Runs the passes on `model.graph` and the subgraphs inside it.
    /// - Throws: ``PassError`` from a pass; the error names the pass.
    public func run(on model: inout Model) throws -> Report {
        guard var graph = model.graph else { return Report(remarks: [], iterations: 0, hitIterationCap: false) }
        // Take the graph out of the model while passes run, so that tensors a
        // pass replaces are released at once instead of living on in `model`.
        model.graph = nil
        defer { model.graph = graph }
        let context = PassContext(irVersion: model.irVersion ?? 0, opsetImports: model.opsetImports,
                                  assumeConstantInputs: assumeConstantInputs,
                                  scope: GraphScope(pinnedNames: Self.namesReadByTrainingInfo(model.trainingInfo)))
        var applied: [Remark] = []
        var lastMissed: [Remark] = []
        var log = ChangeLog()
        /// Per pass (by position): the graph's revision after its last run, and that run's misses.
        var lastRun: [Int: (revision: UInt64, missed: [Remark])] = [:]
        var iterations = 0
        var changed = true
        while changed && iterations < maxIterations {
            changed = false
            iterations += 1
            var round: [Remark] = []
            var made: [Remark] = []
            for (k, pass) in activePasses.enumerated() {
                // A pass is a function of the graph: given the graph it last
                // left (nothing changed it since, `Graph.revision` says),
                // it would change nothing and say what it said then.
                if let seen = lastRun[k], seen.revision == graph.revision {
                    round += seen.missed
                    continue
                }
                var mine: [Remark] = []
                if try run(pass, on: &graph, context: context, remarks: &mine, log: &log) {
                    changed = true
                    try Self.checkValid(graph, of: model, after: pass)
                }
                lastRun[k] = (graph.revision, mine.filter { $0.kind == .missed })
                round += mine
                made += mine
            }
            log.remarks += made
            applied += made.filter { $0.kind == .applied }
            lastMissed = round.filter { $0.kind == .missed }
        }
        return Report(remarks: applied + Self.verdicts(lastMissed), log: log.remarks, records: log.records,
                      unrecordedPasses: log.unrecordedPasses, iterations: iterations, hitIterationCap: changed)
    }

    /// One missed remark per node (see ``Report/remarks``), in the order made.
    static func verdicts(_ missed: [Remark]) -> [Remark] {
        struct Key: Hashable { let scope: [String]; let id: NodeID }
        var chosen: [Key: Int] = [:]
        for (i, r) in missed.enumerated() {
            guard let id = r.nodeID else { continue }
            let key = Key(scope: r.scope, id: id)
            if let j = chosen[key] {
                let says = { (r: Remark) in !(FoldReason(rawValue: r.reason)?.isUninformative ?? false) }
                if !says(missed[j]) && says(r) { chosen[key] = i }
            } else {
                chosen[key] = i
            }
        }
        let kept = Set(chosen.values)
        return missed.indices.filter { missed[$0].nodeID == nil || kept.contains($0) }.map { missed[$0] }
    }

    /// Debug builds (and so every test) validate the graph after each pass
    /// that changed it, so a pass that leaves a broken graph is named at
    /// once instead of by whatever reads the result later. Release builds
    /// leave it to the writer, which validates before writing.
    static func checkValid(_ graph: Graph, of model: Model, after pass: any GraphPass) throws {
        #if DEBUG
        var probe = model
        probe.graph = graph
        do {
            try probe.validate()
        } catch let error as ModelValidationError {
            throw PassError(pass: pass.name, "pass \(pass.name) left an invalid graph: \(error.message)")
        }
        #endif
    }

    /// The remarks and records of a run, and the passes that changed a graph without a record.
    struct ChangeLog {
        var remarks: [Remark] = []
        var records: [RewriteRecord] = []
        var unrecordedPasses: [String] = []
    }

    /// Runs `pass` on `graph` (in `context.scope`), then on the subgraphs
    /// inside it, appending to the round's `remarks` (each labelled with
    /// its scope). Returns whether anything changed.
    private func run(_ pass: any GraphPass, on graph: inout Graph, context: PassContext,
                     remarks: inout [Remark], log: inout ChangeLog) throws -> Bool {
        let path = context.scope.path
        var local = context
        local.remarks = []
        local.records = []
        let modified: Bool
        let revision = graph.revision
        do {
            modified = try pass.run(on: &graph, context: &local).modified
        } catch let error as PassError {
            throw error
        } catch {
            throw PassError(pass: pass.name, "pass \(pass.name) failed: \(error)")
        }
        // The graph's revision says whether it changed, whatever the pass
        // reports (a pass may edit and say it did not, to stay out of the
        // fixed point).
        if graph.revision != revision, local.records.isEmpty, !pass.isExactByConstruction,
           !log.unrecordedPasses.contains(pass.name) {
            log.unrecordedPasses.append(pass.name)
        }
        log.records += local.records
        remarks += local.remarks.map { remark in
            var r = remark
            r.scope = path
            r.node = context.scope.qualified(r.node)
            return r
        }
        var changed = modified
        var noLongerRead: Set<String> = []
        for id in graph.nodeIDs where graph[id].holdsSubgraphs {
            var node = graph[id]
            let label = graph.label(id)
            let readBefore = Self.outerNamesRead(by: node)
            var nodeChanged = false
            for a in node.attributes.indices {
                let attributeName = node.attributes[a].name ?? "?"
                if var body = node.attributes[a].g {
                    let inner = context.entering(graph, node: label, attribute: attributeName)
                    if try run(pass, on: &body, context: inner, remarks: &remarks, log: &log) {
                        node.attributes[a].g = body
                        nodeChanged = true
                    }
                }
                for k in node.attributes[a].graphs.indices {
                    var body = node.attributes[a].graphs[k]
                    let inner = context.entering(graph, node: label, attribute: "\(attributeName)[\(k)]")
                    if try run(pass, on: &body, context: inner, remarks: &remarks, log: &log) {
                        node.attributes[a].graphs[k] = body
                        nodeChanged = true
                    }
                }
            }
            if nodeChanged {
                noLongerRead.formUnion(readBefore.subtracting(Self.outerNamesRead(by: node)))
                graph.updateNode(id) { $0 = node }
                changed = true
            }
        }
        if !noLongerRead.isEmpty { graph.removeDeadValues(noLongerRead, context: context) }
        return changed
    }

    /// Names the subgraphs of `node` read from the graphs around them.
    private static func outerNamesRead(by node: Node) -> Set<String> {
        node.subgraphs.reduce(into: Set<String>()) { $0.formUnion($1.capturedNames) }
    }

    /// Main-graph names `training_info` depends on: read by its
    /// initialization and algorithm graphs, or assigned by its bindings.
    static func namesReadByTrainingInfo(_ trainingInfo: [TrainingInfo]) -> Set<String> {
        var names: Set<String> = []
        for info in trainingInfo {
            for g in [info.initialization, info.algorithm].compactMap({ $0 }) {
                names.formUnion(g.capturedNames)
            }
            for pair in info.initializationBinding + info.updateBinding {
                if let key = pair.key { names.insert(key) }
                if let value = pair.value { names.insert(value) }
            }
        }
        return names
    }
}

extension PassContext {
    /// The context for a subgraph of `graph` (this context's graph).
    func entering(_ graph: Graph, node: String, attribute: String) -> PassContext {
        var inner = self
        inner.scope = scope.entering(graph, node: node, attribute: attribute)
        inner.remarks = []
        inner.records = []
        return inner
    }
}

/// The passes bnfold ships, by name.
public enum BuiltinPasses {
    /// Every built-in pass, in the default pipeline order: constants first
    /// (so that weights computed by small subgraphs, behind Identity nodes or
    /// in Constant nodes are plain initializers for the folds); then a BN
    /// folds into the op before it (the usual case, and it keeps the
    /// following op's padding irrelevant); a decomposed BN (Mul/Add) next; a
    /// BN with nothing before it into the op after it last. Each fold can
    /// expose another (Conv → Mul → Add → BN), which the manager's next round
    /// finds.
    public static var all: [any GraphPass] {
        [FoldConstants(), FoldBatchNorm(), FoldAffineIntoProducer(), FoldBatchNormForward()]
    }

    /// The pass called `name`, if there is one.
    public static func named(_ name: String) -> (any GraphPass)? {
        all.first { $0.name == name }
    }
}
