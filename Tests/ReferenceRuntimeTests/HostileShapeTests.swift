import Testing
import ONNXGraph
@testable import ReferenceRuntime
import TestSupport

/// Shapes and sizes computed from data come from files that may be hostile:
/// each must be an error (RuntimeError), never a trap or a huge allocation.
@Suite("Hostile shapes")
struct HostileShapeTests {
    let x = tensor([2, 3], [1, 2, 3, 4, 5, 6])
    let big = Int(Int64.max)

    @Test func shapeArithmeticIsChecked() {
        #expect(throws: RuntimeError.self) { try runNode("Reshape", [x, ints([1 << 40, 1 << 40, -1])]) }
        #expect(throws: RuntimeError.self) { try runNode("ConstantOfShape", [ints([1 << 20, 1 << 20])]) }
        #expect(throws: RuntimeError.self) { try runNode("ConstantOfShape", [ints([-1])]) }
        #expect(throws: RuntimeError.self) { try runNode("Expand", [x, ints([1 << 30, 1 << 30, 1])]) }
        #expect(throws: RuntimeError.self) { try runNode("Pad", [x, ints([0, big, 0, big])]) }
        #expect(throws: RuntimeError.self) { try runNode("Pad", [x, ints([0, -10, 0, 0])]) }
        #expect(throws: RuntimeError.self) { try runNode("Resize", [x, nil, tensor([2], [1e30, 1])]) }
        #expect(throws: RuntimeError.self) { try runNode("Resize", [x, nil, tensor([2], [.nan, 1])]) }
        #expect(throws: RuntimeError.self) { try runNode("Resize", [tensor([0, 3], []), nil, nil, ints([4, 3])]) }
        #expect(throws: RuntimeError.self) { try runNode("Split", [x, ints([big, -big + 3])], attributes: [.int("axis", 1)], outputs: 2) }
        #expect(throws: RuntimeError.self) { try runNode("Cast", [x], attributes: [.int("to", 8)]) }  // string
    }

    /// Integer Clip bounds at the ends of int64 are compared as integers
    /// (through Double, 2⁶³ − 1 rounds to 2⁶³ and converting back traps).
    @Test func integerClipAtInt64Extremes() throws {
        let v = RuntimeTensor(shape: [3], ints: [Int64.min, -5, Int64.max])
        let top = RuntimeTensor(shape: [], ints: [Int64.max]), bottom = RuntimeTensor(shape: [], ints: [Int64.min])
        #expect(try runNode("Clip", [v, top], opset: 13)[0].int64s() == [Int64.max, Int64.max, Int64.max])
        #expect(try runNode("Clip", [v, nil, bottom], opset: 13)[0].int64s() == [Int64.min, Int64.min, Int64.min])
        #expect(try runNode("Clip", [v, RuntimeTensor(shape: [], ints: [Int64.max - 1])], opset: 13)[0].int64s()
                == [Int64.max - 1, Int64.max - 1, Int64.max])
        #expect(try runNode("Clip", [v], opset: 13)[0].int64s() == [Int64.min, -5, Int64.max])
    }

    @Test func extremeButValidArgumentsWork() throws {
        let s = try runNode("Slice", [x, ints([0]), ints([big]), ints([1]), ints([big])])[0]
        expectEqual(s, shape: [2, 1], [1, 4], "Slice with a huge step")
        let back = try runNode("Slice", [x, ints([big]), ints([-big]), ints([1]), ints([-big])])[0]
        expectEqual(back, shape: [2, 1], [3, 6], "Slice with a huge negative step")
        #expect(throws: RuntimeError.self) {
            try runNode("Gather", [x, RuntimeTensor(shape: [1], ints: [Int64.min])], attributes: [.int("axis", 1)])
        }
    }

    @Test func hugeWindowsAndEmptyConvs() throws {
        let img = tensor([1, 1, 4, 4], (0..<16).map(Double.init))
        #expect(throws: RuntimeError.self) {
            try runNode("MaxPool", [img], attributes: [.ints("kernel_shape", [Int64(Int32.max), Int64(Int32.max)]),
                                                      .ints("pads", Array(repeating: Int64(Int32.max), count: 4))])
        }
        #expect(throws: RuntimeError.self) {
            try runNode("ConvTranspose", [img, tensor([1, 1, 1, 1], [1])], attributes: [.ints("strides", [Int64(Int32.max), Int64(Int32.max)])])
        }
        // An empty batch gives an empty output, not a crash.
        let empty = try runNode("Conv", [tensor([0, 1, 4, 4], []), tensor([2, 1, 3, 3], Array(repeating: 1, count: 18)),
                                         tensor([2], [5, 6])])[0]
        #expect(empty.shape == [0, 2, 2, 2])
        // No input channels: the output is the bias.
        let noChannels = try runNode("Conv", [tensor([1, 0, 3, 3], []), tensor([2, 0, 1, 1], []), tensor([2], [5, 6])])[0]
        expectEqual(noChannels, shape: [1, 2, 3, 3], Array(repeating: 5, count: 9) + Array(repeating: 6, count: 9), "Conv without channels")
    }
}
