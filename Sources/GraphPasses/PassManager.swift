import ONNXGraph

/// Runs a pipeline of passes over a model's main graph until nothing changes.
///
/// Folds enable other folds (BN → BN chains, a Mul exposing a Conv), so the
/// whole list is repeated until a round changes nothing, up to
/// `maxIterations` rounds. `applied` remarks are kept from every round;
/// `missed` remarks only from the last, which describe the final graph —
/// a candidate missed in round one and folded in round two is not reported
/// as missed.
public struct PassManager {
    public var passes: [any GraphPass]
    /// Upper bound on rounds, in case two passes undo each other.
    public var maxIterations: Int

    public init(passes: [any GraphPass], maxIterations: Int = 8) {
        self.passes = passes
        self.maxIterations = maxIterations
    }

    /// The outcome of a pipeline run.
    public struct Report: Sendable {
        public var remarks: [Remark]
        /// Rounds run (the last one changed nothing unless the cap was hit).
        public var iterations: Int
        /// True if the cap stopped the pipeline before a fixed point.
        public var hitIterationCap: Bool
    }

    /// Runs the passes on `model.graph`.
    /// - Throws: ``PassError`` from a pass; the error names the pass.
    public func run(on model: inout Model) throws -> Report {
        guard var graph = model.graph else { return Report(remarks: [], iterations: 0, hitIterationCap: false) }
        // Take the graph out of the model while passes run, so that tensors a
        // pass replaces are released at once instead of living on in `model`.
        model.graph = nil
        defer { model.graph = graph }
        var applied: [Remark] = []
        var lastMissed: [Remark] = []
        var iterations = 0
        var changed = true
        while changed && iterations < maxIterations {
            changed = false
            iterations += 1
            var context = PassContext(irVersion: model.irVersion ?? 0, opsetImports: model.opsetImports)
            for pass in passes {
                do {
                    let result = try pass.run(on: &graph, context: &context)
                    changed = changed || result.modified
                } catch let error as PassError {
                    throw error
                } catch {
                    throw PassError(pass: pass.name, "pass \(pass.name) failed: \(error)")
                }
            }
            applied += context.remarks.filter { $0.kind == .applied }
            lastMissed = context.remarks.filter { $0.kind == .missed }
        }
        return Report(remarks: applied + lastMissed, iterations: iterations, hitIterationCap: changed)
    }
}

/// The passes bnfold ships, by name.
public enum BuiltinPasses {
    /// Every built-in pass, in the default pipeline order: a BN folds into
    /// the op before it first (the usual case, and it keeps the following
    /// op's padding irrelevant); a decomposed BN (Mul/Add) next; a BN with
    /// nothing before it into the op after it last. Each fold can expose
    /// another (Conv → Mul → Add → BN), which the manager's next round finds.
    public static var all: [any GraphPass] { [FoldBatchNorm(), FoldAffineIntoProducer(), FoldBatchNormForward()] }

    /// The pass called `name`, if there is one.
    public static func named(_ name: String) -> (any GraphPass)? {
        all.first { $0.name == name }
    }
}
