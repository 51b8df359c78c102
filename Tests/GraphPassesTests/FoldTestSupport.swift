import Testing
@testable import GraphPasses
import ONNXGraph
import TestSupport

/// Runs `FoldBatchNorm` alone through the pass manager, as the CLI does.
func runFold(_ model: inout Model) throws -> PassManager.Report {
    try PassManager(passes: [FoldBatchNorm()]).run(on: &model)
}

// MARK: - Tolerances

/// Unit roundoff u of an element type: rounding to nearest gives a relative
/// error of at most u for normal numbers (2^-p for a p-bit significand).
func unitRoundoff(_ type: DataType) -> Double {
    switch type {
    case .float: 0x1p-24
    case .float16: 0x1p-11
    case .bfloat16: 0x1p-8
    case .double: 0x1p-53
    default: preconditionFailure("no unit roundoff for \(type)")
    }
}

/// Largest absolute rounding error below the normal range: half the spacing
/// of the type's subnormals (the relative bound u does not hold there).
func subnormalHalfSpacing(_ type: DataType) -> Double {
    switch type {
    case .float: 0x1p-150
    case .float16: 0x1p-25
    case .bfloat16: 0x1p-134
    case .double: 0x1p-1074  // half of 2^-1074 is not a Double; a full step is still a bound
    default: preconditionFailure("no subnormal spacing for \(type)")
    }
}

/// The outcome of comparing a folded Conv with Conv → BN of the original parameters.
struct FoldComparison {
    /// |folded − reference| per output element.
    var difference: [Double]
    /// The error bound per output element (see ``compareFolded(_:graph:input:referenceEpsilon:)``).
    var bound: [Double]

    /// Largest difference / bound (≤ 1 means within tolerance).
    var worstRatio: Double {
        zip(difference, bound).map { $0 / $1 }.max() ?? 0
    }
    var worstIndex: Int {
        zip(difference, bound).map { $0 / $1 }.enumerated().max { $0.element < $1.element }?.offset ?? 0
    }
}

/// Evaluates the folded Conv producing `fixture.names.output` in `graph`
/// with the reference and compares it with the reference Conv → BN of the
/// fixture's original parameters on the same input.
///
/// Tolerance, per output element o of channel c. The pass computes, in
/// Double, s_c = γ_c/sqrt(σ²_c+ε), W'_c = W_c·s_c, b'_c = (b_c − μ_c)·s_c + β_c
/// and rounds each once into the element type (unit roundoff u: 2^-24
/// float, 2^-11 float16, 2^-8 bfloat16, 2^-53 double). So each stored
/// weight is W'(1+δ), |δ| ≤ u (plus at most the subnormal half-spacing t
/// absolutely), and likewise the bias. The folded Conv then differs from
/// the exact folded affine map by at most
///     u·(Σ|W'·x| + |b'|) + t·(Σ|x| + 1).
/// Both sides are further evaluated in Double: a sum of K products (K =
/// C_in/group · Πk), plus the few operations of s, b' and the BN, each
/// contributing ≤ (K + 10)·2^-53 relative to the magnitudes involved,
/// Σ|W'·x| + |b'| and Σ|W·x|·|s| + |b·s| + |μ·s| + |β| (cancellation in
/// y − μ is why the second group appears). The bound used is
///     2·u·A + (K + 10)·2^-52·(A + B) + t·(Σ|x| + 1)
/// with A = Σ|W'·x| + |b'| and B the second group: c = 2 on the rounding
/// term leaves room for the few-ulp Double error in W' itself, and every
/// term is computed from the data of that output element.
func compareFolded(_ fixture: ConvBNFixture, graph: Graph, input: [Double],
                   referenceEpsilon: Double? = nil) throws -> FoldComparison {
    let spec = fixture.spec
    let convs = graph.nodes(ofType: "Conv").filter { $0.outputs.first == fixture.names.output }
    precondition(convs.count == 1, "no single Conv produces \(fixture.names.output)")
    let folded = try graph.evaluateConv(convs[0], input: input, inputShape: fixture.inputShape)
    precondition(folded.shape == fixture.outputShape)
    let reference = fixture.reference(input: input, epsilon: referenceEpsilon)

    // Magnitudes for the bound, from the exact (Double) fold of the original parameters.
    let s = fixture.bnScale()
    let channels = spec.outChannels
    let perChannel = fixture.weight.count / channels
    let b = fixture.convBias ?? [Double](repeating: 0, count: channels)
    let absX = input.map(\.magnitude)
    let absWPrime = fixture.weight.enumerated().map { ($0.element * s[$0.offset / perChannel]).magnitude }
    let absW = fixture.weight.map(\.magnitude)
    let ones = [Double](repeating: 1, count: fixture.weight.count)
    func absConv(_ w: [Double]) -> [Double] {
        Reference.conv(input: absX, inputShape: fixture.inputShape, weight: w, weightShape: fixture.weightShape,
                       bias: nil, group: spec.group, strides: spec.strides, pads: spec.pads,
                       dilations: spec.dilations).values
    }
    let sumWPrimeX = absConv(absWPrime)
    let sumWX = absConv(absW)
    let sumX = absConv(ones)

    let u = unitRoundoff(spec.elementType)
    let t = subnormalHalfSpacing(spec.elementType)
    let k = Double(perChannel)
    let outSpatial = folded.values.count / channels
    var difference: [Double] = []
    var bound: [Double] = []
    for (o, (got, want)) in zip(folded.values, reference).enumerated() {
        let c = o / outSpatial
        let bPrime = (b[c] - fixture.mean[c]) * s[c] + fixture.bnBias[c]
        let a = sumWPrimeX[o] + bPrime.magnitude
        let bMagnitudes = sumWX[o] * s[c].magnitude + (b[c] * s[c]).magnitude + (fixture.mean[c] * s[c]).magnitude
            + fixture.bnBias[c].magnitude
        difference.append((got - want).magnitude)
        bound.append(2 * u * a + (k + 10) * 0x1p-52 * (a + bMagnitudes) + t * (sumX[o] + 1))
    }
    return FoldComparison(difference: difference, bound: bound)
}

/// Expects the folded graph to match the reference within the bound.
func expectMatchesReference(_ fixture: ConvBNFixture, graph: Graph, inputSeed: UInt64 = 99,
                            sourceLocation: SourceLocation = #_sourceLocation) throws {
    let input = fixture.randomInput(seed: inputSeed)
    let result = try compareFolded(fixture, graph: graph, input: input)
    let i = result.worstIndex
    #expect(result.worstRatio <= 1,
            "output \(i): |diff| \(result.difference[i]) > bound \(result.bound[i]) (\(fixture.spec.elementType))",
            sourceLocation: sourceLocation)
}

// MARK: - Remarks and structure

/// Expects `report` to hold exactly one remark: `applied`, `ConvBatchNormFolded`, for `bn`.
func expectSingleFold(_ report: PassManager.Report, bn: String, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(report.remarks.count == 1, "remarks: \(report.remarks)", sourceLocation: sourceLocation)
    guard let r = report.remarks.first else { return }
    #expect(r.kind == .applied, sourceLocation: sourceLocation)
    #expect(r.reason == FoldReason.convBatchNormFolded.rawValue, sourceLocation: sourceLocation)
    #expect(r.reason == "ConvBatchNormFolded", sourceLocation: sourceLocation)
    #expect(r.pass == "fold-batchnorm", sourceLocation: sourceLocation)
    #expect(r.node == bn, sourceLocation: sourceLocation)
}

/// Expects the structure of a folded fixture: no BN, one Conv under the BN's
/// output name with a constant bias of the right type, BN parameters gone.
func expectFoldedStructure(_ fixture: ConvBNFixture, graph: Graph,
                           sourceLocation: SourceLocation = #_sourceLocation) {
    let names = fixture.names
    let type = fixture.spec.elementType
    #expect(graph.nodes(ofType: "BatchNormalization").isEmpty, sourceLocation: sourceLocation)
    let convs = graph.nodes(ofType: "Conv")
    #expect(convs.count == 1, sourceLocation: sourceLocation)
    guard let conv = convs.first else { return }
    #expect(conv.name == names.conv, sourceLocation: sourceLocation)
    #expect(conv.outputs == [names.output], sourceLocation: sourceLocation)
    #expect(conv.inputs.count == 3, sourceLocation: sourceLocation)
    #expect(conv.inputs.first == names.input, sourceLocation: sourceLocation)
    if conv.inputs.count == 3 {
        #expect(!conv.inputs[2].isEmpty, sourceLocation: sourceLocation)
        let bias = graph.constantTensor(named: conv.inputs[2])
        #expect(bias != nil, "the bias '\(conv.inputs[2])' is not a constant", sourceLocation: sourceLocation)
        #expect(bias?.elementType == type, sourceLocation: sourceLocation)
        #expect(bias?.dims == [Int64(fixture.spec.outChannels)], sourceLocation: sourceLocation)
        if fixture.spec.hasBias {
            #expect(conv.inputs[2] == names.convBias, "an unshared bias is replaced in place",
                    sourceLocation: sourceLocation)
        }
    }
    let weight = graph.constantTensor(named: conv.inputs[1])
    #expect(weight?.elementType == type, sourceLocation: sourceLocation)
    #expect(weight?.dims == fixture.weightShape.map(Int64.init), sourceLocation: sourceLocation)
    #expect(conv.inputs[1] == names.weight, "an unshared weight is replaced in place", sourceLocation: sourceLocation)
    // Dead BN parameters and the Conv's old output are gone everywhere.
    for name in names.bnParameters + [names.convOutput] {
        #expect(graph.initializer(named: name) == nil, "\(name) still an initializer", sourceLocation: sourceLocation)
        #expect(!graph.inputs.contains { $0.name == name }, "\(name) still a graph input", sourceLocation: sourceLocation)
        #expect(!graph.valueInfo.contains { $0.name == name }, "\(name) still in value_info", sourceLocation: sourceLocation)
        #expect(!graph.nodes.contains { $0.outputs.contains(name) }, "\(name) still produced", sourceLocation: sourceLocation)
        #expect(graph.value(named: name).uses.isEmpty, "\(name) still used", sourceLocation: sourceLocation)
    }
    #expect(graph.outputs.map(\.name) == [names.output], sourceLocation: sourceLocation)
}

/// Runs the fold on `model` and expects nothing to change and exactly one
/// `missed` remark with `reason` for node `node`.
func expectMissed(_ model: Model, reason: FoldBatchNorm.Reason, node: String = "bn",
                  sourceLocation: SourceLocation = #_sourceLocation) throws {
    var folded = model
    let report = try runFold(&folded)
    let unchanged = folded == model  // (not inside #expect: it would print both models)
    #expect(unchanged, "the model changed", sourceLocation: sourceLocation)
    #expect(report.remarks.count == 1, "remarks: \(report.remarks)", sourceLocation: sourceLocation)
    guard let r = report.remarks.first else { return }
    #expect(r.kind == .missed, sourceLocation: sourceLocation)
    #expect(r.reason == reason.rawValue, "message: \(r.message)", sourceLocation: sourceLocation)
    #expect(r.node == node, sourceLocation: sourceLocation)
    #expect(r.pass == "fold-batchnorm", sourceLocation: sourceLocation)
    #expect(!r.message.isEmpty, sourceLocation: sourceLocation)
    #expect(report.iterations == 1, sourceLocation: sourceLocation)
}
