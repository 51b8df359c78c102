import Testing
import ONNXGraph
@testable import ReferenceRuntime
import TestSupport

/// One Conv configuration.
struct ConvCase: Sendable, CustomTestStringConvertible {
    var name: String
    var n = 1
    var c: Int
    var m: Int
    var group = 1
    var spatial: [Int]
    var kernel: [Int]
    var strides: [Int]? = nil
    var pads: [Int]? = nil
    var dilations: [Int]? = nil
    var autoPad: String? = nil
    var bias = true
    var testDescription: String { name }

    static let all: [ConvCase] = [
        ConvCase(name: "2d 3x3", c: 3, m: 4, spatial: [6, 5], kernel: [3, 3]),
        ConvCase(name: "2d batch 2 no bias", n: 2, c: 2, m: 3, spatial: [5, 5], kernel: [3, 3], bias: false),
        ConvCase(name: "2d group 2", c: 4, m: 6, group: 2, spatial: [5, 6], kernel: [3, 2]),
        ConvCase(name: "2d depthwise", c: 4, m: 8, group: 4, spatial: [6, 6], kernel: [3, 3], pads: [1, 1, 1, 1]),
        ConvCase(name: "2d strided asymmetric pads", c: 3, m: 2, spatial: [7, 8], kernel: [3, 3],
                 strides: [2, 3], pads: [1, 0, 2, 1]),
        ConvCase(name: "2d dilated", c: 2, m: 3, spatial: [9, 8], kernel: [3, 2], pads: [2, 1, 1, 0], dilations: [2, 3]),
        ConvCase(name: "2d strided dilated grouped", n: 2, c: 6, m: 3, group: 3, spatial: [9, 9], kernel: [2, 3],
                 strides: [2, 2], pads: [1, 1, 1, 1], dilations: [2, 1]),
        ConvCase(name: "2d SAME_UPPER strided", c: 2, m: 3, spatial: [7, 6], kernel: [3, 4], strides: [2, 2], autoPad: "SAME_UPPER"),
        ConvCase(name: "2d SAME_LOWER", c: 2, m: 2, spatial: [5, 6], kernel: [2, 3], autoPad: "SAME_LOWER"),
        ConvCase(name: "2d VALID", c: 2, m: 2, spatial: [5, 6], kernel: [2, 3], strides: [2, 1], autoPad: "VALID"),
        ConvCase(name: "2d 1x1", c: 5, m: 3, spatial: [4, 4], kernel: [1, 1]),
        ConvCase(name: "1d", c: 3, m: 4, spatial: [11], kernel: [3], strides: [2], pads: [1, 2], dilations: [2]),
        ConvCase(name: "1d depthwise", c: 3, m: 3, group: 3, spatial: [8], kernel: [5], pads: [2, 2]),
        ConvCase(name: "3d", c: 2, m: 3, spatial: [4, 5, 4], kernel: [2, 3, 2], strides: [1, 2, 1], pads: [1, 0, 1, 0, 1, 1]),
        ConvCase(name: "3d grouped dilated", n: 2, c: 4, m: 4, group: 2, spatial: [5, 5, 5], kernel: [2, 2, 2],
                 dilations: [2, 1, 2]),
    ]

    var rank: Int { spatial.count }

    /// The explicit pads the test expects for this case (auto_pad resolved
    /// here, independently of the runtime, from the ONNX formulas).
    var resolvedPads: [Int] {
        let dil = dilations ?? Array(repeating: 1, count: rank)
        let str = strides ?? Array(repeating: 1, count: rank)
        switch autoPad {
        case "SAME_UPPER"?, "SAME_LOWER"?:
            var begin: [Int] = [], end: [Int] = []
            for i in 0..<rank {
                let out = Int((Double(spatial[i]) / Double(str[i])).rounded(.up))
                let total = max(0, (out - 1) * str[i] + (kernel[i] - 1) * dil[i] + 1 - spatial[i])
                let b = autoPad == "SAME_UPPER" ? total / 2 : (total + 1) / 2
                begin.append(b); end.append(total - b)
            }
            return begin + end
        case "VALID"?: return Array(repeating: 0, count: 2 * rank)
        default: return pads ?? Array(repeating: 0, count: 2 * rank)
        }
    }

    var attributes: [Attribute] {
        var a: [Attribute] = [.int("group", Int64(group)), .ints("kernel_shape", kernel.map(Int64.init))]
        if let strides { a.append(.ints("strides", strides.map(Int64.init))) }
        if let pads { a.append(.ints("pads", pads.map(Int64.init))) }
        if let dilations { a.append(.ints("dilations", dilations.map(Int64.init))) }
        if let autoPad { a.append(.string("auto_pad", autoPad)) }
        return a
    }
}

@Suite("Conv")
struct ConvTests {
    /// Compares the runtime's Conv with TestSupport's Double reference
    /// (`Reference.conv`: one multiply-add per tap, no im2col, no BLAS).
    ///
    /// Tolerance: the inputs are exactly representable, so the reference is
    /// exact up to Double rounding, and the runtime's error is that of a dot
    /// product of K = C/group·∏kernel terms plus the bias, in the storage
    /// precision: |ŷ − y| ≤ γ_{K+1}·Σ|w·x| + |b|, γ_n ≈ n·u, for any summation order and
    /// with or without FMA (Higham, Accuracy and Stability, §3.1). Σ|w·x| + |b|
    /// is the reference applied to |x|, |w|, |b|. The bound uses (K+2)·u.
    @Test(arguments: ConvCase.all, [DataType.float, .double])
    func matchesReference(_ cs: ConvCase, _ type: DataType) throws {
        var rng = SeededGenerator(seed: UInt64(cs.name.utf8.reduce(0) { $0 &* 31 &+ UInt64($1) }) &+ UInt64(type.rawValue))
        let xShape = [cs.n, cs.c] + cs.spatial
        let wShape = [cs.m, cs.c / cs.group] + cs.kernel
        let x = randomValues(product(xShape), &rng, type: type)
        let w = randomValues(product(wShape), &rng, type: type)
        let b = cs.bias ? randomValues(cs.m, &rng, type: type) : nil
        let inputs: [RuntimeTensor?] = [tensor(xShape, x, type), tensor(wShape, w, type), b.map { tensor([cs.m], $0, type) }]
        let y = try runNode("Conv", cs.bias ? inputs : Array(inputs.prefix(2)), attributes: cs.attributes)[0]

        let perItem = product(Array(xShape.dropFirst()))
        var expected: [Double] = [], scale: [Double] = []
        var expectedShape: [Int] = []
        for item in 0..<cs.n {
            let xi = Array(x[(item * perItem)..<((item + 1) * perItem)])
            let r = Reference.conv(input: xi, inputShape: [1] + Array(xShape.dropFirst()), weight: w, weightShape: wShape,
                                   bias: b, group: cs.group, strides: cs.strides, pads: cs.resolvedPads, dilations: cs.dilations)
            let a = Reference.conv(input: xi.map(abs), inputShape: [1] + Array(xShape.dropFirst()), weight: w.map(abs),
                                   weightShape: wShape, bias: b?.map(abs), group: cs.group, strides: cs.strides,
                                   pads: cs.resolvedPads, dilations: cs.dilations)
            expected += r.values
            scale += a.values
            expectedShape = [cs.n] + Array(r.shape.dropFirst())
        }
        #expect(y.shape == expectedShape)
        #expect(y.elementType == type)
        let k = Double(cs.c / cs.group * product(cs.kernel))
        let u = type == .double ? u64 : u32
        expectClose(y.doubles(), expected, bound: scale.map { (k + 2) * u * $0 + 1e-300 }, "\(cs.name) \(type)")
    }

    /// float16 and bfloat16 are computed in float32 and the output rounded
    /// once into the type: the result must be the float32 result rounded
    /// (identical bits), since the float32 kernel is the same code.
    @Test(arguments: [DataType.float16, .bfloat16])
    func halfTypesRoundTheFloatResult(_ type: DataType) throws {
        var rng = SeededGenerator(seed: 77)
        let cs = ConvCase.all[2]
        let xShape = [1, cs.c] + cs.spatial, wShape = [cs.m, cs.c / cs.group] + cs.kernel
        let x = randomValues(product(xShape), &rng, type: type), w = randomValues(product(wShape), &rng, type: type)
        let half = try runNode("Conv", [tensor(xShape, x, type), tensor(wShape, w, type)], attributes: cs.attributes)[0]
        let single = try runNode("Conv", [tensor(xShape, x, .float), tensor(wShape, w, .float)], attributes: cs.attributes)[0]
        #expect(half.elementType == type)
        #expect(half.doubles() == rounded(single.doubles(), to: type))
        // And it survives conversion to an IR tensor and back unchanged.
        let back = try RuntimeTensor(half.tensor(name: "y"))
        #expect(back == half)
    }

    @Test func rejectsBadShapes() throws {
        let x = tensor([1, 4, 5, 5], Array(repeating: 0, count: 100))
        let w = tensor([2, 3, 3, 3], Array(repeating: 0, count: 54))
        #expect(throws: RuntimeError.self) { try runNode("Conv", [x, w]) }
        let w2 = tensor([2, 2, 3, 3], Array(repeating: 0, count: 36))
        #expect(throws: RuntimeError.self) { try runNode("Conv", [x, w2], attributes: [.int("group", 3)]) }
        let big = tensor([2, 4, 9, 9], Array(repeating: 0, count: 2 * 4 * 81))
        #expect(throws: RuntimeError.self) { try runNode("Conv", [x, big]) }
    }
}

@Suite("ConvTranspose")
struct ConvTransposeTests {
    /// Direct scatter definition: every input element x[n, c, i] adds
    /// x·W[c, m', k] into y[n, g·M/g + m', i·s − pb + k·d] when that lies in the output.
    static func reference(x: [Double], xShape: [Int], w: [Double], wShape: [Int], b: [Double]?, group: Int,
                          strides: [Int], pads: [Int], dilations: [Int], outSpatial: [Int]) -> [Double] {
        let rank = xShape.count - 2
        let n = xShape[0], c = xShape[1], mg = wShape[1], m = mg * group, cg = c / group
        let inSpatial = Array(xShape[2...]), kernel = Array(wShape[2...])
        let outShape = [n, m] + outSpatial
        var y = [Double](repeating: 0, count: product(outShape))
        for i in 0..<y.count { y[i] = b?[unflatten(i, outShape)[1]] ?? 0 }
        for xi in 0..<x.count {
            let xIndex = unflatten(xi, xShape)
            let ci = xIndex[1], g = ci / cg
            for mi in 0..<mg {
                for ki in 0..<product(kernel) {
                    let k = unflatten(ki, kernel)
                    var outPos: [Int] = []
                    var inside = true
                    for a in 0..<rank {
                        let p = xIndex[2 + a] * strides[a] - pads[a] + k[a] * dilations[a]
                        if p < 0 || p >= outSpatial[a] { inside = false }
                        outPos.append(p)
                    }
                    _ = inSpatial
                    guard inside else { continue }
                    let wv = w[flatten([ci, mi] + k, wShape)]
                    y[flatten([xIndex[0], g * mg + mi] + outPos, outShape)] += wv * x[xi]
                }
            }
        }
        return y
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var xShape: [Int]
        var wShape: [Int]
        var group = 1
        var strides: [Int]
        var pads: [Int]
        var dilations: [Int]
        var outputPadding: [Int]
        var testDescription: String { name }
    }

    static let cases: [Case] = [
        Case(name: "2d stride 2", xShape: [1, 3, 4, 5], wShape: [3, 2, 3, 3], strides: [2, 2], pads: [1, 1, 1, 1],
             dilations: [1, 1], outputPadding: [1, 0]),
        Case(name: "2d grouped dilated", xShape: [2, 4, 3, 4], wShape: [4, 3, 2, 3], group: 2, strides: [1, 2],
             pads: [0, 1, 1, 0], dilations: [2, 1], outputPadding: [0, 1]),
        Case(name: "1d", xShape: [1, 2, 6], wShape: [2, 3, 4], strides: [3], pads: [2, 1], dilations: [1], outputPadding: [2]),
        Case(name: "3d", xShape: [1, 2, 3, 2, 3], wShape: [2, 2, 2, 2, 2], strides: [2, 1, 2], pads: [0, 1, 0, 1, 0, 1],
             dilations: [1, 1, 1], outputPadding: [1, 0, 0]),
    ]

    /// Same dot-product tolerance as Conv: each output sums at most
    /// K = C/group·∏kernel products and a bias.
    @Test(arguments: cases)
    func matchesReference(_ cs: Case) throws {
        var rng = SeededGenerator(seed: UInt64(cs.xShape.reduce(7, *)))
        let rank = cs.xShape.count - 2
        let x = randomValues(product(cs.xShape), &rng), w = randomValues(product(cs.wShape), &rng)
        let m = cs.wShape[1] * cs.group
        let b = randomValues(m, &rng)
        let attrs: [Attribute] = [.int("group", Int64(cs.group)), .ints("strides", cs.strides.map(Int64.init)),
                                  .ints("pads", cs.pads.map(Int64.init)), .ints("dilations", cs.dilations.map(Int64.init)),
                                  .ints("output_padding", cs.outputPadding.map(Int64.init))]
        let y = try runNode("ConvTranspose", [tensor(cs.xShape, x), tensor(cs.wShape, w), tensor([m], b)], attributes: attrs)[0]
        var outSpatial: [Int] = []
        for a in 0..<rank {
            let full: Int = cs.strides[a] * (cs.xShape[2 + a] - 1) + cs.outputPadding[a] + (cs.wShape[2 + a] - 1) * cs.dilations[a] + 1
            outSpatial.append(full - cs.pads[a] - cs.pads[rank + a])
        }
        #expect(y.shape == [cs.xShape[0], m] + outSpatial)
        let expected = Self.reference(x: x, xShape: cs.xShape, w: w, wShape: cs.wShape, b: b, group: cs.group,
                                      strides: cs.strides, pads: cs.pads, dilations: cs.dilations, outSpatial: outSpatial)
        let scale = Self.reference(x: x.map(abs), xShape: cs.xShape, w: w.map(abs), wShape: cs.wShape, b: b.map(abs),
                                   group: cs.group, strides: cs.strides, pads: cs.pads, dilations: cs.dilations,
                                   outSpatial: outSpatial)
        let k = Double(cs.xShape[1] / cs.group * product(Array(cs.wShape[2...])))
        expectClose(y.doubles(), expected, bound: scale.map { (k + 2) * u32 * $0 }, cs.name)
    }

    /// output_shape fixes the output size; the padding it implies is split
    /// as the spec says (odd unit at the beginning unless SAME_UPPER).
    @Test func outputShapeAndAutoPad() throws {
        var rng = SeededGenerator(seed: 5)
        let xShape = [1, 2, 3, 3], wShape = [2, 2, 3, 3]
        let x = randomValues(18, &rng), w = randomValues(36, &rng)
        for (autoPad, begin) in [("NOTSET", 1), ("SAME_UPPER", 0)] {
            // Full output 2·(3−1) + 3 = 7; output_shape 6 ⇒ total padding 1.
            let y = try runNode("ConvTranspose", [tensor(xShape, x), tensor(wShape, w)],
                                attributes: [.ints("strides", [2, 2]), .ints("output_shape", [6, 6]), .string("auto_pad", autoPad)])[0]
            #expect(y.shape == [1, 2, 6, 6])
            let pads = [begin, begin, 1 - begin, 1 - begin]
            let expected = Self.reference(x: x, xShape: xShape, w: w, wShape: wShape, b: nil, group: 1, strides: [2, 2],
                                          pads: pads, dilations: [1, 1], outSpatial: [6, 6])
            expectClose(y.doubles(), expected, bound: expected.map { _ in 20 * u32 * 18 }, "output_shape \(autoPad)")
        }
    }
}
