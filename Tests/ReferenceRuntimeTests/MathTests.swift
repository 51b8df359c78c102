import Foundation
import Testing
import ONNXGraph
@testable import ReferenceRuntime
import TestSupport

@Suite("BatchNormalization, Gemm, MatMul")
struct LinearTests {
    /// Reference: γ(x − μ)/√(σ² + ε) + β in Double. The runtime computes
    /// a·x + b per channel in Double and rounds once to float32, so its error
    /// is ½ ulp of the result plus Double-level differences between the two
    /// algebraically equal forms, amplified by cancellation: bound
    /// 2u₃₂·(|γ(x−μ)/σ| + |β|), which is ≥ 2u₃₂·|y|.
    @Test(arguments: [[2, 3, 4, 5], [1, 4], [2, 2, 3, 2, 2]])
    func batchNorm(_ shape: [Int]) throws {
        var rng = SeededGenerator(seed: UInt64(shape.reduce(3, *)))
        let c = shape[1]
        let x = randomValues(product(shape), &rng, range: -3...3)
        let gamma = randomValues(c, &rng), beta = randomValues(c, &rng)
        let mean = randomValues(c, &rng), variance = randomValues(c, &rng, range: 0.1...2)
        let eps: Float = 1e-3
        let y = try runNode("BatchNormalization", [tensor(shape, x), tensor([c], gamma), tensor([c], beta), tensor([c], mean),
                                                   tensor([c], variance)], attributes: [.float("epsilon", eps)])[0]
        let expected = Reference.batchNorm(input: x, shape: shape, scale: gamma, bias: beta, mean: mean, variance: variance,
                                           epsilon: Double(eps))
        let inner = product(Array(shape[2...]))
        let bound = x.indices.map { i -> Double in
            let ch = (i / inner) % c
            return 2 * u32 * (abs(gamma[ch] * (x[i] - mean[ch]) / (variance[ch] + Double(eps)).squareRoot()) + abs(beta[ch]))
        }
        #expect(y.shape == shape)
        expectClose(y.doubles(), expected, bound: bound, "BN \(shape)")
    }

    @Test func batchNormTrainingIsRejected() {
        let p = tensor([2], [1, 1])
        let x = tensor([1, 2, 2], [1, 2, 3, 4])
        #expect(throws: RuntimeError.self) {
            try runNode("BatchNormalization", [x, p, p, p, p], attributes: [.int("training_mode", 1)])
        }
    }

    /// Naive Gemm: Y = α·op(A)·op(B) + β·C. Tolerance: a dot product of K
    /// float32 products, (K + 2)·u₃₂·(|α|·Σ|a·b| + |β·c|) (as for Conv).
    @Test(arguments: [(false, false, [5] as [Int]), (true, false, [1, 5]), (false, true, [4, 1]), (true, true, []), (false, false, [4, 5])])
    func gemm(_ transA: Bool, _ transB: Bool, _ cShape: [Int]) throws {
        let m = 4, k = 7, n = 5
        var rng = SeededGenerator(seed: 11 + UInt64(cShape.count))
        let a = randomValues(m * k, &rng), b = randomValues(k * n, &rng), c = randomValues(product(cShape), &rng)
        let alpha = 0.75, beta = -1.5
        let aShape = transA ? [k, m] : [m, k], bShape = transB ? [n, k] : [k, n]
        let y = try runNode("Gemm", [tensor(aShape, a), tensor(bShape, b), tensor(cShape, c)],
                            attributes: [.int("transA", transA ? 1 : 0), .int("transB", transB ? 1 : 0),
                                         .float("alpha", Float(alpha)), .float("beta", Float(beta))])[0]
        var expected: [Double] = [], bound: [Double] = []
        let padded = [Int](repeating: 1, count: 2 - cShape.count) + cShape
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0, sa = 0.0
                for t in 0..<k {
                    let av = transA ? a[t * m + i] : a[i * k + t]
                    let bv = transB ? b[j * k + t] : b[t * n + j]
                    s += av * bv; sa += abs(av * bv)
                }
                let cv = c[(padded[0] == 1 ? 0 : i) * padded[1] + (padded[1] == 1 ? 0 : j)]
                expected.append(alpha * s + beta * cv)
                bound.append(Double(k + 2) * u32 * (abs(alpha) * sa + abs(beta * cv)))
            }
        }
        #expect(y.shape == [m, n])
        expectClose(y.doubles(), expected, bound: bound, "Gemm \(transA) \(transB) C\(cShape)")
    }

    @Test func gemmWithoutC() throws {
        let y = try runNode("Gemm", [tensor([2, 2], [1, 2, 3, 4]), tensor([2, 2], [5, 6, 7, 8])])[0]
        expectEqual(y, shape: [2, 2], [19, 22, 43, 50], "Gemm without C")
    }

    /// numpy matmul semantics, naive loops; same dot-product tolerance.
    @Test(arguments: [([3, 4], [4, 2]), ([2, 3, 4], [4, 5]), ([2, 1, 3, 4], [3, 4, 2]), ([4], [4, 3]), ([2, 3, 4], [4]), ([4], [4])] as [([Int], [Int])])
    func matmul(_ aShape: [Int], _ bShape: [Int]) throws {
        var rng = SeededGenerator(seed: UInt64(aShape.reduce(1, *) * 31 + bShape.reduce(1, *)))
        let a = randomValues(product(aShape), &rng), b = randomValues(product(bShape), &rng)
        for type in [DataType.float, .double] {
            let y = try runNode("MatMul", [tensor(aShape, a, type), tensor(bShape, b, type)])[0]
            // Promote 1-D operands, broadcast batch axes, then drop promoted axes.
            let aP = aShape.count == 1 ? [1] + aShape : aShape, bP = bShape.count == 1 ? bShape + [1] : bShape
            let m = aP[aP.count - 2], k = aP.last!, n = bP.last!
            let aB = Array(aP.dropLast(2)), bB = Array(bP.dropLast(2))
            let rank = max(aB.count, bB.count)
            let aBp = [Int](repeating: 1, count: rank - aB.count) + aB, bBp = [Int](repeating: 1, count: rank - bB.count) + bB
            let batch = zip(aBp, bBp).map { max($0, $1) }
            var expected: [Double] = [], bound: [Double] = []
            for bi in 0..<product(batch) {
                let idx = unflatten(bi, batch)
                let ai = flatten(zip(idx, aBp).map { $1 == 1 ? 0 : $0 }, aBp), bj = flatten(zip(idx, bBp).map { $1 == 1 ? 0 : $0 }, bBp)
                for i in 0..<m { for j in 0..<n {
                    var s = 0.0, sa = 0.0
                    for t in 0..<k { let p = a[ai * m * k + i * k + t] * b[bj * k * n + t * n + j]; s += p; sa += abs(p) }
                    expected.append(s)
                    bound.append(Double(k + 1) * (type == .double ? u64 : u32) * sa)
                }}
            }
            var shape = batch
            if aShape.count > 1 { shape.append(m) }
            if bShape.count > 1 { shape.append(n) }
            #expect(y.shape == shape, "MatMul \(aShape) × \(bShape)")
            expectClose(y.doubles(), expected, bound: bound, "MatMul \(aShape) × \(bShape) \(type)")
        }
    }
}

@Suite("Elementwise")
struct ElementwiseTests {
    /// numpy broadcasting computed here from multi-indices; +, −, ×, ÷ of
    /// float32 values are correctly rounded, so the runtime must be within
    /// ½ ulp (u₃₂·|exact|) of the Double result.
    @Test(arguments: [([2, 3, 4], [4]), ([2, 1, 4], [3, 1]), ([1], [2, 2]), ([], [3, 2]), ([2, 3], [2, 3]), ([3, 1, 2], [1, 4, 1])] as [([Int], [Int])])
    func binaryBroadcast(_ aShape: [Int], _ bShape: [Int]) throws {
        var rng = SeededGenerator(seed: UInt64(aShape.reduce(5, *) + bShape.reduce(7, *)))
        let a = randomValues(product(aShape), &rng), b = randomValues(product(bShape), &rng, range: 0.5...2)
        let rank = max(aShape.count, bShape.count)
        let aP = [Int](repeating: 1, count: rank - aShape.count) + aShape, bP = [Int](repeating: 1, count: rank - bShape.count) + bShape
        let out = zip(aP, bP).map { max($0, $1) }
        let ops: [(String, (Double, Double) -> Double)] = [("Add", +), ("Sub", -), ("Mul", *), ("Div", /)]
        for (op, f) in ops {
            let y = try runNode(op, [tensor(aShape, a), tensor(bShape, b)])[0]
            var expected: [Double] = []
            for o in 0..<product(out) {
                let idx = unflatten(o, out)
                let av = a[flatten(zip(idx, aP).map { $1 == 1 ? 0 : $0 }, aP)]
                let bv = b[flatten(zip(idx, bP).map { $1 == 1 ? 0 : $0 }, bP)]
                expected.append(f(av, bv))
            }
            #expect(y.shape == out)
            expectClose(y.doubles(), expected, bound: expected.map { u32 * abs($0) }, "\(op) \(aShape) \(bShape)")
        }
    }

    @Test func integerArithmetic() throws {
        let a = RuntimeTensor(shape: [3], ints: [7, -7, 9]), b = RuntimeTensor(shape: [], ints: [2])
        expectEqual(try runNode("Add", [a, b])[0], shape: [3], [9, -5, 11], "Add")
        expectEqual(try runNode("Mul", [a, b])[0], shape: [3], [14, -14, 18], "Mul")
        expectEqual(try runNode("Div", [a, b])[0], shape: [3], [3, -3, 4], "Div truncates")
        #expect(throws: RuntimeError.self) { try runNode("Div", [a, RuntimeTensor(shape: [], ints: [0])]) }
        #expect(throws: RuntimeError.self) { try runNode("Add", [a, tensor([3], [1, 2, 3])]) }
        #expect(throws: RuntimeError.self) { try runNode("Add", [tensor([2], [1, 2]), tensor([3], [1, 2, 3])]) }
    }

    /// Unary maps are evaluated in Double and rounded once: within ½ ulp
    /// (u₃₂·|y|) of the formula evaluated here.
    @Test func unary() throws {
        let x = [-4.0, -2.5, -1, -0.25, 0, 0.5, 1, 2.75, 3.5, 7]
        let t = tensor([10], x)
        let cases: [(String, [Attribute], [RuntimeTensor?], (Double) -> Double)] = [
            ("Relu", [], [], { max($0, 0) }),
            ("LeakyRelu", [.float("alpha", 0.25)], [], { $0 >= 0 ? $0 : 0.25 * $0 }),
            ("LeakyRelu", [], [], { $0 >= 0 ? $0 : Double(Float(0.01)) * $0 }),
            ("Sigmoid", [], [], { 1 / (1 + exp(-$0)) }),
            ("Tanh", [], [], { tanh($0) }),
            ("HardSigmoid", [], [], { max(0, min(1, Double(Float(0.2)) * $0 + 0.5)) }),
            ("HardSwish", [], [], { $0 * max(0, min(1, $0 / 6 + 0.5)) }),
            ("Clip", [], [tensor([], [-1]), tensor([], [3])], { min(max($0, -1), 3) }),
            ("Clip", [], [nil, tensor([], [0.5])], { min($0, 0.5) }),
            ("Identity", [], [], { $0 }),
        ]
        for (op, attrs, extra, f) in cases {
            let y = try runNode(op, [t] + extra, attributes: attrs)[0]
            let expected = x.map(f)
            expectClose(y.doubles(), expected, bound: expected.map { u32 * abs($0) }, op)
        }
        let clipOld = try runNode("Clip", [t], attributes: [.float("min", 0), .float("max", 2)], opset: 6)[0]
        #expect(clipOld.doubles() == x.map { min(max($0, 0), 2) })
        let dropout = try runNode("Dropout", [t], outputs: 2)
        #expect(dropout[0] == t)
        #expect(dropout[1].elementType == .bool)
    }

    /// Softmax: exp(x − max)/Σ in Double, rounded once; reference in Double
    /// with the same shift, so ½ ulp plus Double noise: 2u₃₂·y.
    @Test func softmax() throws {
        var rng = SeededGenerator(seed: 21)
        let x = randomValues(24, &rng, range: -5...5)
        func reference(axisLength: Int, inner: Int) -> [Double] {
            var y = x
            let outer = 24 / (axisLength * inner)
            for o in 0..<outer { for i in 0..<inner {
                let idx = (0..<axisLength).map { o * axisLength * inner + $0 * inner + i }
                let top = idx.map { x[$0] }.max()!
                let s = idx.map { exp(x[$0] - top) }.reduce(0, +)
                for j in idx { y[j] = exp(x[j] - top) / s }
            }}
            return y
        }
        let y13 = try runNode("Softmax", [tensor([2, 3, 4], x)], attributes: [.int("axis", 1)], opset: 13)[0]
        let e13 = reference(axisLength: 3, inner: 4)
        expectClose(y13.doubles(), e13, bound: e13.map { 2 * u32 * $0 }, "Softmax-13 axis 1")
        let y11 = try runNode("Softmax", [tensor([2, 3, 4], x)], attributes: [.int("axis", 1)], opset: 11)[0]
        let e11 = reference(axisLength: 12, inner: 1)
        expectClose(y11.doubles(), e11, bound: e11.map { 2 * u32 * $0 }, "Softmax-11 axis 1 (flattened)")
    }
}

@Suite("Pooling and reductions")
struct PoolTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var shape: [Int]
        var kernel: [Int]
        var strides: [Int]
        var pads: [Int]
        var ceil = false
        var includePad = false
        var dilations: [Int]? = nil
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "2d 3x3 s2 p1", shape: [1, 2, 7, 7], kernel: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1]),
        Case(name: "2d ceil", shape: [2, 1, 6, 7], kernel: [3, 2], strides: [2, 2], pads: [0, 0, 0, 0], ceil: true),
        Case(name: "2d ceil pads include", shape: [1, 2, 5, 6], kernel: [3, 3], strides: [2, 2], pads: [1, 0, 1, 1],
             ceil: true, includePad: true),
        Case(name: "2d pads include", shape: [1, 1, 5, 5], kernel: [2, 3], strides: [1, 2], pads: [1, 1, 0, 1], includePad: true),
        Case(name: "1d", shape: [1, 3, 10], kernel: [4], strides: [3], pads: [1, 2]),
        Case(name: "3d", shape: [1, 2, 4, 5, 4], kernel: [2, 2, 3], strides: [2, 1, 1], pads: [0, 1, 1, 1, 0, 1], includePad: true),
        Case(name: "2d dilated", shape: [1, 1, 7, 7], kernel: [2, 2], strides: [1, 1], pads: [1, 1, 0, 0], dilations: [2, 3]),
    ]

    /// Direct definition per output: the window positions
    /// `o·s − pb + k·d`; max over those inside the input; average over those
    /// inside the input, divided by their number, or with count_include_pad
    /// by the number inside the explicitly padded input [−pb, in + pe).
    /// Output size `⌊ or ⌈ (in + pb + pe − ((k−1)d+1)) / s ⌉ + 1`, minus one
    /// if ceil mode makes the last window start past in + pb.
    static func reference(_ cs: Case, _ x: [Double], average: Bool) -> (shape: [Int], values: [Double]) {
        let rank = cs.kernel.count
        let dil = cs.dilations ?? Array(repeating: 1, count: rank)
        let inSp = Array(cs.shape[2...])
        var outSp: [Int] = []
        for a in 0..<rank {
            let window: Int = (cs.kernel[a] - 1) * dil[a] + 1
            let paddedSize: Int = inSp[a] + cs.pads[a] + cs.pads[rank + a]
            let span = Double(paddedSize - window) / Double(cs.strides[a])
            var o = Int(cs.ceil ? span.rounded(.up) : span.rounded(.down)) + 1
            if cs.ceil && (o - 1) * cs.strides[a] >= inSp[a] + cs.pads[a] { o -= 1 }
            outSp.append(o)
        }
        let outShape = Array(cs.shape[..<2]) + outSp
        var y: [Double] = []
        for oi in 0..<product(outShape) {
            let idx = unflatten(oi, outShape)
            var vals: [Double] = []
            var padded = 0
            for ki in 0..<product(cs.kernel) {
                let k = unflatten(ki, cs.kernel)
                var pos: [Int] = []
                var inPadded = true, inInput = true
                for a in 0..<rank {
                    let p: Int = idx[2 + a] * cs.strides[a] - cs.pads[a] + k[a] * dil[a]
                    pos.append(p)
                    if p < -cs.pads[a] || p >= inSp[a] + cs.pads[rank + a] { inPadded = false }
                    if p < 0 || p >= inSp[a] { inInput = false }
                }
                if inPadded { padded += 1 }
                if inInput {
                    vals.append(x[flatten(Array(idx[..<2]) + pos, cs.shape)])
                }
            }
            y.append(average ? vals.reduce(0, +) / Double(cs.includePad ? padded : vals.count) : vals.max()!)
        }
        return (outShape, y)
    }

    /// MaxPool is exact (a selection). AveragePool sums at most ∏k values in
    /// Double and rounds once: within u₃₂·|y| plus negligible Double error.
    @Test(arguments: cases)
    func pools(_ cs: Case) throws {
        var rng = SeededGenerator(seed: UInt64(cs.shape.reduce(13, *)))
        let x = randomValues(product(cs.shape), &rng)
        var attrs: [Attribute] = [.ints("kernel_shape", cs.kernel.map(Int64.init)), .ints("strides", cs.strides.map(Int64.init)),
                                  .ints("pads", cs.pads.map(Int64.init)), .int("ceil_mode", cs.ceil ? 1 : 0)]
        if let d = cs.dilations { attrs.append(.ints("dilations", d.map(Int64.init))) }
        let maxY = try runNode("MaxPool", [tensor(cs.shape, x)], attributes: attrs)[0]
        let maxRef = Self.reference(cs, x, average: false)
        expectEqual(maxY, shape: maxRef.shape, maxRef.values, "MaxPool \(cs.name)")
        let avgY = try runNode("AveragePool", [tensor(cs.shape, x)], attributes: attrs + [.int("count_include_pad", cs.includePad ? 1 : 0)],
                               opset: 19)[0]
        let avgRef = Self.reference(cs, x, average: true)
        #expect(avgY.shape == avgRef.shape)
        expectClose(avgY.doubles(), avgRef.values, bound: avgRef.values.map { 2 * u32 * abs($0) + 1e-12 }, "AveragePool \(cs.name)")
    }

    @Test func autoPadSameUpper() throws {
        // 5 → ⌈5/2⌉ = 3 outputs; total padding (3−1)·2 + 3 − 5 = 2, split 1/1.
        let x = (0..<25).map(Double.init)
        let y = try runNode("MaxPool", [tensor([1, 1, 5, 5], x)], attributes: [.ints("kernel_shape", [3, 3]), .ints("strides", [2, 2]),
                                                                             .string("auto_pad", "SAME_UPPER")])[0]
        expectEqual(y, shape: [1, 1, 3, 3], [6, 8, 9, 16, 18, 19, 21, 23, 24], "MaxPool SAME_UPPER")
    }

    /// Global pools: mean in Double, rounded once (u₃₂·|y|); max exact.
    @Test func globalPools() throws {
        var rng = SeededGenerator(seed: 3)
        let shape = [2, 3, 4, 5]
        let x = randomValues(product(shape), &rng)
        let avg = try runNode("GlobalAveragePool", [tensor(shape, x)])[0]
        let mx = try runNode("GlobalMaxPool", [tensor(shape, x)])[0]
        let planes = (0..<6).map { Array(x[($0 * 20)..<(($0 + 1) * 20)]) }
        let mean = planes.map { $0.reduce(0, +) / 20 }
        #expect(avg.shape == [2, 3, 1, 1])
        expectClose(avg.doubles(), mean, bound: mean.map { u32 * abs($0) + 1e-15 }, "GlobalAveragePool")
        expectEqual(mx, shape: [2, 3, 1, 1], planes.map { $0.max()! }, "GlobalMaxPool")
    }

    @Test func reductions() throws {
        let x = (0..<24).map { Double($0) - 7 }
        let t = tensor([2, 3, 4], x)
        // Sums of small integers are exact in float32.
        let sum = try runNode("ReduceSum", [t, ints([1])], opset: 13)[0]
        expectEqual(sum, shape: [2, 1, 4], [-9, -6, -3, 0, 27, 30, 33, 36], "ReduceSum axis 1")
        let sumAll = try runNode("ReduceSum", [t], attributes: [.int("keepdims", 0)], opset: 13)[0]
        expectEqual(sumAll, shape: [], [x.reduce(0, +)], "ReduceSum all")
        let mean = try runNode("ReduceMean", [t], attributes: [.ints("axes", [-1, 0]), .int("keepdims", 0)], opset: 13)[0]
        expectEqual(mean, shape: [3], [0.5, 4.5, 8.5], "ReduceMean axes [-1, 0]")
        let mean18 = try runNode("ReduceMean", [t, ints([2])], opset: 18)[0]
        #expect(mean18.shape == [2, 3, 1])
        #expect(mean18.doubles() == [-5.5, -1.5, 2.5, 6.5, 10.5, 14.5])
    }
}
