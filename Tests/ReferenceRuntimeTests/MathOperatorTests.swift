import Testing
import ONNXGraph
@testable import ReferenceRuntime

/// Semantics of the operators added for the backend node suite whose
/// corner cases are easy to get wrong; every expected value is worked out
/// by hand.
@Suite("Mod, Where, comparisons, Range")
struct MathOperatorTests {
    /// Mod with fmod = 0 on integers: the remainder has the divisor's sign
    /// (−7 mod 3 = 2, 7 mod −3 = −2, −7 mod −3 = −1); with fmod = 1 the
    /// dividend's sign, as C's % (−7 fmod 3 = −1, 7 fmod −3 = 1).
    @Test func integerModSigns() throws {
        let a = RuntimeTensor(shape: [4], ints: [-7, 7, -7, 6])
        let b = RuntimeTensor(shape: [4], ints: [3, -3, -3, 3])
        let floored = try runNode("Mod", [a, b])[0]
        #expect(floored.int64s() == [2, -2, -1, 0])
        let truncated = try runNode("Mod", [a, b], attributes: [.int("fmod", 1)])[0]
        #expect(truncated.int64s() == [-1, 1, -1, 0])
        #expect(throws: RuntimeError.self) { try runNode("Mod", [a, RuntimeTensor(shape: [], ints: [0])]) }
    }

    /// Float Mod with fmod = 1 is C's fmod: −5.5 fmod 2 = −1.5, 5.5 fmod −2 = 1.5;
    /// with fmod = 0 the divisor's sign: −5.5 mod 2 = 0.5, 5.5 mod −2 = −0.5.
    @Test func floatModSigns() throws {
        let a = RuntimeTensor(shape: [2], floats: [-5.5, 5.5]), b = RuntimeTensor(shape: [2], floats: [2, -2])
        #expect(try runNode("Mod", [a, b], attributes: [.int("fmod", 1)])[0].doubles() == [-1.5, 1.5])
        #expect(try runNode("Mod", [a, b])[0].doubles() == [0.5, -0.5])
    }

    /// Where broadcasts all three: condition [2, 1], X [3], Y scalar → [2, 3].
    @Test func whereBroadcastsThreeWays() throws {
        let condition = RuntimeTensor(shape: [2, 1], ints: [1, 0], elementType: .bool)
        let x = RuntimeTensor(shape: [3], floats: [1, 2, 3]), y = RuntimeTensor(shape: [], floats: [-1])
        let out = try runNode("Where", [condition, x, y])[0]
        #expect(out.shape == [2, 3])
        #expect(out.elementType == .float)
        #expect(out.doubles() == [1, 2, 3, -1, -1, -1])
        // Integer branches stay integers (no detour through Double).
        let big = RuntimeTensor(shape: [1], ints: [Int64.max]), small = RuntimeTensor(shape: [1], ints: [Int64.min])
        #expect(try runNode("Where", [condition, big, small])[0].int64s() == [Int64.max, Int64.min])
    }

    /// Comparisons give bool tensors and compare int64 values exactly
    /// (2^53 + 1 and 2^53 are equal as Doubles).
    @Test func comparisonsAreBoolAndExact() throws {
        let a = RuntimeTensor(shape: [2], ints: [(1 << 53) + 1, 3]), b = RuntimeTensor(shape: [2], ints: [1 << 53, 3])
        let equal = try runNode("Equal", [a, b])[0]
        #expect(equal.elementType == .bool)
        #expect(equal.int64s() == [0, 1])
        #expect(try runNode("Greater", [a, b])[0].int64s() == [1, 0])
        #expect(try runNode("LessOrEqual", [a, b])[0].int64s() == [0, 1])
    }

    /// Range's length is ⌈(limit − start) / delta⌉, never negative:
    /// (10, 4, −3) → 10, 7; (1, 1, 1) → empty; 0.5 to 2 by 0.5 → 0.5, 1, 1.5.
    @Test func rangeLengths() throws {
        func r(_ s: Int64, _ l: Int64, _ d: Int64) throws -> [Int64] {
            try runNode("Range", [RuntimeTensor(shape: [], ints: [s]), RuntimeTensor(shape: [], ints: [l]),
                                  RuntimeTensor(shape: [], ints: [d])])[0].int64s()
        }
        #expect(try r(10, 4, -3) == [10, 7])
        #expect(try r(1, 1, 1) == [])
        #expect(try r(0, 5, 2) == [0, 2, 4])
        #expect(try r(0, -5, 2) == [])
        let f = try runNode("Range", [RuntimeTensor(shape: [], floats: [0.5]), RuntimeTensor(shape: [], floats: [2]),
                                      RuntimeTensor(shape: [], floats: [0.5])])[0]
        #expect(f.doubles() == [0.5, 1, 1.5])
    }
}
