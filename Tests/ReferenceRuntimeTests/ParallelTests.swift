import Testing
import Foundation
import ONNXFile
import ONNXGraph
@testable import ReferenceRuntime
import TestSupport

/// The runtime splits work over threads and writes results into buffers it
/// no longer needs; neither may change what it computes.
struct ParallelTests {
    /// Whole networks give bit-identical outputs with 1, 2 and 3 workers:
    /// every output element is computed by one worker with the same
    /// arithmetic, whichever rows or columns its gemm call covers.
    @Test(arguments: ["torch_resnet18.onnx", "torch_grouped_bn.onnx", "torch_depthwise_bn.onnx", "conv3d_bn.onnx",
                      "torch_deconv_linear_bn.onnx", "matmul_add_bn.onnx"])
    func threadCountDoesNotChangeResults(_ fixture: String) throws {
        let model = try ModelReader.read(path: TestPaths.fixture(fixture))
        let interpreter = try Interpreter(model: model)
        let feeds = try FoldVerificationTests.inputs(of: model, seed: 11)
        let one = try Parallelism.$threadOverride.withValue(1) { try interpreter.run(inputs: feeds) }
        for threads in [2, 3] {
            let many = try Parallelism.$threadOverride.withValue(threads) { try interpreter.run(inputs: feeds) }
            #expect(many == one, "\(fixture): \(threads) workers differ from 1")
        }
    }

    /// Single kernels sized so that 2 workers do split them (each is at
    /// least twice its split grain): the results equal the 1-worker ones bit
    /// for bit.
    @Test func splitKernelsMatchOneWorker() throws {
        var rng = SeededGenerator(seed: 21)
        func t(_ shape: [Int]) -> RuntimeTensor { tensor(shape, randomValues(product(shape), &rng)) }
        let cases: [(String, [RuntimeTensor?], [Attribute])] = [
            ("Conv", [t([1, 16, 32, 32]), t([32, 16, 3, 3]), t([32])], [.ints("pads", [1, 1, 1, 1])]),  // 4.7 MFLOP, split by columns
            ("Conv", [t([1, 8, 64, 64]), t([64, 8, 1, 1])], []),                                          // pointwise
            ("ConvTranspose", [t([1, 64, 32, 32]), t([64, 16, 3, 3])], []),                               // 9.4 MFLOP
            ("MatMul", [t([64, 512]), t([512, 256])], []),
            ("Gemm", [t([512, 64]), t([512, 128]), t([128])], [.int("transA", 1)]),
            ("Add", [t([1, 64, 32, 32]), t([1, 64, 1, 1])], []),
            ("MaxPool", [t([1, 32, 56, 56])], [.ints("kernel_shape", [3, 3]), .ints("strides", [2, 2])]),
        ]
        for (op, inputs, attributes) in cases {
            let one = try Parallelism.$threadOverride.withValue(1) { try runNode(op, inputs, attributes: attributes)[0] }
            let two = try Parallelism.$threadOverride.withValue(2) { try runNode(op, inputs, attributes: attributes)[0] }
            #expect(one.count > 0)
            #expect(two == one, "\(op): 2 workers differ from 1")
        }
    }

    /// Broadcast arithmetic over shapes whose axes coalesce in every way
    /// (contiguous, broadcast, scalar, both sides broadcasting) equals the
    /// numpy rule computed elementwise in Double and rounded once to float —
    /// exactly, because for +, −, ×, ÷ of floats that double rounding is
    /// innocuous (53 ≥ 2·24 + 2 bits).
    @Test(arguments: [
        ([2, 3, 4], [2, 3, 4]), ([2, 3, 4], [3, 1]), ([2, 3, 4], [4]), ([2, 3, 4], []), ([1], [2, 3]),
        ([2, 1, 4], [3, 1]), ([1, 64, 5, 5], [1, 64, 1, 1]), ([3, 1, 5], [1, 4, 1]), ([2, 3, 1, 4], [1, 3, 2, 4]),
    ])
    func broadcastArithmetic(_ shapes: ([Int], [Int])) throws {
        let (sa, sb) = shapes
        var rng = SeededGenerator(seed: 5)
        let va = randomValues(product(sa), &rng), vb = randomValues(product(sb), &rng, range: 0.5...2)
        let out = try broadcastShape(sa, sb)
        for (op, f) in [("Add", { (x: Double, y: Double) in x + y }), ("Sub", { $0 - $1 }), ("Mul", { $0 * $1 }), ("Div", { $0 / $1 })] {
            for threads in [1, 2] {
                let y = try Parallelism.$threadOverride.withValue(threads) {
                    try runNode(op, [tensor(sa, va), tensor(sb, vb)])[0]
                }
                let expected = (0..<product(out)).map { i -> Double in
                    let index = unflatten(i, out)
                    func pick(_ v: [Double], _ s: [Int]) -> Double {
                        let own = zip(index.suffix(s.count), s).map { $1 == 1 ? 0 : $0 }
                        return v[flatten(own, s)]
                    }
                    return Double(Float(f(pick(va, sa), pick(vb, sb))))
                }
                expectEqual(y, shape: out, expected, "\(op) \(sa) ⊕ \(sb), \(threads) workers")
            }
        }
    }

    /// A value read by a later node is not overwritten by an earlier kernel
    /// that works in place, and neither is the caller's input:
    /// r = Relu(x), s = Add(x, r), t = Mul(s, s), u = BN(t) with x read three times.
    @Test func inPlaceKernelsLeaveLiveValuesAlone() throws {
        let shape = [1, 2, 3, 3]
        var rng = SeededGenerator(seed: 9)
        let xv = randomValues(product(shape), &rng)
        let nodes = [
            Node(opType: "Relu", inputs: ["x"], outputs: ["r"]),
            Node(opType: "Add", inputs: ["x", "r"], outputs: ["s"]),
            Node(opType: "Mul", inputs: ["s", "s"], outputs: ["t"]),
            Node(opType: "BatchNormalization", inputs: ["t", "g", "b", "m", "v"], outputs: ["u"]),
            Node(opType: "Sub", inputs: ["u", "x"], outputs: ["y"]),
        ]
        var graph = Graph(name: "g", nodes: nodes)
        graph.inputs = [ValueInfo(name: "x")]
        graph.outputs = [ValueInfo(name: "y"), ValueInfo(name: "r")]
        graph.initializers = [("g", [2.0, 0.5]), ("b", [0.25, -1]), ("m", [0.5, 1]), ("v", [1, 3])].map {
            Tensor(name: $0.0, elementType: .float, dims: [2], values: $0.1)!
        }
        let x = tensor(shape, xv)
        let result = try Interpreter(graph: graph, opset: 17).run(inputs: ["x": x])
        #expect(x.doubles() == xv, "the caller's input changed")
        let (g, b, m, v) = ([2.0, 0.5], [0.25, -1.0], [0.5, 1.0], [1.0, 3.0])
        let inner = 9
        let expected = xv.indices.map { i -> Double in
            let c = i / inner
            let r = Double(Float(max(xv[i], 0)))
            let s = Double(Float(xv[i] + r)), t = Double(Float(s * s))
            let a = g[c] / (v[c] + Double(Float(1e-5))).squareRoot()   // the attribute default is a float
            let u = Double(Float(a * t + (b[c] - m[c] * a)))
            return Double(Float(u - xv[i]))
        }
        expectEqual(try #require(result["y"]), shape: shape, expected, "y")
        expectEqual(try #require(result["r"]), shape: shape, xv.map { max($0, 0) }, "r (a graph output also read later)")
    }

    /// Relu keeps NaN and maps −∞ to 0, in place or not.
    @Test func reluSpecialValues() throws {
        let values: [Double] = [.nan, -.infinity, .infinity, -1, 0, 2] + (0..<40).map { Double($0 % 5) - 2 }
        let y = try runNode("Relu", [tensor([values.count], values)])[0].doubles()
        #expect(y[0].isNaN)
        #expect(Array(y.dropFirst()) == values.dropFirst().map { max($0, 0) })
    }

    /// `computingInFloat64()` (initializers shared and widened as nodes
    /// read them) computes exactly what an interpreter of the graph with
    /// every tensor converted to double up front computes.
    @Test(arguments: ["torch_tiny_resnet.onnx", "conv2d_bn_fp16.onnx", "conv2d_bn_bf16.onnx", "conv2d_bn_constant_nodes.onnx"])
    func float64ModeEqualsRetypedGraph(_ fixture: String) throws {
        let model = try ModelReader.read(path: TestPaths.fixture(fixture))
        let feeds = try FoldVerificationTests.inputs(of: model, seed: 3)
        let shared = try Interpreter(model: model).computingInFloat64()
        #expect(shared.computesInFloat64)
        let converted = try Interpreter(graph: model.graph!.retypingFloats(to: .double, initializers: true), opset: model.opsetVersion()!)
        let a = try shared.run(inputs: feeds)
        let b = try converted.run(inputs: feeds.mapValues { $0.widenedToDouble() })
        #expect(!a.isEmpty)
        #expect(a == b)
        #expect(a.values.allSatisfy { $0.elementType == .double })
    }
}
