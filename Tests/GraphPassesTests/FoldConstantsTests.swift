import Testing
@testable import GraphPasses
import ONNXGraph
import TestSupport

/// `fold-constants`: what it computes (exactly as the reference runtime,
/// rounded into the element type), what it leaves, and what it says.
@Suite("FoldConstants")
struct FoldConstantsTests {
    /// A model whose graph has input `x` [2] float, the given initializers
    /// and nodes, and outputs `outputs`.
    func model(_ nodes: [Node], initializers: [Tensor] = [], outputs: [String], ir: Int64 = 8, opset: Int64 = 17) -> Model {
        let graph = Graph(name: "g", nodes: nodes, inputs: [valueInfo("x", .float, dims: [2])],
                          outputs: outputs.map { ValueInfo(name: $0) }, initializers: initializers)
        return Model(irVersion: ir, opsetImports: [OperatorSetID(domain: "", version: opset)], graph: graph)
    }

    func run(_ model: inout Model, _ pass: FoldConstants = FoldConstants()) throws -> PassManager.Report {
        try PassManager(passes: [pass]).run(on: &model)
    }

    @Test("A float16 product is rounded once into float16, as the runtime computes it")
    func float16Rounded() throws {
        // (1 + 2⁻¹⁰)² = 1 + 2⁻⁹ + 2⁻²⁰: the 2⁻²⁰ is below float16's half-ulp at 1 (2⁻¹¹) and rounds away.
        let a = makeTensor("a", .float16, dims: [2], values: [1 + 0x1p-10, 300])
        let m = [Node(opType: "Mul", inputs: ["a", "a"], outputs: ["p"], name: "square"),
                 Node(opType: "Add", inputs: ["x", "p"], outputs: ["y"], name: "use")]
        var model = model(m, initializers: [a], outputs: ["y"])
        let report = try run(&model)
        expectRemarks(report, [("fold-constants", .applied, "ConstantFolded", "square")])
        let graph = try #require(model.graph)
        #expect(nodeNames(graph) == ["use"])
        #expect(initializerNames(graph) == ["p"])
        let p = try #require(graph.initializer(named: "p"))
        #expect(p.elementType == .float16)
        #expect(p.dims == [2])
        // 300² = 90000 > 65504: float16 infinity, as a float16 runtime gives.
        #expect(try p.doubles() == [1 + 0x1p-9, .infinity])
        #expect(report.remarks.first?.message == "computed Mul as a constant (float16 [2])")
    }

    @Test("An output nobody reads is dropped with its value_info (no declaration of a value nothing defines)")
    func unreadOutputLeavesNoValueInfo() throws {
        let w = makeTensor("w", .float, dims: [4], values: [1, 2, 3, 4])
        let nodes = [Node(opType: "Split", inputs: ["w"], outputs: ["a", "b"], name: "split",
                          attributes: [.int("axis", 0), .ints("split", [2, 2])]),
                     Node(opType: "Add", inputs: ["x", "a"], outputs: ["y"], name: "use")]
        var model = model(nodes, initializers: [w], outputs: ["y"], opset: 11)
        model.graph?.valueInfo = [valueInfo("a", .float, dims: [2]), valueInfo("b", .float, dims: [2])]
        let report = try run(&model)
        expectRemarks(report, [("fold-constants", .applied, "ConstantFolded", "split")])
        let graph = try #require(model.graph)
        #expect(nodeNames(graph) == ["use"])
        #expect(initializerNames(graph) == ["a"])
        #expect(try graph.initializer(named: "a")?.doubles() == [1, 2])
        #expect(graph.valueInfo.map(\.name) == ["a"])
    }

    @Test("A chain folds in one sweep; the Constants only it read are removed, shared ones stay")
    func chain() throws {
        let shared = makeTensor("s", .float, dims: [2], values: [2, 3])
        let nodes = [
            Node(opType: "Constant", inputs: [], outputs: ["c"], name: "const_c", attributes: [.ints("value_ints", [2])]),
            Node(opType: "Cast", inputs: ["c"], outputs: ["cf"], name: "cast", attributes: [.int("to", 1)]),
            Node(opType: "Mul", inputs: ["cf", "s"], outputs: ["m"], name: "mul"),
            Node(opType: "Add", inputs: ["x", "m"], outputs: ["y"], name: "use"),
            Node(opType: "Sub", inputs: ["x", "s"], outputs: ["z"], name: "other"),
        ]
        var model = model(nodes, initializers: [shared], outputs: ["y", "z"])
        let report = try run(&model)
        #expect(report.iterations == 2)
        expectRemarks(report, [("fold-constants", .applied, "ConstantFolded", "cast"),
                               ("fold-constants", .applied, "ConstantFolded", "mul")])
        let graph = try #require(model.graph)
        #expect(nodeNames(graph) == ["use", "other"])
        #expect(initializerNames(graph) == ["s", "m"])
        #expect(try graph.initializer(named: "m")?.doubles() == [4, 6])
    }

    @Test("The element cap: an Expand predicted above the limit is not computed; at the limit it is",
          arguments: [(10, true), (9, false)] as [(Int, Bool)])
    func cap(_ limit: Int, _ folds: Bool) throws {
        let nodes = [Node(opType: "Expand", inputs: ["v", "shape"], outputs: ["e"], name: "expand"),
                     Node(opType: "ReduceSum", inputs: ["e"], outputs: ["y"], name: "use")]
        var model = model(nodes, initializers: [makeTensor("v", .float, dims: [1, 1], values: [1.5]),
                                                makeTensor("shape", .int64, dims: [2], values: [2, 5])],
                          outputs: ["y"])
        let before = model
        let report = try run(&model, FoldConstants(elementLimit: limit))
        if folds {
            // ReduceSum is computed too, but y is a graph output: it keeps its node.
            expectRemarks(report, [("fold-constants", .applied, "ConstantFolded", "expand")])
            #expect(try model.graph?.initializer(named: "e")?.doubles() == [Double](repeating: 1.5, count: 10))
        } else {
            expectRemarks(report, [("fold-constants", .missed, "ExceedsSizeLimit", "expand")])
            #expect(report.remarks.first?.message == "its output would have 10 elements, more than the 9 this pass materialises")
            let unchanged = model == before
            #expect(unchanged)
        }
    }

    @Test("The default cap stops a ConstantOfShape of 2²² + 1 elements before anything is allocated")
    func defaultCap() throws {
        #expect(FoldConstants.defaultElementLimit == 4_194_304)
        let nodes = [Node(opType: "ConstantOfShape", inputs: ["shape"], outputs: ["big"], name: "fill"),
                     Node(opType: "Add", inputs: ["x", "big"], outputs: ["y"], name: "use")]
        var model = model(nodes, initializers: [makeTensor("shape", .int64, dims: [2], values: [Double(1 << 20 + 1), 4])],
                          outputs: ["y"])
        let before = model
        let report = try run(&model)
        expectRemarks(report, [("fold-constants", .missed, "ExceedsSizeLimit", "fill")])
        let unchanged = model == before
        #expect(unchanged)
    }

    @Test("The total cap: ConstantOfShape nodes of 2 elements each under a total of 7 fold three, the rest are missed")
    func totalCap() throws {
        var nodes: [Node] = [], outputs: [String] = []
        for i in 0..<5 {
            nodes.append(Node(opType: "ConstantOfShape", inputs: ["shape"], outputs: ["k\(i)"], name: "fill\(i)"))
            nodes.append(Node(opType: "Add", inputs: ["x", "k\(i)"], outputs: ["y\(i)"], name: "use\(i)"))
            outputs.append("y\(i)")
        }
        var model = model(nodes, initializers: [makeTensor("shape", .int64, dims: [1], values: [2])], outputs: outputs)
        #expect(FoldConstants.defaultTotalElementLimit == 1 << 26)
        let report = try run(&model, FoldConstants(totalElementLimit: 7))
        expectRemarks(report, [("fold-constants", .applied, "ConstantFolded", "fill0"),
                               ("fold-constants", .applied, "ConstantFolded", "fill1"),
                               ("fold-constants", .applied, "ConstantFolded", "fill2"),
                               ("fold-constants", .missed, "ExceedsSizeLimit", "fill3"),
                               ("fold-constants", .missed, "ExceedsSizeLimit", "fill4")])
        #expect(report.remarks.last?.message == "its output's 2 elements would take the pass past the 7 elements it materialises in all")
        #expect(model.graph?.nodes.filter { $0.isOp("ConstantOfShape") }.map(\.name) == ["fill3", "fill4"])
    }

    @Test("An input above the cap is not read")
    func inputCap() throws {
        let nodes = [Node(opType: "NonZero", inputs: ["w"], outputs: ["n"], name: "nonzero"),
                     Node(opType: "Add", inputs: ["x", "n"], outputs: ["y"], name: "use")]
        var model = model(nodes, initializers: [makeTensor("w", .float, dims: [2], values: [1, 2])], outputs: ["y"])
        model.opsetImports = [OperatorSetID(domain: "", version: 17)]
        let report = try run(&model, FoldConstants(elementLimit: 1))
        // NonZero is not a reference-runtime operator: that is said first.
        expectRemarks(report, [("fold-constants", .missed, "UnsupportedOperator", "nonzero")])
        var relu = self.model([Node(opType: "Relu", inputs: ["w"], outputs: ["n"], name: "relu"),
                               Node(opType: "Add", inputs: ["x", "n"], outputs: ["y"], name: "use")],
                              initializers: [makeTensor("w", .float, dims: [2], values: [1, 2])], outputs: ["y"])
        let reluReport = try run(&relu, FoldConstants(elementLimit: 1))
        expectRemarks(reluReport, [("fold-constants", .missed, "ExceedsSizeLimit", "relu")])
        #expect(reluReport.remarks.first?.message == "input 'w' has 2 elements, more than the 1 this pass reads")
    }

    @Test("Left alone without a remark: Identity, other domains, random, graph outputs, dead nodes, non-constant inputs, unbounded output")
    func leftAlone() throws {
        let w = makeTensor("w", .float, dims: [1, 1, 1, 2], values: [1, 2])
        let nodes = [
            Node(opType: "Identity", inputs: ["w"], outputs: ["i"], name: "identity"),
            Node(opType: "Relu", inputs: ["w"], outputs: ["r"], name: "custom", domain: "com.example"),
            Node(opType: "RandomNormalLike", inputs: ["w"], outputs: ["rand"], name: "random"),
            Node(opType: "Relu", inputs: ["w"], outputs: ["out"], name: "to_output"),
            Node(opType: "Relu", inputs: ["w"], outputs: ["dead"], name: "dead"),
            Node(opType: "Relu", inputs: ["x"], outputs: ["live"], name: "input"),
            Node(opType: "MaxPool", inputs: ["w"], outputs: ["pool"], name: "pool", attributes: [.ints("kernel_shape", [1, 1])]),
            Node(opType: "Concat", inputs: ["i", "r", "rand", "live", "pool"], outputs: ["y"], name: "use",
                 attributes: [.int("axis", 0)]),
        ]
        var model = model(nodes, initializers: [w], outputs: ["y", "out"])
        let before = model
        let report = try run(&model)
        #expect(report.remarks.isEmpty)
        let unchanged = model == before
        #expect(unchanged)
    }

    @Test("A node the runtime rejects is kept with EvaluationFailed")
    func evaluationFailed() throws {
        let nodes = [Node(opType: "Reshape", inputs: ["w", "shape"], outputs: ["r"], name: "reshape"),
                     Node(opType: "Add", inputs: ["x", "r"], outputs: ["y"], name: "use")]
        var model = model(nodes, initializers: [makeTensor("w", .float, dims: [3], values: [1, 2, 3]),
                                                makeTensor("shape", .int64, dims: [1], values: [2])],
                          outputs: ["y"])
        let before = model
        let report = try run(&model)
        expectRemarks(report, [("fold-constants", .missed, "EvaluationFailed", "reshape")])
        #expect(report.remarks.first?.message.hasPrefix("the reference runtime could not compute it: ") == true)
        let unchanged = model == before
        #expect(unchanged)
    }

    @Test("Shape and Size read only the dimensions: a weight whose data cannot be loaded still gives its shape",
          arguments: [(Int64(17), [Int64(3), 4]), (14, [2, 3, 4, 5])] as [(Int64, [Int64])])
    func shapeWithoutData(_ opset: Int64, _ expected: [Int64]) throws {
        var w = Tensor(name: "w", elementType: .float, dims: [2, 3, 4, 5])
        w.dataLocation = 1
        w.externalBytes = ExternalBytes(description: "unreadable") { throw TensorDataError(tensor: "w", "not loadable") }
        let nodes = [Node(opType: "Shape", inputs: ["w"], outputs: ["s"], name: "shape",
                          attributes: [.int("start", 1), .int("end", -1)]),
                     Node(opType: "Size", inputs: ["w"], outputs: ["n"], name: "size"),
                     Node(opType: "Concat", inputs: ["s", "n"], outputs: ["y"], name: "use", attributes: [.int("axis", 0)])]
        var model = model(nodes, initializers: [w], outputs: ["y"], opset: opset)
        let report = try run(&model)
        expectRemarks(report, [("fold-constants", .applied, "ConstantFolded", "shape"),
                               ("fold-constants", .applied, "ConstantFolded", "size")])
        let graph = try #require(model.graph)
        #expect(try graph.initializer(named: "s")?.int64s() == expected)  // opset 14 ignores start/end
        let n = try #require(graph.initializer(named: "n"))
        #expect(n.dims == [])
        #expect(try n.int64s() == [120])
    }

    @Test("IR 3: a folded value becomes an initializer and a graph input, as IR 3 requires")
    func ir3() throws {
        let nodes = [Node(opType: "Constant", inputs: [], outputs: ["c"], name: "const_c", attributes: [.float("value_float", 2)]),
                     Node(opType: "Relu", inputs: ["c"], outputs: ["r"], name: "relu"),
                     Node(opType: "Add", inputs: ["x", "r"], outputs: ["y"], name: "use")]
        var model = model(nodes, outputs: ["y"], ir: 3)
        _ = try run(&model)
        let graph = try #require(model.graph)
        #expect(nodeNames(graph) == ["use"])
        #expect(graph.inputs.map(\.name) == ["x", "r"])
        #expect(graph.inputs.last?.type == .tensor(.float, dims: []))
    }

    @Test("A model without a default-domain opset import: nothing is evaluated")
    func noOpset() throws {
        var model = model([Node(opType: "Relu", inputs: ["w"], outputs: ["r"], name: "relu"),
                           Node(opType: "Add", inputs: ["x", "r"], outputs: ["y"], name: "use")],
                          initializers: [makeTensor("w", .float, dims: [2], values: [1, -1])], outputs: ["y"])
        model.opsetImports = []
        let before = model
        let report = try run(&model)
        #expect(report.remarks.isEmpty)
        let unchanged = model == before
        #expect(unchanged)
    }

    @Test("Every reason id")
    func reasonIds() {
        #expect(FoldConstants.Reason.self == FoldReason.self)
        #expect(Set(["ConstantFolded", "UnsupportedOperator", "ExceedsSizeLimit", "EvaluationFailed"])
            .isSubset(of: FoldReason.allCases.map(\.rawValue)))
        #expect(BuiltinPasses.all.map(\.name) == ["fold-constants", "fold-batchnorm", "fold-mul-add", "fold-batchnorm-forward"])
    }
}
