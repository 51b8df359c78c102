import Testing
@testable import GraphPasses
import ONNXGraph
import TestSupport

/// Compares the folded model with a Double evaluation of the original.
///
/// Tolerance, per output element. M is the output of the *unfolded* graph
/// evaluated on magnitudes (|x|, |W|, |b|, and a BN as |s|·(y + |μ|) + |β|):
/// the sum of the magnitudes of every term that makes up the output. Each
/// fold computes its constants in Double and rounds them once into the
/// element type (unit roundoff u: 2^-24 float, 2^-11 float16, 2^-8 bfloat16,
/// 2^-53 double), so after `roundings` folds of the same weights each stored
/// constant is off by at most `roundings·u` relative to its exact folded
/// value (first order). The exact folded op's terms are bounded by M term by
/// term (|W·s| |x| ≤ |s|·|W| |x|, |(b − μ)s + β| ≤ |b s| + |μ s| + |β|, and
/// for a forward fold |b + Σ W·t| ≤ |b| + Σ |W|·(|μ s| + |β|)), so the
/// folded output is off by at most `roundings·u·M`. Both sides are then
/// evaluated in Double, each within `(terms + 10)·2^-53·M`. The bound is
///     2·roundings·u·M + (terms + 10)·2^-51·M + roundings·h·(terms + 1)·(max|x| + 1)
/// where the factor 2 on the rounding term leaves room for the few-ulp
/// Double error in the folded constants themselves, and h is half the
/// spacing of the type's subnormals (below the normal range the relative
/// bound u does not hold; each stored constant is then off by at most h).
func compareWithUnfolded(original: Model, folded: Model, input: [Double], inputShape: [Int],
                         roundings: Int = 1) throws -> FoldComparison {
    let original = try #require(original.graph), folded = try #require(folded.graph)
    let type = try #require(original.inputs.first?.type?.tensorType?.elementType)
    let reference = try DoubleEvaluation(original, input: input, inputShape: inputShape)
    let magnitudes = try DoubleEvaluation(original, input: input, inputShape: inputShape, absolute: true)
    let got = try DoubleEvaluation(folded, input: input, inputShape: inputShape)
    #expect(got.shape == reference.shape)
    let u = unitRoundoff(type), h = subnormalHalfSpacing(type)
    let n = Double(roundings)
    let terms = Double(max(reference.terms, got.terms))
    let largestInput = input.map(\.magnitude).max() ?? 0
    var difference: [Double] = [], bound: [Double] = []
    for (i, m) in magnitudes.values.enumerated() {
        difference.append((got.values[i] - reference.values[i]).magnitude)
        bound.append(2 * n * u * m + (terms + 10) * 0x1p-51 * m + n * h * (terms + 1) * (largestInput + 1))
    }
    return FoldComparison(difference: difference, bound: bound)
}

/// Expects the folded model to match the unfolded one on two inputs.
func expectMatchesUnfolded(original: Model, folded: Model, sketch: ModelSketch, roundings: Int = 1,
                           sourceLocation: SourceLocation = #_sourceLocation) throws {
    for seed: UInt64 in [99, 7] {
        let result = try compareWithUnfolded(original: original, folded: folded, input: sketch.randomInput(seed: seed),
                                             inputShape: sketch.inputShape, roundings: roundings)
        let i = result.worstIndex
        #expect(result.worstRatio <= 1, "output \(i): |diff| \(result.difference[i]) > bound \(result.bound[i])",
                sourceLocation: sourceLocation)
    }
}

/// A remark without its message, for exact comparisons.
struct RemarkKey: Equatable, CustomStringConvertible {
    var kind: Remark.Kind, pass: String, reason: String, node: String
    init(_ kind: Remark.Kind, _ pass: String, _ reason: FoldReason, _ node: String) {
        (self.kind, self.pass, self.reason, self.node) = (kind, pass, reason.rawValue, node)
    }
    init(_ r: Remark) { (kind, pass, reason, node) = (r.kind, r.pass, r.reason, r.node) }
    var description: String { "\(kind) \(pass) \(reason) \(node)" }
}

/// Expects exactly these remarks (kind, pass, reason, node), in order, each with a message.
func expectRemarks(_ report: PassManager.Report, _ expected: [RemarkKey],
                   sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(report.remarks.map(RemarkKey.init) == expected, "\(report.remarks.map(\.message))",
            sourceLocation: sourceLocation)
    #expect(report.remarks.allSatisfy { !$0.message.isEmpty }, sourceLocation: sourceLocation)
    #expect(!report.hitIterationCap, sourceLocation: sourceLocation)
}

/// Runs every built-in pass on `model` and expects the graph unchanged and
/// exactly one remark: `missed`, `reason`, from `pass`, about `node`.
func expectUnchanged(_ model: Model, missed reason: FoldReason, pass: String, node: String,
                     sourceLocation: SourceLocation = #_sourceLocation) throws {
    var folded = model
    let report = try runBuiltins(&folded)
    let unchanged = folded.graph == model.graph  // (not inside #expect: it would print both graphs)
    #expect(unchanged, "the graph changed", sourceLocation: sourceLocation)
    expectRemarks(report, [RemarkKey(.missed, pass, reason, node)], sourceLocation: sourceLocation)
    #expect(report.iterations == 1, sourceLocation: sourceLocation)
}

/// The op types of the graph's nodes, in order.
func opTypes(_ model: Model) -> [String] { model.graph?.nodes.map(\.opType) ?? [] }

/// Runs every built-in pass on `original` and expects exactly `remarks`,
/// the op types `ops` after the pass, and outputs that match the unfolded
/// graph (see ``compareWithUnfolded(original:folded:input:inputShape:roundings:)``).
/// - Returns: the folded model, for further checks.
@discardableResult
func expectFolded(_ original: Model, sketch: ModelSketch, remarks: [RemarkKey], ops: [String], iterations: Int? = nil,
                  roundings: Int = 1, sourceLocation: SourceLocation = #_sourceLocation) throws -> Model {
    var model = original
    let report = try runBuiltins(&model)
    expectRemarks(report, remarks, sourceLocation: sourceLocation)
    if let iterations { #expect(report.iterations == iterations, sourceLocation: sourceLocation) }
    #expect(opTypes(model) == ops, sourceLocation: sourceLocation)
    try expectMatchesUnfolded(original: original, folded: model, sketch: sketch, roundings: roundings,
                              sourceLocation: sourceLocation)
    return model
}
