import Testing
@testable import ONNXGraph
import TestSupport

// MARK: - Independent decoders

/// float16 bits to Double from the IEEE fields (sign, 5-bit exponent, 10-bit fraction).
private func decodeHalf(_ bits: UInt16) -> Double {
    let sign: Double = bits & 0x8000 == 0 ? 1 : -1
    let e = Int(bits >> 10 & 0x1F), f = Double(bits & 0x3FF)
    if e == 0x1F { return f == 0 ? sign * .infinity : .nan }
    if e == 0 { return sign * f * 0x1p-24 }
    return sign * (1024 + f) * Double(sign: .plus, exponent: e - 25, significand: 1)
}

/// bfloat16 bits to Double from the fields (sign, 8-bit exponent, 7-bit fraction).
private func decodeBFloat16(_ bits: UInt16) -> Double {
    let sign: Double = bits & 0x8000 == 0 ? 1 : -1
    let e = Int(bits >> 7 & 0xFF), f = Double(bits & 0x7F)
    if e == 0xFF { return f == 0 ? sign * .infinity : .nan }
    if e == 0 { return sign * f * 0x1p-133 }
    return sign * (128 + f) * Double(sign: .plus, exponent: e - 134, significand: 1)
}

/// Magnitude of a positive finite bit pattern, or the value the next pattern
/// after the largest finite one would have (2^16 for float16, 2^128 for
/// bfloat16): infinity wins ties against the odd largest finite value.
private func magnitude(_ bits: UInt16, half: Bool) -> Double {
    if half { return bits == 0x7C00 ? 0x1p16 : decodeHalf(bits) }
    return bits == 0x7F80 ? 0x1p128 : decodeBFloat16(bits)
}

/// Checks that `bits` is the correctly rounded (nearest, ties to even)
/// encoding of `d`, by comparing with its neighbours. Returns a description of
/// the problem, or nil.
private func roundingProblem(_ d: Double, _ bits: UInt16, half: Bool) -> String? {
    let signBit: UInt16 = d.sign == .minus ? 0x8000 : 0
    guard bits & 0x8000 == signBit else { return "sign of \(d) lost: \(hex(bits))" }
    let mag = bits & 0x7FFF
    let infinity: UInt16 = half ? 0x7C00 : 0x7F80
    guard mag <= infinity else { return "\(d) gave NaN \(hex(bits))" }
    let x = d.magnitude
    let v = magnitude(mag, half: half)
    var neighbours: [UInt16] = []
    if mag > 0 { neighbours.append(mag - 1) }
    if mag < infinity { neighbours.append(mag + 1) }
    for n in neighbours {
        let w = magnitude(n, half: half)
        let (dv, dw) = ((x - v).magnitude, (x - w).magnitude)
        if dw < dv { return "\(d) → \(hex(bits)) but \(hex(n | signBit)) is nearer" }
        if dw == dv && mag & 1 == 1 { return "\(d) is a tie; \(hex(bits)) is odd, \(hex(n | signBit)) even" }
    }
    return nil
}

private func hex(_ bits: UInt16) -> String { "0x" + String(bits, radix: 16, uppercase: true) }

/// Checks a Double → 16-bit float conversion at every midpoint between
/// neighbouring finite values (`infinity` stands for the next power of two):
/// the midpoint ties to even, one Double either side goes to the nearer
/// value, and so do values off the midpoint by less than half a Float ulp —
/// where a conversion through Float would land on the midpoint and tie to
/// even instead. Returns a description of each wrong result.
private func midpointErrors(infinity: UInt16, half: Bool, decode: (UInt16) -> Double,
                            convert: (Double) -> UInt16) -> [String] {
    var wrong: [String] = []
    for low in UInt16(0)..<infinity {
        let high = low + 1
        let a = decode(low), b = magnitude(high, half: half)
        let m = (a + b) / 2  // exact: both types have far fewer significant bits than Double
        for sign in [1.0, -1.0] {
            let s: UInt16 = sign < 0 ? 0x8000 : 0
            let even = (low & 1 == 0 ? low : high) | s
            func check(_ d: Double, _ want: UInt16) {
                let got = convert(d)
                if got != want { wrong.append("\(d): \(hex(got)), want \(hex(want))") }
            }
            check(sign * m, even)
            check(sign * m.nextDown, low | s)
            check(sign * m.nextUp, high | s)
            let delta = m * 0x1p-30
            check(sign * (m + delta), high | s)
            check(sign * (m - delta), low | s)
        }
    }
    return wrong
}

/// Deterministic doubles spread over binades `exponents`, both signs, random significands.
private func sampleDoubles(_ count: Int, exponents: ClosedRange<Int>, seed: UInt64) -> [Double] {
    var rng = SeededGenerator(seed: seed)
    return (0..<count).map { _ in
        let e = Int.random(in: exponents, using: &rng)
        let significand = Double(sign: .plus, exponent: 0, significand: 1)
            + Double(rng.next() >> 12) * 0x1p-52  // uniform 52-bit fraction
        let v = Double(sign: rng.next() & 1 == 0 ? .plus : .minus, exponent: e, significand: significand)
        return v
    }
}

// MARK: - Tables

private let halfOverflowCases: [(Double, UInt16)] = [
    (65504.0, 0x7BFF), (65519.99999999999, 0x7BFF), (65520.0.nextDown, 0x7BFF),
    (65520.0, 0x7C00), (65536.0, 0x7C00), (1e10, 0x7C00), (.greatestFiniteMagnitude, 0x7C00),
    (.infinity, 0x7C00), (-65504.0, 0xFBFF), (-65520.0, 0xFC00), (-.infinity, 0xFC00),
]

private let halfSmallCases: [(Double, UInt16)] = [
    (0.0, 0x0000), (-0.0, 0x8000), (1e-300, 0x0000), (-1e-300, 0x8000),
    (0x1p-24, 0x0001), (0x1p-25, 0x0000), (0x1p-25.nextUp, 0x0001), (3 * 0x1p-25, 0x0002),
    (5 * 0x1p-25, 0x0002), (1023 * 0x1p-24, 0x03FF), (1023.5 * 0x1p-24, 0x0400), (0x1p-14, 0x0400),
    (1.0, 0x3C00), (-2.0, 0xC000), (1.0 / 3.0, 0x3555), (0.1, 0x2E66),
]

private let bf16OverflowCases: [(Double, UInt16)] = [
    (0x1.FEp127, 0x7F7F), (0x1.FFp127.nextDown, 0x7F7F), (0x1.FFp127, 0x7F80),
    (0x1.FF4p127, 0x7F80), (Double(Float.greatestFiniteMagnitude), 0x7F80), (1e39, 0x7F80),
    (.greatestFiniteMagnitude, 0x7F80), (.infinity, 0x7F80), (-0x1.FFp127, 0xFF80), (-.infinity, 0xFF80),
]

private let bf16SmallCases: [(Double, UInt16)] = [
    (0.0, 0x0000), (-0.0, 0x8000), (1e-300, 0x0000), (-1e-300, 0x8000), (0x1p-133, 0x0001),
    (0x1p-134, 0x0000), (0x1p-134.nextUp, 0x0001), (0x1p-126, 0x0080), (1.0, 0x3F80), (-2.5, 0xC020),
    (1.0 / 3.0, 0x3EAB), (0.1, 0x3DCD),
]

// MARK: - float16

@Suite("float16 conversions")
struct HalfConversionTests {
    @Test("halfToDouble decodes all 65536 patterns exactly")
    func decodeAll() {
        var wrong: [String] = []
        for bits in UInt16.min...UInt16.max {
            let got = halfToDouble(bits), want = decodeHalf(bits)
            if want.isNaN ? !got.isNaN : got != want || got.sign != want.sign { wrong.append(hex(bits)) }
            #if !((os(macOS) || targetEnvironment(macCatalyst)) && arch(x86_64))
            let swift = Double(Float16(bitPattern: bits))
            if swift.isNaN ? !got.isNaN : swift != got { wrong.append("\(hex(bits)) vs Float16") }
            #endif
        }
        #expect(wrong.isEmpty, "\(wrong.prefix(10))")
    }

    @Test("Every float16 value converts back to its own bits")
    func roundTripAll() {
        var wrong: [String] = []
        for bits in UInt16.min...UInt16.max where !decodeHalf(bits).isNaN {
            let back = doubleToHalf(halfToDouble(bits))
            if back != bits { wrong.append("\(hex(bits)) → \(hex(back))") }
        }
        #expect(wrong.isEmpty, "\(wrong.prefix(10))")
    }

    @Test("Every midpoint between neighbours ties to even; one Double either side goes to the nearer")
    func midpoints() {
        let wrong = midpointErrors(infinity: 0x7C00, half: true, decode: decodeHalf, convert: doubleToHalf)
        #expect(wrong.isEmpty, "\(wrong.count) wrong, e.g. \(wrong.prefix(8))")
    }

    @Test("The Float double-rounding trap is real and avoided")
    func doubleRoundingTrap() {
        // 1 + 2^-11 is halfway between 1 (0x3C00) and 1 + 2^-10 (0x3C01).
        let d = 1 + 0x1p-11 + 0x1p-40
        #expect(Float(d) == Float(1 + 0x1p-11))  // Float rounds onto the midpoint...
        #if !((os(macOS) || targetEnvironment(macCatalyst)) && arch(x86_64))
        #expect(Float16(Float(d)).bitPattern == 0x3C00)  // ...which then ties down: wrong
        #endif
        #expect(doubleToHalf(d) == 0x3C01)  // d is above the midpoint: up
    }

    #if !((os(macOS) || targetEnvironment(macCatalyst)) && arch(x86_64))
    @Test("doubleToHalf agrees with Swift's Float16(Double) on 400 000 doubles")
    func agreesWithFloat16() {
        // Swift's Double → Float16 conversion rounds once (LLVM fptrunc).
        var wrong: [String] = []
        let samples = sampleDoubles(300_000, exponents: -27...17, seed: 1)
            + sampleDoubles(100_000, exponents: -1074...1023, seed: 2)
        for d in samples {
            let got = doubleToHalf(d), want = Float16(d).bitPattern
            if got != want { wrong.append("\(d): \(hex(got)) vs \(hex(want))") }
        }
        #expect(wrong.isEmpty, "\(wrong.count) differ, e.g. \(wrong.prefix(8))")
    }
    #endif

    @Test("Sampled doubles round to the nearest float16, ties to even")
    func nearestByNeighbours() {
        var wrong: [String] = []
        for d in sampleDoubles(200_000, exponents: -27...16, seed: 3) {
            if d.magnitude >= 65520 { continue }
            if let problem = roundingProblem(d, doubleToHalf(d), half: true) { wrong.append(problem) }
        }
        #expect(wrong.isEmpty, "\(wrong.prefix(8))")
    }

    @Test("The neighbour check itself rejects wrong roundings")
    func checkerRejects() {
        #expect(roundingProblem(1 + 0x1p-11 + 0x1p-40, 0x3C00, half: true) != nil)  // not nearest
        #expect(roundingProblem(1 + 0x1p-11 + 0x1p-40, 0x3C01, half: true) == nil)
        #expect(roundingProblem(1 + 3 * 0x1p-11, 0x3C01, half: true) != nil)  // tie to odd
        #expect(roundingProblem(1 + 3 * 0x1p-11, 0x3C02, half: true) == nil)
        #expect(roundingProblem(-1, 0x3C00, half: true) != nil)  // sign
        #expect(roundingProblem(65519, 0x7C00, half: true) != nil)
        #expect(roundingProblem(1 + 0x1p-8 + 0x1p-40, 0x3F80, half: false) != nil)
        #expect(roundingProblem(1 + 0x1p-8 + 0x1p-40, 0x3F81, half: false) == nil)
    }

    @Test("Overflow: 65520 (halfway past 65504) and above give infinity", arguments: halfOverflowCases)
    func overflow(_ d: Double, _ bits: UInt16) {
        #expect(doubleToHalf(d) == bits)
    }

    @Test("Zeros, subnormals and the normal boundary", arguments: halfSmallCases)
    func smallValues(_ d: Double, _ bits: UInt16) {
        #expect(doubleToHalf(d) == bits)
    }

    @Test("NaN stays NaN")
    func nan() {
        for d in [Double.nan, -Double.nan, Double.signalingNaN] {
            let bits = doubleToHalf(d)
            #expect(bits & 0x7C00 == 0x7C00 && bits & 0x03FF != 0)
        }
        #expect(halfToDouble(0x7E00).isNaN)
        #expect(halfToDouble(0xFC01).isNaN)
    }
}

// MARK: - bfloat16

@Suite("bfloat16 conversions")
struct BFloat16ConversionTests {
    @Test("bfloat16ToDouble decodes all 65536 patterns exactly")
    func decodeAll() {
        var wrong: [String] = []
        for bits in UInt16.min...UInt16.max {
            let got = bfloat16ToDouble(bits), want = decodeBFloat16(bits)
            if want.isNaN ? !got.isNaN : got != want || got.sign != want.sign { wrong.append(hex(bits)) }
        }
        #expect(wrong.isEmpty, "\(wrong.prefix(10))")
    }

    @Test("Every bfloat16 value converts back to its own bits")
    func roundTripAll() {
        var wrong: [String] = []
        for bits in UInt16.min...UInt16.max where !decodeBFloat16(bits).isNaN {
            let back = doubleToBFloat16(decodeBFloat16(bits))
            if back != bits { wrong.append("\(hex(bits)) → \(hex(back))") }
        }
        #expect(wrong.isEmpty, "\(wrong.prefix(10))")
    }

    @Test("Every midpoint ties to even; just off it (less than half a Float ulp) goes to the nearer")
    func midpoints() {
        let wrong = midpointErrors(infinity: 0x7F80, half: false, decode: decodeBFloat16, convert: doubleToBFloat16)
        #expect(wrong.isEmpty, "\(wrong.count) wrong, e.g. \(wrong.prefix(8))")
    }

    @Test("The trap cases really differ from rounding through Float")
    func doubleRoundingTrap() {
        // 1 + 2^-8 is halfway between 1 (0x3F80) and 1 + 2^-7 (0x3F81).
        let up = 1 + 0x1p-8 + 0x1p-40, down = 1 + 0x1p-7 + 0x1p-8 - 0x1p-40
        #expect(Float(up) == Float(1 + 0x1p-8))
        #expect(Float(down) == Float(1 + 0x1p-7 + 0x1p-8))
        // Rounding the Float to nearest even again would give 0x3F80 and 0x3F82.
        func viaFloat(_ d: Double) -> UInt16 {
            let bits = Float(d).bitPattern
            return UInt16((bits + 0x7FFF + (bits >> 16 & 1)) >> 16)
        }
        #expect(viaFloat(up) == 0x3F80)
        #expect(viaFloat(down) == 0x3F82)
        #expect(doubleToBFloat16(up) == 0x3F81)
        #expect(doubleToBFloat16(down) == 0x3F81)
        // The same in the Float subnormal range, where Float has fewer bits.
        let tiny = 3 * 0x1p-134 + 0x1p-160  // above the midpoint of 0x0001 and 0x0002
        #expect(doubleToBFloat16(tiny) == 0x0002)
        #expect(doubleToBFloat16(3 * 0x1p-134 - 0x1p-160) == 0x0001)
    }

    @Test("Sampled doubles round to the nearest bfloat16, ties to even")
    func nearestByNeighbours() {
        var wrong: [String] = []
        let samples = sampleDoubles(200_000, exponents: -140...127, seed: 4)
            + sampleDoubles(50_000, exponents: -1074...1023, seed: 5)
        for d in samples where d.magnitude < 0x1.FFp127 {
            if let problem = roundingProblem(d, doubleToBFloat16(d), half: false) { wrong.append(problem) }
        }
        #expect(wrong.isEmpty, "\(wrong.prefix(8))")
    }

    @Test("Overflow: halfway past the largest (0x1.FEp127) gives infinity", arguments: bf16OverflowCases)
    func overflow(_ d: Double, _ bits: UInt16) {
        #expect(doubleToBFloat16(d) == bits)
    }

    @Test("Zeros, subnormals and ordinary values", arguments: bf16SmallCases)
    func smallValues(_ d: Double, _ bits: UInt16) {
        #expect(doubleToBFloat16(d) == bits)
    }

    @Test("NaN stays NaN")
    func nan() {
        for d in [Double.nan, -Double.nan, Double.signalingNaN] {
            let bits = doubleToBFloat16(d)
            #expect(bits & 0x7F80 == 0x7F80 && bits & 0x007F != 0)
        }
        #expect(bfloat16ToDouble(0x7FC0).isNaN)
    }
}

// MARK: - Tensor.doubles()

/// Little-endian bytes of `values`.
private func bytes<T: FixedWidthInteger>(_ values: [T]) -> ByteBuffer {
    ByteBuffer(values.flatMap { v in withUnsafeBytes(of: v.littleEndian) { Array($0) } })
}

private func tensor(_ type: DataType, _ count: Int, fill: (inout Tensor) -> Void) -> Tensor {
    var t = Tensor(name: "t", elementType: type, dims: [Int64(count)])
    fill(&t)
    return t
}

/// One way of storing a tensor's data and the numbers it must read as.
struct StoredCase: Sendable, CustomTestStringConvertible {
    let label: String
    let make: @Sendable () -> Tensor
    let expected: [Double]
    var testDescription: String { label }
}

private let halfBits: [UInt16] = [0x3C00, 0xC000, 0x0001, 0x7BFF, 0xFC00, 0x3555, 0x8000]
private let halfValues: [Double] = [1, -2, 0x1p-24, 65504, -.infinity, 0x1.554p-2, -0.0]
private let bf16Bits: [UInt16] = [0x3F80, 0xC020, 0x7F7F, 0x0001, 0x3EAB, 0xFF80]
private let bf16Values: [Double] = [1, -2.5, 0x1.FEp127, 0x1p-133, 0x1.56p-2, -.infinity]
private let floats: [Float] = [1.5, -2.25, .pi, .greatestFiniteMagnitude, .leastNonzeroMagnitude, -0.0]
private let doubles: [Double] = [1.5, -2.25, .pi, .greatestFiniteMagnitude, .leastNonzeroMagnitude, 0x1p-1000]

let storedCases: [StoredCase] = [
    StoredCase(label: "float raw_data", make: {
        tensor(.float, floats.count) { $0.rawData = bytes(floats.map(\.bitPattern)) }
    }, expected: floats.map(Double.init)),
    StoredCase(label: "float float_data", make: {
        tensor(.float, floats.count) { $0.floatData = bytes(floats.map(\.bitPattern)) }
    }, expected: floats.map(Double.init)),
    StoredCase(label: "double raw_data", make: {
        tensor(.double, doubles.count) { $0.rawData = bytes(doubles.map(\.bitPattern)) }
    }, expected: doubles),
    StoredCase(label: "double double_data", make: {
        tensor(.double, doubles.count) { $0.doubleData = bytes(doubles.map(\.bitPattern)) }
    }, expected: doubles),
    StoredCase(label: "float16 raw_data", make: {
        tensor(.float16, halfBits.count) { $0.rawData = bytes(halfBits) }
    }, expected: halfValues),
    StoredCase(label: "float16 int32_data (bits, zero-extended)", make: {
        tensor(.float16, halfBits.count) { $0.int32Data = bytes(halfBits.map { Int32($0) }) }
    }, expected: halfValues),
    StoredCase(label: "bfloat16 raw_data", make: {
        tensor(.bfloat16, bf16Bits.count) { $0.rawData = bytes(bf16Bits) }
    }, expected: bf16Values),
    StoredCase(label: "bfloat16 int32_data", make: {
        tensor(.bfloat16, bf16Bits.count) { $0.int32Data = bytes(bf16Bits.map { Int32($0) }) }
    }, expected: bf16Values),
    StoredCase(label: "int8 raw_data", make: {
        tensor(.int8, 4) { $0.rawData = bytes([Int8.min, -1, 0, .max]) }
    }, expected: [-128, -1, 0, 127]),
    StoredCase(label: "int8 int32_data (sign-extended)", make: {
        tensor(.int8, 4) { $0.int32Data = bytes([Int32(-128), -1, 0, 127]) }
    }, expected: [-128, -1, 0, 127]),
    StoredCase(label: "uint8 raw_data", make: {
        tensor(.uint8, 3) { $0.rawData = bytes([UInt8(0), 7, 255]) }
    }, expected: [0, 7, 255]),
    StoredCase(label: "uint8 int32_data", make: {
        tensor(.uint8, 3) { $0.int32Data = bytes([Int32(0), 7, 255]) }
    }, expected: [0, 7, 255]),
    StoredCase(label: "bool raw_data", make: {
        tensor(.bool, 3) { $0.rawData = bytes([UInt8(1), 0, 1]) }
    }, expected: [1, 0, 1]),
    StoredCase(label: "bool int32_data", make: {
        tensor(.bool, 3) { $0.int32Data = bytes([Int32(1), 0, 1]) }
    }, expected: [1, 0, 1]),
    StoredCase(label: "int16 raw_data", make: {
        tensor(.int16, 3) { $0.rawData = bytes([Int16.min, -2, .max]) }
    }, expected: [-32768, -2, 32767]),
    StoredCase(label: "int16 int32_data", make: {
        tensor(.int16, 3) { $0.int32Data = bytes([Int32(-32768), -2, 32767]) }
    }, expected: [-32768, -2, 32767]),
    StoredCase(label: "uint16 raw_data", make: {
        tensor(.uint16, 2) { $0.rawData = bytes([UInt16.max, 3]) }
    }, expected: [65535, 3]),
    StoredCase(label: "uint16 int32_data", make: {
        tensor(.uint16, 2) { $0.int32Data = bytes([Int32(65535), 3]) }
    }, expected: [65535, 3]),
    StoredCase(label: "int32 raw_data", make: {
        tensor(.int32, 3) { $0.rawData = bytes([Int32.min, 0, .max]) }
    }, expected: [-2147483648, 0, 2147483647]),
    StoredCase(label: "int32 int32_data", make: {
        tensor(.int32, 3) { $0.int32Data = bytes([Int32.min, 0, .max]) }
    }, expected: [-2147483648, 0, 2147483647]),
    StoredCase(label: "uint32 raw_data", make: {
        tensor(.uint32, 2) { $0.rawData = bytes([UInt32.max, 1]) }
    }, expected: [4294967295, 1]),
    StoredCase(label: "uint32 uint64_data", make: {
        tensor(.uint32, 2) { $0.uint64Data = bytes([UInt64(UInt32.max), 1]) }
    }, expected: [4294967295, 1]),
    StoredCase(label: "int64 raw_data", make: {
        tensor(.int64, 3) { $0.rawData = bytes([Int64(-1) << 53, 1 << 53, -1]) }
    }, expected: [-0x1p53, 0x1p53, -1]),
    StoredCase(label: "int64 int64_data", make: {
        tensor(.int64, 3) { $0.int64Data = bytes([Int64(-1) << 53, 1 << 53, -1]) }
    }, expected: [-0x1p53, 0x1p53, -1]),
    StoredCase(label: "uint64 raw_data", make: {
        tensor(.uint64, 2) { $0.rawData = bytes([UInt64(1) << 53, 0]) }
    }, expected: [0x1p53, 0]),
    StoredCase(label: "uint64 uint64_data", make: {
        tensor(.uint64, 2) { $0.uint64Data = bytes([UInt64(1) << 53, 0]) }
    }, expected: [0x1p53, 0]),
]

@Suite("Tensor numbers")
struct TensorDoublesTests {
    @Test("doubles() reads every supported type from raw_data and from its typed field", arguments: storedCases)
    func readStored(_ c: StoredCase) throws {
        let got = try c.make().doubles()
        #expect(got.count == c.expected.count)
        for (g, e) in zip(got, c.expected) {
            #expect(g == e && g.sign == e.sign, "\(g) vs \(e)")
        }
    }

    @Test("Shapes: a scalar has one element, an empty dimension none")
    func shapes() throws {
        var scalar = Tensor(name: "s", elementType: .float, dims: [])
        scalar.rawData = bytes([Float(2.5).bitPattern])
        #expect(try scalar.doubles() == [2.5])
        var empty = Tensor(name: "e", elementType: .float, dims: [3, 0])
        empty.rawData = .empty
        #expect(try empty.doubles() == [])
        let multi = makeTensor("m", .double, dims: [2, 3], values: [1, 2, 3, 4, 5, 6])
        #expect(try multi.doubles() == [1, 2, 3, 4, 5, 6])
    }

    @Test("External data is read through its ExternalBytes")
    func external() throws {
        var t = Tensor(name: "x", elementType: .float16, dims: [2])
        t.dataLocation = 1
        #expect(throws: TensorDataError.self) { try t.doubles() }  // not resolved
        t.externalBytes = ExternalBytes(memory: bytes([UInt16(0x3C00), 0x4000]))
        #expect(try t.doubles() == [1, 2])
    }

    @Test("Unreadable data throws a TensorDataError naming the tensor")
    func errors() {
        var short = Tensor(name: "short", elementType: .float, dims: [3])
        short.rawData = bytes([Float(1).bitPattern, Float(2).bitPattern])
        var typedShort = Tensor(name: "typedShort", elementType: .float16, dims: [3])
        typedShort.int32Data = bytes([Int32(0x3C00)])
        var string = Tensor(name: "string", elementType: .string, dims: [1])
        string.stringData = [ByteBuffer(Array("a".utf8))]
        var complex = Tensor(name: "complex", elementType: .complex64, dims: [1])
        complex.rawData = bytes([UInt64(0)])
        var negative = Tensor(name: "negative", elementType: .float, dims: [-1])
        negative.rawData = .empty
        let unknown = Tensor(name: "unknown", elementType: DataType(rawValue: 99), dims: [1])
        for t in [short, typedShort, string, complex, negative, unknown] {
            let error = #expect(throws: TensorDataError.self, "\(t.name!)") { try t.doubles() }
            #expect(error?.tensor == t.name)
        }
    }

    @Test("Tensor(values:) rounds once into each float type and reads back", arguments: [
        DataType.float, .double, .float16, .bfloat16,
    ])
    func encodeRoundTrip(_ type: DataType) throws {
        let values: [Double] = [0, -0.0, 1, -3.5, 0.1, 1.0 / 3.0, 1e-3, 123.456, -65504]
        let t = try #require(Tensor(name: "v", elementType: type, dims: [3, 3], values: values))
        #expect(t.elementType == type)
        #expect(t.dims == [3, 3])
        #expect(t.name == "v")
        let back = try t.doubles()
        let expected: [Double] = values.map { v in
            switch type {
            case .float: Double(Float(v))
            case .double: v
            case .float16: decodeHalf(doubleToHalf(v))
            default: decodeBFloat16(doubleToBFloat16(v))
            }
        }
        #expect(back == expected)
        // Reading a rounded value and writing it again changes nothing.
        #expect(Tensor(name: "v", elementType: type, dims: [3, 3], values: back)?.rawData == t.rawData)
    }

    @Test("Tensor(values:) refuses types it cannot write", arguments: [DataType.int8, .int32, .int64, .string, .bool])
    func encodeRefuses(_ type: DataType) {
        #expect(Tensor(name: "v", elementType: type, dims: [1], values: [1]) == nil)
    }

    @Test("float16 encoding overflows to infinity at 65520")
    func encodeOverflow() throws {
        let t = try #require(Tensor(name: nil, elementType: .float16, dims: [3], values: [65519.9, 65520, -70000]))
        #expect(try t.doubles() == [65504, .infinity, -.infinity])
    }

    @Test("replacingData keeps name, type, shape and metadata, and clears the typed fields")
    func replacingData() throws {
        var t = Tensor(name: "w", elementType: .float, dims: [2])
        t.floatData = bytes([Float(1).bitPattern, Float(2).bitPattern])
        t.docString = "doc"
        t.metadataProps = [StringPair(key: "k", value: "v")]
        let r = try #require(t.replacingData(with: [3, 4]))
        #expect(r.name == "w" && r.elementType == .float && r.dims == [2] && r.docString == "doc")
        #expect(r.metadataProps == t.metadataProps)
        #expect(r.floatData.count == 0)
        #expect(try r.doubles() == [3, 4])

        var ext = Tensor(name: "e", elementType: .float16, dims: [1])
        ext.dataLocation = 1
        ext.externalData = [StringPair(key: "location", value: "w.bin")]
        ext.externalBytes = ExternalBytes(memory: bytes([UInt16(0x3C00)]))
        let re = try #require(ext.replacingData(with: [2]))
        #expect(re.location == .external && re.rawData == nil && re.externalData == ext.externalData)
        #expect(try re.doubles() == [2])
    }
}
