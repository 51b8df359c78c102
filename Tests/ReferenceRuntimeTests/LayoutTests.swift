import Testing
import ONNXGraph
@testable import ReferenceRuntime
import TestSupport

/// Layout operators move values without arithmetic: results must be exact.
@Suite("Layout operators")
struct LayoutTests {
    let x = tensor([2, 3, 4], (0..<24).map(Double.init))

    @Test func reshapeFamily() throws {
        expectEqual(try runNode("Flatten", [x])[0], shape: [2, 12], x.doubles(), "Flatten")
        expectEqual(try runNode("Flatten", [x], attributes: [.int("axis", 0)])[0], shape: [1, 24], x.doubles(), "Flatten axis 0")
        expectEqual(try runNode("Flatten", [x], attributes: [.int("axis", -1)])[0], shape: [6, 4], x.doubles(), "Flatten axis -1")
        expectEqual(try runNode("Reshape", [x, ints([0, -1, 2])])[0], shape: [2, 6, 2], x.doubles(), "Reshape 0/-1")
        #expect(throws: RuntimeError.self) { try runNode("Reshape", [x, ints([5, -1])]) }
        expectEqual(try runNode("Unsqueeze", [x, ints([0, -1])], opset: 13)[0], shape: [1, 2, 3, 4, 1], x.doubles(), "Unsqueeze")
        expectEqual(try runNode("Unsqueeze", [x], attributes: [.ints("axes", [1])], opset: 11)[0], shape: [2, 1, 3, 4], x.doubles(), "Unsqueeze-11")
        let ones = tensor([1, 3, 1], [1, 2, 3])
        expectEqual(try runNode("Squeeze", [ones])[0], shape: [3], [1, 2, 3], "Squeeze all")
        expectEqual(try runNode("Squeeze", [ones, ints([2])], opset: 13)[0], shape: [1, 3], [1, 2, 3], "Squeeze axis")
        #expect(throws: RuntimeError.self) { try runNode("Squeeze", [ones, ints([1])], opset: 13) }
        expectEqual(try runNode("Shape", [x])[0], shape: [3], [2, 3, 4], "Shape")
        expectEqual(try runNode("Shape", [x], attributes: [.int("start", -2)], opset: 15)[0], shape: [2], [3, 4], "Shape start")
    }

    @Test func transpose() throws {
        let y = try runNode("Transpose", [x], attributes: [.ints("perm", [2, 0, 1])])[0]
        var expected: [Double] = []
        for k in 0..<4 { for i in 0..<2 { for j in 0..<3 { expected.append(Double(i * 12 + j * 4 + k)) } } }
        expectEqual(y, shape: [4, 2, 3], expected, "Transpose")
        let r = try runNode("Transpose", [tensor([2, 3], [1, 2, 3, 4, 5, 6])])[0]
        expectEqual(r, shape: [3, 2], [1, 4, 2, 5, 3, 6], "Transpose default")
    }

    @Test func concatAndSplit() throws {
        let a = tensor([2, 1], [1, 2]), b = tensor([2, 2], [3, 4, 5, 6])
        expectEqual(try runNode("Concat", [a, b], attributes: [.int("axis", 1)])[0], shape: [2, 3], [1, 3, 4, 2, 5, 6], "Concat axis 1")
        expectEqual(try runNode("Concat", [b, b], attributes: [.int("axis", -2)])[0], shape: [4, 2], [3, 4, 5, 6, 3, 4, 5, 6], "Concat axis -2")
        let parts = try runNode("Split", [x, ints([1, 3])], attributes: [.int("axis", 2)], outputs: 2, opset: 13)
        expectEqual(parts[0], shape: [2, 3, 1], [0, 4, 8, 12, 16, 20], "Split part 0")
        #expect(parts[1].shape == [2, 3, 3])
        let even = try runNode("Split", [x], attributes: [.int("axis", 1)], outputs: 3, opset: 13)
        expectEqual(even[2], shape: [2, 1, 4], [8, 9, 10, 11, 20, 21, 22, 23], "Split even")
        let uneven = try runNode("Split", [tensor([5], [1, 2, 3, 4, 5])], attributes: [.int("num_outputs", 2)], outputs: 2, opset: 18)
        expectEqual(uneven[1], shape: [2], [4, 5], "Split num_outputs")
    }

    @Test func sliceAndGather() throws {
        let s = try runNode("Slice", [x, ints([1, -1]), ints([3, -100]), ints([1, 2]), ints([1, -2])])[0]
        // axis 1: 1..<3; axis 2: from 3 down by 2 → 3, 1.
        expectEqual(s, shape: [2, 2, 2], [7, 5, 11, 9, 19, 17, 23, 21], "Slice negative step")
        let s2 = try runNode("Slice", [x, ints([0]), ints([Int(Int64.max)])], opset: 13)[0]
        #expect(s2 == x)
        let s9 = try runNode("Slice", [x], attributes: [.ints("starts", [1]), .ints("ends", [2]), .ints("axes", [0])], opset: 9)[0]
        expectEqual(s9, shape: [1, 3, 4], (12..<24).map(Double.init), "Slice-9")
        let g = try runNode("Gather", [x, RuntimeTensor(shape: [2], ints: [2, -3])], attributes: [.int("axis", 1)])[0]
        expectEqual(g, shape: [2, 2, 4], [8, 9, 10, 11, 0, 1, 2, 3, 20, 21, 22, 23, 12, 13, 14, 15], "Gather")
        let g0 = try runNode("Gather", [ints([10, 20, 30]), RuntimeTensor(shape: [], ints: [1])])[0]
        expectEqual(g0, shape: [], [20], "Gather scalar index")
        #expect(throws: RuntimeError.self) { try runNode("Gather", [x, RuntimeTensor(shape: [1], ints: [3])]) }
    }

    @Test func expandPadConstant() throws {
        expectEqual(try runNode("Expand", [tensor([3, 1], [1, 2, 3]), ints([2, 1, 2])])[0], shape: [2, 3, 2],
                    [1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3], "Expand")
        let m = tensor([2, 3], [1, 2, 3, 4, 5, 6])
        expectEqual(try runNode("Pad", [m, ints([1, 0, 0, 1]), tensor([], [9])], opset: 13)[0], shape: [3, 4],
                    [9, 9, 9, 9, 1, 2, 3, 9, 4, 5, 6, 9], "Pad constant")
        expectEqual(try runNode("Pad", [m, ints([0, 2, 0, 1])], attributes: [.string("mode", "reflect")], opset: 13)[0],
                    shape: [2, 6], [3, 2, 1, 2, 3, 2, 6, 5, 4, 5, 6, 5], "Pad reflect")
        expectEqual(try runNode("Pad", [m, ints([0, 1, 0, -1])], attributes: [.string("mode", "edge")], opset: 13)[0],
                    shape: [2, 3], [1, 1, 2, 4, 4, 5], "Pad edge with crop")
        expectEqual(try runNode("Pad", [m], attributes: [.ints("pads", [0, 1, 0, 0]), .float("value", 0)], opset: 2)[0],
                    shape: [2, 4], [0, 1, 2, 3, 0, 4, 5, 6], "Pad-2")
        let c = try runNode("ConstantOfShape", [ints([2, 2])])[0]
        expectEqual(c, shape: [2, 2], [0, 0, 0, 0], "ConstantOfShape default")
        let seven = makeTensor("v", .int64, dims: [1], values: [7])
        let c7 = try runNode("ConstantOfShape", [ints([3])], attributes: [.tensor("value", seven)])[0]
        #expect(c7.elementType == .int64)
        expectEqual(c7, shape: [3], [7, 7, 7], "ConstantOfShape int64")
        let k = try runNode("Constant", [], attributes: [.ints("value_ints", [4, 5])])[0]
        expectEqual(k, shape: [2], [4, 5], "Constant value_ints")
    }

    @Test func casts() throws {
        let f = tensor([5], [-2.7, -0.5, 0, 1.9, 70000])
        let i = try runNode("Cast", [f], attributes: [.int("to", Int64(DataType.int64.rawValue))])[0]
        expectEqual(i, shape: [5], [-2, 0, 0, 1, 70000], "Cast float→int64 truncates")
        let h = try runNode("Cast", [f], attributes: [.int("to", Int64(DataType.float16.rawValue))])[0]
        #expect(h.elementType == .float16)
        #expect(h.doubles() == rounded(f.doubles(), to: .float16))
        #expect(h.doubles()[4] == .infinity)  // 70000 > 65504 rounds to infinity
        let b = try runNode("Cast", [f], attributes: [.int("to", Int64(DataType.bool.rawValue))])[0]
        expectEqual(b, shape: [5], [1, 1, 0, 1, 1], "Cast to bool")
        let like = try runNode("CastLike", [ints([1, 2]), tensor([1], [0], .double)])[0]
        #expect(like.elementType == .double)
        #expect(like.doubles() == [1, 2])
        let i8 = try runNode("Cast", [ints([300, -129])], attributes: [.int("to", Int64(DataType.int8.rawValue))])[0]
        #expect(i8.doubles() == [44, 127])
    }
}

@Suite("Interpreter")
struct InterpreterTests {
    @Test func unsupportedOperatorIsNamed() throws {
        let node = Node(opType: "Foo", inputs: ["a"], outputs: ["b"], name: "x")
        var graph = Graph(name: "g", nodes: [node])
        graph.inputs = [ValueInfo(name: "a")]
        graph.outputs = [ValueInfo(name: "b")]
        #expect(Interpreter.unsupportedOperators(in: graph) == ["Foo"])
        #expect(Interpreter.unsupportedNodes(in: graph).map(\.node) == ["x"])
        do {
            _ = try Interpreter(graph: graph, opset: 17).run(inputs: ["a": tensor([1], [1])])
            Issue.record("expected an error")
        } catch let error as RuntimeError {
            #expect(error.description == "node 'x' (Foo): operator Foo is not supported")
        }
        var custom = graph
        custom.nodes[0] = Node(opType: "Relu", inputs: ["a"], outputs: ["b"], domain: "com.example")
        #expect(Interpreter.unsupportedOperators(in: custom) == ["com.example:Relu"])
        #expect(throws: RuntimeError.self) { try Interpreter(graph: custom, opset: 17).run(inputs: ["a": tensor([1], [1])]) }
    }

    @Test func supportedOperatorsCoverTheCore() {
        for op in ["Conv", "ConvTranspose", "BatchNormalization", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu",
                   "Identity", "Flatten", "Reshape", "GlobalAveragePool", "MaxPool", "AveragePool", "Constant"] {
            #expect(Interpreter.supportedOperators.contains(op), "\(op)")
        }
        #expect(!Interpreter.supportedOperators.contains("LSTM"))
    }

    /// Initializers and Constant nodes feed nodes; a missing input is an error.
    @Test func constantsAndInputs() throws {
        let w = makeTensor("w", .float, dims: [2], values: [2, 3])
        var graph = Graph(name: "g", nodes: [
            constantNode(output: "k", tensor: makeTensor(nil, .float, dims: [2], values: [1, 1])),
            Node(opType: "Mul", inputs: ["x", "w"], outputs: ["m"]),
            Node(opType: "Add", inputs: ["m", "k"], outputs: ["y"], name: "add"),
        ])
        graph.initializers = [w]
        graph.inputs = [ValueInfo(name: "x")]
        graph.outputs = [ValueInfo(name: "y")]
        let interpreter = try Interpreter(graph: graph, opset: 17)
        let y = try interpreter.run(inputs: ["x": tensor([2], [5, 7])])["y"]!
        #expect(y.doubles() == [11, 22])
        #expect(throws: RuntimeError.self) { try interpreter.run(inputs: [:]) }
        do {
            _ = try interpreter.run(inputs: ["x": tensor([3], [1, 2, 3])])
            Issue.record("expected an error")
        } catch let error as RuntimeError {
            #expect(error.node == "Mul#1" && error.opType == "Mul")
        }
    }

    @Test func inputsAreCheckedAgainstTheirDeclaration() throws {
        var graph = Graph(name: "g", nodes: [Node(opType: "Relu", inputs: ["x"], outputs: ["y"])])
        graph.inputs = [valueInfo("x", .float, dims: [1, 2])]
        graph.outputs = [ValueInfo(name: "y")]
        let interpreter = try Interpreter(graph: graph, opset: 17)
        #expect(try interpreter.run(inputs: ["x": tensor([1, 2], [-1, 1])])["y"]!.doubles() == [0, 1])
        #expect(throws: RuntimeError.self) { try interpreter.run(inputs: ["x": tensor([2, 1], [-1, 1])]) }
        #expect(throws: RuntimeError.self) { try interpreter.run(inputs: ["x": tensor([1, 2], [-1, 1], .double)]) }
    }

    /// IR tensors of every supported type survive conversion unchanged.
    @Test(arguments: [DataType.float, .float16, .bfloat16, .double, .int64, .int32, .int8, .uint8, .bool])
    func tensorRoundTrip(_ type: DataType) throws {
        let values: [Double] = type == .bool ? [0, 1, 1, 0] : [0, 1, -2, 100].map { type == .uint8 ? abs($0) : $0 }
        let ir = makeTensor("t", type, dims: [2, 2], values: values)
        let r = try RuntimeTensor(ir)
        #expect(r.shape == [2, 2] && r.elementType == type)
        #expect(r.doubles() == values)
        let back = try r.tensor(name: "t")
        #expect(try back.doubles() == values)
        #expect(back.elementType == type)
    }
}
