import ONNXGraph
import ReferenceRuntime

/// How two models' outputs are judged.
public enum Tolerance: Equatable, Sendable {
    /// The default rule (see ``EquivalenceChecker``): B must be within
    /// `k · max(noise, u · scale)` of a float64 evaluation of A.
    case derived(k: Double)
    /// The classic elementwise rule `|B − A| ≤ atol + rtol · |A|`.
    case explicit(rtol: Double, atol: Double)

    /// The default: k = 8.
    public static let standard = Tolerance.derived(k: EquivalenceChecker.defaultK)
}

/// The comparison of one output of the two models, over every sample.
public struct OutputComparison: Sendable, Encodable {
    public var name: String
    public var elementType: String
    public var shape: [Int]
    /// max |A − B|, both in their own precision.
    public var maxAbsDiff: Double = 0
    /// max over elements of |A − B| / max(|A|, |B|) (0 where both are 0).
    public var maxRelDiff: Double = 0
    /// Σ A·B / √(Σ A² · Σ B²) over every element of every sample (1 if both are all zero).
    public var cosineSimilarity: Double = 1
    /// Default rule: max |B − A64|, B's error against the float64 reference.
    public var error: Double? = nil
    /// Default rule: max |A − A64|, the original's own rounding error
    /// (for double models, a float32 run's error scaled by 2⁻²⁹).
    public var referenceNoise: Double? = nil
    /// Default rule: max |A64|.
    public var scale: Double? = nil
    /// Default rule: the allowed error k · max(noise, u · scale).
    public var bound: Double? = nil
    /// error / bound (default rule) or max over elements of |A − B| / (atol + rtol·|A|): ≤ 1 passes.
    public var ratio: Double = 0
    public var equivalent: Bool = true
    /// Why the output could not be compared (missing, shape or type differs).
    public var problem: String? = nil
}

/// The result of comparing two models.
public struct EquivalenceReport: Sendable {
    public var outputs: [OutputComparison]
    public var samples: Int
    public var tolerance: Tolerance
    public var equivalent: Bool { outputs.allSatisfy(\.equivalent) }
}

/// Runs two models on the same inputs and judges each output.
///
/// **Default rule.** Per output, over all samples: A runs in its own
/// precision and in float64 (`Interpreter/computingInFloat64()`: every
/// float tensor widened exactly), B in its own precision. With A64 the reference,
///
///     noise = max |A − A64|     (how far the original's own rounding moves it)
///     scale = max |A64|
///     u     = unit roundoff of the output type (2⁻²⁴ float, 2⁻¹¹ float16, 2⁻⁸ bfloat16, 2⁻⁵³ double)
///     B passes  ⇔  max |B − A64| ≤ k · max(noise, u · scale),   k = 8.
///
/// A correct fold changes the network only by one rounding of each folded
/// weight and a reordered computation, so its error against A64 is of the
/// same size as A's own (measured: ratio ≈ 1); k = 8 leaves room for that and
/// for the sampling of the maximum. For double models A64 is A, so the noise
/// is estimated from a float32 run of A, scaled by u₆₄/u₃₂ = 2⁻²⁹ (rounding
/// error is proportional to the unit roundoff). For float16/bfloat16 models
/// this compares both models against float64, so a folded model passes when
/// it is no less accurate (within k) than the original.
public struct EquivalenceChecker {
    public static let defaultK = 8.0

    public let a: Model
    public let b: Model
    public var tolerance: Tolerance = .standard

    public init(a: Model, b: Model, tolerance: Tolerance = .standard) {
        self.a = a; self.b = b; self.tolerance = tolerance
    }

    /// The inputs to feed: A's non-initializer inputs, which B must declare
    /// alike (same names and element types).
    public func inputSpecs(shapes: [String: [Int]] = [:]) throws -> [InputSpec] {
        guard let ga = a.graph, let gb = b.graph else { throw EquivalenceError("a model has no graph") }
        let sa = try InputSpec.inputs(of: ga, shapes: shapes)
        let sb = try InputSpec.inputs(of: gb, shapes: shapes)
        for spec in sa {
            guard let other = sb.first(where: { $0.name == spec.name }) else {
                throw EquivalenceError("the second model has no input '\(spec.name)'")
            }
            guard other.elementType == spec.elementType else {
                throw EquivalenceError("input '\(spec.name)' is \(spec.elementType) in the first model and \(other.elementType) in the second")
            }
        }
        if let extra = sb.first(where: { s in !sa.contains { $0.name == s.name } }) {
            throw EquivalenceError("the second model has an input '\(extra.name)' the first does not")
        }
        for name in shapes.keys where !sa.contains(where: { $0.name == name }) {
            throw EquivalenceError("--input-shape names '\(name)', which is not an input of the models (they are: \(sa.map { "'\($0.name)'" }.joined(separator: ", ")))")
        }
        return sa
    }

    /// Compares the models on `samples` input sets: `given` inputs are used
    /// as they are, the others drawn from a standard normal (seeded).
    ///
    /// `progress`, when given, is called after every node of every run (on
    /// the calling thread) so that a caller can show how far a long check is.
    ///
    /// Under a memory budget (`MemoryBudget/enforce(_:)`) the whole
    /// comparison — both models' weights, the float64 reference, inputs and
    /// every intermediate — is one account; a refusal is thrown as a
    /// `RuntimeError` whose `memory` is set (``memoryLimit(of:)``).
    public func compare(given: [String: RuntimeTensor] = [:], shapes: [String: [Int]] = [:],
                        samples: Int = 1, seed: UInt64 = 0,
                        progress: ((CheckProgress) -> Void)? = nil) throws -> EquivalenceReport {
        try MemoryBudget.measured {
            try compareMeasured(given: given, shapes: shapes, samples: samples, seed: seed, progress: progress)
        }
    }

    /// Whether `error` is a comparison stopped by the memory budget or the
    /// allocator rather than a fault of the models; its reason.
    public static func memoryLimit(of error: any Error) -> MemoryBudgetExceeded? {
        (error as? MemoryBudgetExceeded) ?? (error as? RuntimeError)?.memory
    }

    private func compareMeasured(given: [String: RuntimeTensor], shapes: [String: [Int]], samples: Int, seed: UInt64,
                                 progress: ((CheckProgress) -> Void)?) throws -> EquivalenceReport {
        let specs = try inputSpecs(shapes: shapes)
        for name in given.keys where !specs.contains(where: { $0.name == name }) {
            throw EquivalenceError("--input names '\(name)', which is not an input of the models (they are: \(specs.map { "'\($0.name)'" }.joined(separator: ", ")))")
        }
        for spec in specs {
            if let t = given[spec.name], t.elementType != spec.elementType {
                throw EquivalenceError("input '\(spec.name)' is \(spec.elementType), but the given tensor is \(t.elementType)")
            }
        }
        let runA = try Interpreter(model: a)
        let runB = try Interpreter(model: b)
        let opset = a.opsetVersion() ?? 0
        var runA64: Interpreter? = nil
        var runA32: Interpreter? = nil   // the noise proxy for double models
        if case .derived = tolerance {
            runA64 = try runA.computingInFloat64()
            let outputTypes = a.graph!.outputs.compactMap { $0.type?.tensorType?.elementType }
            if outputTypes.contains(.double) {
                runA32 = try Interpreter(graph: Precision.retyped(a.graph!, to: .float), opset: opset)
            }
        }
        // Every input random: more samples help; every input given: one is enough.
        let sampleCount = specs.allSatisfy({ given[$0.name] != nil }) ? 1 : max(1, samples)
        var rng = SplitMix64(seed: seed)
        var accumulators: [String: Accumulator] = [:]
        let outputNames = a.graph!.outputs.compactMap(\.name).filter { !$0.isEmpty }
        for sample in 0..<sampleCount {
            var feeds: [String: RuntimeTensor] = [:]
            for spec in specs { feeds[spec.name] = try given[spec.name] ?? spec.random(&rng) }
            try RuntimeTensor.hold(feeds.values)
            func observer(_ run: CheckProgress.Run, _ interpreter: Interpreter) -> ((Int, Double) -> Void)? {
                guard let progress else { return nil }
                let nodes = interpreter.graph.nodes.count
                return { index, _ in
                    progress(CheckProgress(sample: sample + 1, samples: sampleCount, run: run, node: index + 1, nodes: nodes))
                }
            }
            let ya = try runA.run(inputs: feeds, observe: observer(.a, runA))
            let yb = try runB.run(inputs: feeds, observe: observer(.b, runB))
            let y64 = try runA64.map { try $0.run(inputs: feeds, observe: observer(.aFloat64, $0)) }
            let y32 = try runA32.map { try $0.run(inputs: feeds.mapValues { try narrowed($0) }, observe: observer(.aFloat32, $0)) }
            for name in outputNames {
                guard let va = ya[name] else { continue }
                var acc = accumulators[name] ?? Accumulator(name: name, a: va)
                acc.add(a: va, b: yb[name], reference: y64?[name], proxy32: y32?[name], tolerance: tolerance)
                accumulators[name] = acc
            }
            for outputs in [ya, yb, y64 ?? [:], y32 ?? [:]] { RuntimeTensor.release(outputs.values) }
            RuntimeTensor.release(feeds.values)
        }
        let outputs = outputNames.compactMap { accumulators[$0]?.result(tolerance: tolerance) }
        return EquivalenceReport(outputs: outputs, samples: sampleCount, tolerance: tolerance)
    }
}

/// Where a running comparison is: which sample, which model run, which node.
public struct CheckProgress: Sendable, Equatable {
    public enum Run: String, Sendable {
        case a = "A"
        case b = "B"
        case aFloat64 = "A in float64"
        case aFloat32 = "A in float32"
    }
    /// 1-based sample number and the number of samples.
    public var sample: Int
    public var samples: Int
    public var run: Run
    /// 1-based index of the node just finished, and the graph's node count.
    public var node: Int
    public var nodes: Int

    public init(sample: Int, samples: Int, run: Run, node: Int, nodes: Int) {
        self.sample = sample; self.samples = samples; self.run = run; self.node = node; self.nodes = nodes
    }
}

func narrowed(_ t: RuntimeTensor) throws -> RuntimeTensor {
    guard t.elementType.isFoldableFloat, t.elementType != .float else { return t }
    return RuntimeTensor(shape: t.shape, floats: t.doubles().map { Float($0) })
}

/// max that lets NaN win (a NaN difference is a failure, not a skipped element).
@inline(__always)
func maxNaN(_ x: Double, _ y: Double) -> Double { x.isNaN || y.isNaN ? .nan : Swift.max(x, y) }

/// |x − y|, 0 when both are the same infinity or both NaN.
@inline(__always)
func difference(_ x: Double, _ y: Double) -> Double {
    if x == y || (x.isNaN && y.isNaN) { return 0 }
    return abs(x - y)
}

struct Accumulator {
    var out: OutputComparison
    var dot = 0.0, normA = 0.0, normB = 0.0
    var error = 0.0, noise = 0.0, scale = 0.0, noiseFactor = 1.0
    var unit: Double

    init(name: String, a: RuntimeTensor) {
        out = OutputComparison(name: name, elementType: a.elementType.name, shape: a.shape)
        unit = Precision.unitRoundoff(a.elementType) ?? 0
    }

    mutating func fail(_ problem: String) {
        out.equivalent = false
        if out.problem == nil { out.problem = problem }
    }

    mutating func add(a: RuntimeTensor, b: RuntimeTensor?, reference: RuntimeTensor?, proxy32: RuntimeTensor?, tolerance: Tolerance) {
        guard let b else { return fail("the second model has no output '\(out.name)'") }
        guard a.shape == b.shape else { return fail("shape \(a.shape) in the first model, \(b.shape) in the second") }
        if a.elementType != b.elementType { fail("element type \(a.elementType) in the first model, \(b.elementType) in the second") }
        let va = a.doubles(), vb = b.doubles()
        // Where both models give the same non-finite value (the same
        // infinity, or NaN in both), they agree: the element is left out of
        // every statistic. The float64 reference may well be finite there
        // (an int64 max cast to float16 is +inf in both models and 9.2e18 in
        // float64), and counting it made an unrelated output's ratio NaN.
        let agreed = va.indices.map { i in !va[i].isFinite && difference(va[i], vb[i]) == 0 }
        for i in va.indices where !agreed[i] {
            let x = va[i], y = vb[i]
            let d = difference(x, y)
            out.maxAbsDiff = maxNaN(out.maxAbsDiff, d)
            let m = Swift.max(abs(x), abs(y))
            out.maxRelDiff = maxNaN(out.maxRelDiff, d == 0 ? 0 : d / m)
            dot += x * y; normA += x * x; normB += y * y
            if case .explicit(let rtol, let atol) = tolerance {
                let allowed = atol + rtol * abs(x)
                out.ratio = maxNaN(out.ratio, d == 0 ? 0 : d / allowed)
            }
        }
        guard case .derived = tolerance, let reference else { return }
        let vr = reference.doubles()
        guard vr.count == va.count else { return fail("the float64 evaluation gave shape \(reference.shape)") }
        for i in vr.indices where !agreed[i] {
            scale = maxNaN(scale, abs(vr[i]))
            error = maxNaN(error, difference(vb[i], vr[i]))
        }
        if let proxy32, a.elementType == .double, proxy32.count == vr.count {
            let vp = proxy32.doubles()
            for i in vr.indices where !agreed[i] { noise = maxNaN(noise, difference(vp[i], vr[i])) }
            noiseFactor = 0x1p-29
        } else {
            for i in vr.indices where !agreed[i] { noise = maxNaN(noise, difference(va[i], vr[i])) }
        }
    }

    func result(tolerance: Tolerance) -> OutputComparison {
        var r = out
        let denominator = (normA * normB).squareRoot()
        r.cosineSimilarity = denominator == 0 ? (normA == normB ? 1 : 0) : dot / denominator
        switch tolerance {
        case .derived(let k):
            let n = noise * noiseFactor
            let bound = k * Swift.max(n, unit * scale)
            r.error = error; r.referenceNoise = n; r.scale = scale; r.bound = bound
            r.ratio = error == 0 ? 0 : (bound == 0 ? .infinity : error / bound)
        case .explicit:
            break
        }
        if !(r.ratio <= 1) { r.equivalent = false }   // NaN fails too
        return r
    }
}
