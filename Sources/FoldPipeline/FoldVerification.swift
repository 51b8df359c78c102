import Foundation
import Equivalence
import GraphPasses
import ONNXFile
import ONNXGraph
import ReferenceRuntime

/// What a fold's verification ran and found: every folded pair checked on
/// its own (``FoldVerifier/verify(_:irVersion:opsetImports:seed:progress:)``), then
/// the whole model against its float64 run.
public struct FoldVerification: Sendable {
    /// The report's `verification` entry (field names are the JSON contract).
    public struct Summary: Encodable, Sendable {
        public var pairsChecked: Int
        public var pairsFailed: Int
        /// Pairs not checked: over the memory budget, or too large to build an input for.
        public var pairsSkipped = 0
        /// Passes that changed the graph without a ``RewriteRecord``
        /// (``PassManager/Report/unrecordedPasses``): their changes are
        /// verified only when the whole-model check ran.
        public var unrecordedPasses: [String] = []
        /// "passed", "failed", or "skipped: <reason>".
        public var wholeModel: String
        /// The largest error/bound over every check (≤ 1 passes; 0 when nothing ran).
        public var worstRatio: Double
    }
    public var summary: Summary
    /// The first failure, as the rest of the error line; nil when verification passed or was skipped.
    public var failure: String?
    /// One sentence each: what was sampled, skipped or bound for the user.
    public var notes: [String] = []

    public init(skipped reason: String) {
        summary = .init(pairsChecked: 0, pairsFailed: 0, wholeModel: "skipped: \(reason)", worstRatio: 0)
    }

    /// Verifies `folded` against `original`: the pass report's records pair
    /// by pair, and the whole model (skipped when the passes changed nothing).
    ///
    /// `sideBySide` runs the two at once (nil: when the runtime has two or
    /// more workers, ``Parallelism/current``): they are independent, so on
    /// two cores the verification takes about the longer of them instead
    /// of their sum. Each side then runs under half the memory budget in
    /// force, and a side the half refused runs again alone under the whole
    /// budget, so what is checked and what is skipped is what running them
    /// one after the other gives. The status line shows the pairs first,
    /// then the whole model if it is still running.
    public static func run(original: Model, folded: Model, passes report: PassManager.Report,
                           inputs: WholeModelInputs = WholeModelInputs(), sideBySide: Bool? = nil,
                           progress: ((String) -> Void)? = nil) -> FoldVerification {
        var v = FoldVerification(skipped: "")
        let unrecorded = report.unrecordedPasses.isEmpty ? nil
            : "pass\(report.unrecordedPasses.count > 1 ? "es" : "") \(report.unrecordedPasses.map { "'\($0)'" }.joined(separator: ", ")) changed the graph without a rewrite record"
        let modified = report.remarks.contains { $0.kind == .applied } || !report.records.isEmpty || unrecorded != nil
        // Each record holds the constants its fold read, as the fold saw
        // them (a bias fold-constants computed is a constant there), so
        // nothing is re-derived from the original here; the whole-model
        // check runs the true original.
        let expected = report.records.count
        let status = Status(progress)
        let records = report.records
        func checkPairs() -> [FoldVerifier.PairResult] {
            FoldVerifier.verify(records, irVersion: folded.irVersion, opsetImports: folded.opsetImports,
                                progress: progress.map { _ in { status.pair(FoldVerification.pairStatus($0, of: expected, $1)) } })
        }
        func checkWhole() -> FoldVerifier.WholeModel {
            FoldVerifier.verifyWholeModel(original: original, folded: folded, shapes: inputs.shapes, given: inputs.given,
                                          progress: progress.map { _ in { status.whole(FoldVerification.wholeModelStatus($0)) } })
        }
        var pairs: [FoldVerifier.PairResult]
        var whole: FoldVerifier.WholeModel? = nil
        let together = modified && !records.isEmpty && (sideBySide ?? (Parallelism.current >= 2))
            && FoldVerifier.wholeModelSkipReason(original: original) == nil
        if together {
            let half = MemoryBudget.inForce.map { MemoryBudget(bytes: $0.bytes / 2) }
            let threads = Parallelism.threadOverride
            let done = DispatchGroup()
            let box = Unchecked((original, folded, inputs))
            let result = ResultBox()
            let cut = DispatchSemaphore(value: 0)
            // The second thread runs the whole model, then helps with the
            // pairs that are left; this one cuts the pairs out (while the
            // whole model runs) and works on them.
            DispatchQueue.global().async(group: done) {
                let (original, folded, inputs) = box.value
                MemoryBudget.$inForce.withValue(half) {
                    Parallelism.$threadOverride.withValue(threads) {
                        result.whole = FoldVerifier.verifyWholeModel(
                            original: original, folded: folded, shapes: inputs.shapes, given: inputs.given,
                            progress: status.shows ? { status.whole(FoldVerification.wholeModelStatus($0)) } : nil)
                        cut.wait()
                        result.pairRun?.work()
                    }
                }
            }
            let pairRun = FoldVerifier.PairRun(records, irVersion: folded.irVersion, opsetImports: folded.opsetImports,
                                               progress: progress.map { _ in { status.pair(FoldVerification.pairStatus($0, of: expected, $1)) } })
            result.pairRun = pairRun
            cut.signal()
            MemoryBudget.$inForce.withValue(half) { pairRun.work() }
            status.pairsDone()
            done.wait()
            pairs = pairRun.results
            whole = result.whole
            // What the halves refused, alone under the whole budget.
            if case .skipped(let reason)? = whole, reason.hasPrefix("cannot run") { whole = checkWhole() }
            for i in pairs.indices where pairs[i].skipped?.hasPrefix("running it") == true {
                pairs[i] = FoldVerifier.verify([records[i]], irVersion: folded.irVersion, opsetImports: folded.opsetImports,
                                               seed: UInt64(i))[0]
            }
        } else {
            pairs = checkPairs()
            status.pairsDone()
        }
        let skipped = pairs.filter { $0.skipped != nil }
        v.summary.pairsChecked = pairs.count - skipped.count
        v.summary.pairsFailed = pairs.filter(\.failed).count
        v.summary.pairsSkipped = skipped.count
        v.summary.unrecordedPasses = report.unrecordedPasses
        if let first = skipped.first {
            v.notes.append("\(skipped.count) folded pair(s) were not checked (\(first.label): \(first.skipped ?? "")"
                + (skipped.count > 1 ? "; and \(skipped.count - 1) more" : "") + ")")
        }
        var worst = pairs.filter { $0.skipped == nil }.map(\.ratio).max() ?? 0
        let sampled = pairs.filter { $0.channelsChecked < $0.channels }
        if !sampled.isEmpty {
            v.notes.append("\(sampled.count) large folded pair(s) were checked on a sample of their output channels ("
                + sampled.map { "\($0.op): \($0.channelsChecked) of \($0.channels)" }.joined(separator: ", ") + ")")
        }
        if let bad = pairs.first(where: \.failed) {
            v.failure = "\(bad.failureDescription)\(pairs.count > 1 ? " (\(v.summary.pairsFailed) of \(pairs.count) pairs failed)" : "")"
        }
        if !modified {
            v.summary.wholeModel = "skipped: nothing was folded"
        } else {
            if let bindings = inputs.bindings(original) { v.notes.append("the whole-model check ran on \(bindings)") }
            switch whole ?? checkWhole() {
            case .passed(let report):
                v.summary.wholeModel = "passed"
                worst = max(worst, report.outputs.map(\.ratio).max() ?? 0)
            case .failed(let report):
                v.summary.wholeModel = "failed"
                worst = max(worst, report.outputs.map(\.ratio).max() ?? .infinity)
                if v.failure == nil, let bad = report.outputs.first(where: { !$0.equivalent }) {
                    v.failure = "whole model, output '\(bad.name)': " + (bad.problem ?? String(
                        format: "error %.3g against float64 exceeds the bound %.3g (ratio %.3g; the original's own error %.3g, scale %.3g)",
                        bad.error ?? .nan, bad.bound ?? .nan, bad.ratio, bad.referenceNoise ?? .nan, bad.scale ?? .nan))
                        + (unrecorded.map { "; \($0)" } ?? "")
                }
                if let unrecorded { v.notes.append("\(unrecorded): only the whole-model check covers it") }
            case .skipped(let reason):
                v.summary.wholeModel = "skipped: \(reason)"
                if let unrecorded { v.notes.append("\(unrecorded), and the whole-model check did not run: those changes are not verified") }
            }
        }
        v.summary.worstRatio = worst
        return v
    }
}

/// The status line of a verification whose two checks may run at once:
/// pair lines as they come, whole-model lines once the pairs are done (one
/// line at a time, from either thread).
private final class Status: @unchecked Sendable {
    private let show: ((String) -> Void)?
    private let lock = NSLock()
    private var pairsFinished = false
    init(_ show: ((String) -> Void)?) { self.show = show }
    /// False when nobody watches: runs then skip their per-node reports.
    var shows: Bool { show != nil }
    func pair(_ line: String) { lock.withLock { show?(line) } }
    func whole(_ line: String) { lock.withLock { if pairsFinished { show?(line) } } }
    func pairsDone() { lock.withLock { pairsFinished = true } }
}

/// A value handed to the whole-model thread, which is its only user while it runs.
private struct Unchecked<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

/// The whole-model thread's answer (written before the group is left, read after it is waited for).
private final class ResultBox: @unchecked Sendable {
    var whole: FoldVerifier.WholeModel?
    /// Set before the semaphore the whole-model thread waits on is signalled.
    var pairRun: FoldVerifier.PairRun?
}

extension FoldVerification {
    /// `bnfold: verifying pair 3/20 (bn3 folded into conv3)`; the count is
    /// the main graph's pairs (bodies' pairs go past it).
    public static func pairStatus(_ pair: Int, of total: Int, _ label: String) -> String {
        "bnfold: verifying pair \(pair)/\(max(total, pair)) (\(label))"
    }

    /// `bnfold: verifying the whole model, A in float64: node 40/176`.
    public static func wholeModelStatus(_ p: CheckProgress) -> String {
        "bnfold: verifying the whole model, \(p.run.rawValue): node \(p.node)/\(p.nodes)"
    }
}

/// What the whole-model check is fed: `--input-shape` bindings and
/// `--input` tensors (else symbolic dimensions are 1 and inputs random).
public struct WholeModelInputs: Sendable {
    /// Dimension bindings by input name (`--input-shape`).
    public var shapes: [String: [Int]] = [:]
    /// Tensors by input name (`--input`).
    public var given: [String: RuntimeTensor] = [:]

    public init() {}
    /// Bindings the model rules out are input errors naming `path` now, not a skipped check later.
    public init(shapes: [String: [Int]], given: [String: RuntimeTensor], model: Model, path: String) throws {
        self.shapes = shapes
        self.given = given
        guard !shapes.isEmpty || !given.isEmpty else { return }
        do {
            _ = try EquivalenceChecker(a: model, b: model).inputSpecs(shapes: shapes)
        } catch let error as EquivalenceError {
            throw ModelFileError(file: path, error.message)
        }
    }

    /// "input 'X' [2, 3, 64, 64] (N = 2 from --input-shape), …" for every
    /// input with a symbolic or unknown dimension, or given as a file; nil
    /// when the model has none (nothing was chosen for the user).
    public func bindings(_ model: Model) -> String? {
        let parts = describedInputs(model).map(\.text)
        return parts.isEmpty ? nil : parts.joined(separator: "; ")
    }

    /// The inputs whose symbolic or unknown dimensions nothing bound (each
    /// became 1): a check on them may not exercise the shapes the model is
    /// deployed with — what `check --strict` refuses.
    public func unboundInputs(_ model: Model) -> [String] {
        describedInputs(model).filter(\.unbound).map(\.name)
    }

    private func describedInputs(_ model: Model) -> [(name: String, text: String, unbound: Bool)] {
        guard let graph = model.graph, let specs = try? InputSpec.inputs(of: graph, shapes: shapes) else { return [] }
        var parts: [(name: String, text: String, unbound: Bool)] = []
        for spec in specs {
            if given[spec.name] != nil { parts.append((spec.name, "input '\(spec.name)' from --input", false)); continue }
            let dims = graph.inputs.first { $0.name == spec.name }?.type?.tensorType?.shape?.dims ?? []
            let free = dims.enumerated().compactMap { i, d -> String? in
                if case .value? = d.value { return nil }
                let label = if case .param(let p)? = d.value { p } else { "axis \(i)" }
                return "\(label) = \(spec.shape[i])"
            }
            guard !free.isEmpty else { continue }
            let bound = shapes[spec.name] != nil
            let source = bound ? ", from --input-shape" : ": unbound; --input-shape sets it"
            parts.append((spec.name, "input '\(spec.name)' \(spec.shape) (\(free.joined(separator: ", "))\(source))", !bound))
        }
        return parts
    }
}

