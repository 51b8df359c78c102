import FoldPipeline
import Foundation
import GraphPasses

/// What `bnfold IN -o OUT` did, for people (``text()``) and for scripts
/// (``json()``: the same facts as one JSON object; field names are part of
/// the command-line contract).
struct FoldReport: Encodable {
    struct OpCount: Encodable, Equatable {
        var before: Int
        var after: Int
    }
    struct BatchNormCounts: Encodable {
        var found: Int
        var folded: Int
        var kept: Int
    }
    struct Written: Encodable {
        var modelBytes: Int
        var externalDataFile: String?
        var externalTensors: Int
        var externalDataBytes: Int
        var switchedToExternalData: Bool

        // Written by hand so that a missing data file is `null`, not an absent key.
        enum CodingKeys: String, CodingKey {
            case modelBytes, externalDataFile, externalTensors, externalDataBytes, switchedToExternalData
        }
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(modelBytes, forKey: .modelBytes)
            try c.encode(externalDataFile, forKey: .externalDataFile)
            try c.encode(externalTensors, forKey: .externalTensors)
            try c.encode(externalDataBytes, forKey: .externalDataBytes)
            try c.encode(switchedToExternalData, forKey: .switchedToExternalData)
        }
    }
    /// What verification ran and found (the JSON `verification` object).
    typealias VerificationSummary = FoldVerification.Summary
    struct Seconds: Encodable {
        var read: Double
        var passes: Double
        var verify: Double
        var write: Double
        var total: Double
    }

    var tool = "bnfold"
    var version = BnfoldVersion.string
    var input: String
    var output: String
    var passes: [String]
    var nodesBefore: Int
    var nodesAfter: Int
    var batchnorm: BatchNormCounts
    /// Main-graph node count per operator, before and after.
    var ops: [String: OpCount] = [:]
    var remarks: [Remark]
    var iterations: Int
    var written: Written
    var verification: VerificationSummary
    var seconds: Seconds
    /// Things the user should know about the output (one sentence each).
    var notes: [String] = []

    init(input: String, output: String, passes: [String], nodesBefore: Int, nodesAfter: Int,
         batchNorm: BatchNormCounts, remarks: [Remark], iterations: Int, written: Written, verification: VerificationSummary,
         seconds: Seconds) {
        self.verification = verification
        self.input = input; self.output = output; self.passes = passes
        self.nodesBefore = nodesBefore; self.nodesAfter = nodesAfter; self.batchnorm = batchNorm
        self.remarks = remarks; self.iterations = iterations; self.written = written; self.seconds = seconds
    }

    func json() -> String { reportJSON(self) }

    func text(remarks filter: RemarkFilter = .missed) -> String {
        var out = TerminalLines()
        out.add("bnfold \(version): \(input) -> \(output)")
        out.add("  nodes: \(nodesBefore) -> \(nodesAfter)" + (passes.isEmpty ? " (no passes run)" : ""))
        if let line = opsLine() { out.add(line) }
        out.add("  BatchNormalization: \(batchnorm.found) found, \(batchnorm.folded) folded, \(batchnorm.kept) kept")
        for remark in remarks where filter.includes(remark) {
            out.add("    \(remark.kind == .missed ? "kept" : "applied") \(remark.node) [\(remark.reason)]: \(remark.message)")
        }
        if verification.wholeModel == "skipped: --no-verify" {
            out.add("  verified: no (--no-verify)")
        } else {
            out.add("  verified: \(verification.pairsChecked) folded pair(s) checked, \(verification.pairsFailed) failed"
                    + (verification.pairsSkipped > 0 ? ", \(verification.pairsSkipped) not checked; " : "; ")
                    + "whole model \(verification.wholeModel)"
                    + String(format: " (worst error/bound %.3g)", verification.worstRatio))
        }
        var wrote = "  wrote \(formatBytes(written.modelBytes))"
        if let file = written.externalDataFile {
            wrote += " + \(file) (\(written.externalTensors) tensors, \(formatBytes(written.externalDataBytes)))"
        }
        out.add(wrote)
        for note in notes { out.add("  note: \(note)") }
        out.add(String(format: "  time: %.3f s (read %.3f, passes %.3f, verify %.3f, write %.3f)",
                       seconds.total, seconds.read, seconds.passes, seconds.verify, seconds.write))
        return out.text
    }
}

extension FoldReport {
    /// Both censuses as one table of `OpCount`s.
    static func opCounts(before: [String: Int], after: [String: Int]) -> [String: OpCount] {
        var result: [String: OpCount] = [:]
        for op in Set(before.keys).union(after.keys) {
            result[op] = OpCount(before: before[op] ?? 0, after: after[op] ?? 0)
        }
        return result
    }

    /// `  ops: BatchNormalization 20 -> 0, Mul 2 -> 0 (3 other op types unchanged)`:
    /// only what changed, most-changed first, so a big model stays one line.
    func opsLine() -> String? {
        guard !passes.isEmpty, !ops.isEmpty else { return nil }
        let changed = ops.filter { $0.value.before != $0.value.after }
            .sorted { (abs($0.value.before - $0.value.after), $1.key) > (abs($1.value.before - $1.value.after), $0.key) }
        let unchanged = ops.count - changed.count
        if changed.isEmpty { return "  ops: unchanged (\(unchanged) op type\(unchanged == 1 ? "" : "s"))" }
        var line = "  ops: " + changed.map { "\($0.key) \($0.value.before) -> \($0.value.after)" }.joined(separator: ", ")
        if unchanged > 0 { line += " (\(unchanged) other op type\(unchanged == 1 ? "" : "s") unchanged)" }
        return line
    }
}

func formatBytes(_ n: Int) -> String {
    if n < 1024 { return "\(n) B" }
    if n < 1 << 20 { return String(format: "%.1f KiB", Double(n) / 1024) }
    if n < 1 << 30 { return String(format: "%.1f MiB", Double(n) / 1048576) }
    return String(format: "%.2f GiB", Double(n) / 1073741824)
}

/// A report as one line of JSON: snake_case keys, sorted, infinities and NaN
/// as strings (so the output is always valid JSON). Key names are part of
/// the command-line contract.
func reportJSON<T: Encodable>(_ report: T) -> String {
    let encoder = JSONEncoder()
    encoder.keyEncodingStrategy = .convertToSnakeCase
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
    let data = (try? encoder.encode(report)) ?? Data("{}".utf8)
    return String(decoding: data, as: UTF8.self)
}
