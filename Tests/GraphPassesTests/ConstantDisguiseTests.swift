import Testing
@testable import GraphPasses
import ONNXGraph
import TestSupport

/// Conv → BN whose weight, bias or BN parameters arrive in each disguise an
/// exporter uses: each folds under the built-in pipeline, matches the Double
/// reference of the unfolded graph, and leaves exactly the Conv and its two
/// constants behind.
@Suite("Constants in every disguise")
struct ConstantDisguiseTests {
    func fixture(type: DataType = .float, bias: Bool = true, ir: Int64 = 8, seed: UInt64 = 77) -> ConvBNFixture {
        ConvBNFixture(ConvBNSpec(rank: 2, grouping: .two, hasBias: bias, elementType: type, irVersion: ir, seed: seed))
    }

    let folded = ("fold-batchnorm", Remark.Kind.applied, "ConvBatchNormFolded", "bn")

    @Test("Identity chains in front of the weight, the bias and two BN parameters", arguments: [DataType.float, .float16])
    func identityChains(_ type: DataType) throws {
        let f = fixture(type: type)
        var model = f.model
        model.hideBehindIdentities("W", count: 2)
        model.hideBehindIdentities("B", count: 1)
        model.hideBehindIdentities("bn_scale", count: 1)
        model.hideBehindIdentities("bn_var", count: 3)
        #expect(model.graph!.nodes.count == 9)
        let report = try runBuiltins(&model)
        expectRemarks(report, [folded])
        let graph = try #require(model.graph)
        // The Conv reads the (rewritten) roots; every Identity is gone.
        #expect(nodeNames(graph) == ["conv"])
        #expect(graph.nodes[0].inputs == ["X", "W_raw", "B_raw"])
        #expect(graph.nodes[0].outputs == ["Y"])
        #expect(initializerNames(graph) == ["W_raw", "B_raw"])
        #expect(graph.valueInfo.isEmpty)
        #expect(graph.inputs.map(\.name) == ["X"])
        try expectMatchesReference(f, graph: graph)
    }

    @Test("An Identity feeding a graph output stays; the Conv gets its own folded copy")
    func identityFeedingGraphOutput() throws {
        let f = fixture()
        var model = f.model
        model.hideBehindIdentities("W", count: 1)
        model.updateGraph { $0.outputs.append(valueInfo("W", .float, dims: f.weightShape)) }
        let report = try runBuiltins(&model)
        expectRemarks(report, [folded])
        let graph = try #require(model.graph)
        #expect(nodeNames(graph) == ["id_W_1", "conv"])
        #expect(graph.nodes[1].inputs == ["X", "W_bnfold", "B"])
        #expect(initializerNames(graph) == ["W_raw", "B", "W_bnfold"])
        // The graph output still carries the original weights.
        #expect(try graph.initializer(named: "W_raw")?.doubles() == f.weight)
        try expectMatchesReference(f, graph: graph)
    }

    @Test("Weight and BN parameters in Constant nodes of every numeric form", arguments: [ConstantForm.value, .valueFloats, .sparseValue])
    func constantNodeForms(_ form: ConstantForm) throws {
        let f = fixture()
        var model = f.model
        try model.moveToConstantNode("W", as: form == .valueFloats ? .value : form)  // value_floats is 1-D only
        for name in ["B"] + f.names.bnParameters { try model.moveToConstantNode(name, as: form) }
        let report = try runBuiltins(&model)
        expectRemarks(report, [folded])
        let graph = try #require(model.graph)
        // W and B are rewritten in place, as `value` tensors; the BN parameters' nodes are gone.
        #expect(nodeNames(graph) == ["const_B", "const_W", "conv"])
        #expect(graph.nodes[2].inputs == ["X", "W", "B"])
        #expect(graph.nodes[0].attributes.map(\.name) == ["value"])
        #expect(graph.initializers.isEmpty)
        try expectMatchesReference(f, graph: graph)
    }

    @Test("value_float scalars as the BN parameters of a one-channel Conv")
    func valueFloatScalars() throws {
        var spec = ConvBNSpec(rank: 1, grouping: .single, hasBias: false, seed: 78)
        spec.outChannels = 1
        let f = ConvBNFixture(spec)
        var model = f.model
        for name in f.names.bnParameters {
            try model.updateGraph { g in
                let i = try #require(g.initializers.firstIndex { $0.name == name })
                var scalar = g.initializers[i]
                scalar.dims = []
                g.initializers.remove(at: i)
                g.nodes.insert(try constantNode(name, holding: scalar, as: .valueFloat), at: 0)
            }
        }
        let report = try runBuiltins(&model)
        expectRemarks(report, [folded])
        let graph = try #require(model.graph)
        #expect(nodeNames(graph) == ["conv"])
        #expect(initializerNames(graph) == ["W", "conv_bias"])
        try expectMatchesReference(f, graph: graph)
    }

    /// PyTorch's dynamo exporter (`optimize=False`) gives a Conv without
    /// bias the bias `Expand(CastLike(0.0, X), Expand(Shape(W, 0, 1), [1]))`
    /// (onnxscript's torchlib `aten_convolution`).
    func addDynamoBias(_ model: inout Model, type: DataType, zeroForm: ConstantForm) throws {
        let zero = makeTensor(nil, .float, dims: [], values: [0])
        try model.updateGraph { g in
            let convIndex = try #require(g.nodeIndex(named: "conv"))
            let nodes: [Node] = [
                try constantNode("zero_f", holding: zero, as: zeroForm),
                Node(opType: "Constant", inputs: [], outputs: ["one"], name: "const_one",
                     attributes: [.ints("value_ints", [1])]),
                Node(opType: "Shape", inputs: ["W"], outputs: ["W_dim0"], name: "w_shape",
                     attributes: [.int("start", 0), .int("end", 1)]),
                Node(opType: "Expand", inputs: ["W_dim0", "one"], outputs: ["bias_shape"], name: "bias_shape"),
                Node(opType: "CastLike", inputs: ["zero_f", "X"], outputs: ["zero"], name: "zero"),
                Node(opType: "Expand", inputs: ["zero", "bias_shape"], outputs: ["B"], name: "bias"),
            ]
            g.nodes.insert(contentsOf: nodes, at: convIndex)
            g.nodes[convIndex + nodes.count].inputs = ["X", "W", "B"]
            g.valueInfo += [valueInfo("W_dim0", .int64, dims: [1]), valueInfo("B", type, dims: [6])]
        }
    }

    @Test("Dynamo's Expand(CastLike(Constant 0), Shape(W)) bias folds to zeros, then the BN folds",
          arguments: [DataType.float, .float16, .double], [ConstantForm.value, .valueFloat])
    func dynamoBias(_ type: DataType, _ zeroForm: ConstantForm) throws {
        let f = fixture(type: type, bias: false)
        var model = f.model
        try addDynamoBias(&model, type: type, zeroForm: zeroForm)
        let report = try runBuiltins(&model)
        let constants = ["w_shape", "bias_shape", "zero", "bias"].map {
            ("fold-constants", Remark.Kind.applied, "ConstantFolded", $0)
        }
        expectRemarks(report, constants + [folded])
        let graph = try #require(model.graph)
        #expect(nodeNames(graph) == ["conv"])
        #expect(graph.nodes[0].inputs == ["X", "W", "B"])
        #expect(initializerNames(graph) == ["W", "B"])
        #expect(graph.initializer(named: "B")?.elementType == type)
        #expect(graph.valueInfo.map(\.name) == ["B"])
        try expectMatchesReference(f, graph: graph)
    }

    @Test("The dynamo bias alone (no BN) becomes an initializer of zeros in X's type")
    func dynamoBiasWithoutBN() throws {
        let f = fixture(type: .float16, bias: false)
        var model = f.model
        try addDynamoBias(&model, type: .float16, zeroForm: .value)
        model.updateGraph { g in
            g.nodes.removeAll { $0.isOp("BatchNormalization") }
            g.initializers.removeAll { f.names.bnParameters.contains($0.name ?? "") }
            g.outputs = [valueInfo("conv_out", .float16, dims: f.outputShape)]
        }
        let report = try runBuiltins(&model)
        #expect(report.remarks.map(\.node) == ["w_shape", "bias_shape", "zero", "bias"])
        let graph = try #require(model.graph)
        #expect(nodeNames(graph) == ["conv"])
        let b = try #require(graph.initializer(named: "B"))
        #expect(b.elementType == .float16)
        #expect(b.dims == [6])
        #expect(try b.doubles() == [0, 0, 0, 0, 0, 0])
    }

    @Test("IR 3: initializers listed as inputs are constants, behind Identity too; inputs follow the initializers")
    func irVersion3() throws {
        let f = fixture(type: .float, bias: true, ir: 3)
        var model = f.model
        model.hideBehindIdentities("bn_mean", count: 1)
        model.updateGraph { g in
            for i in g.inputs.indices where g.inputs[i].name == "bn_mean" { g.inputs[i].name = "bn_mean_raw" }
        }
        let report = try runBuiltins(&model)
        expectRemarks(report, [folded])
        let graph = try #require(model.graph)
        #expect(nodeNames(graph) == ["conv"])
        #expect(initializerNames(graph) == ["W", "B"])
        #expect(graph.inputs.map(\.name) == ["X", "W", "B"])
        try expectMatchesReference(f, graph: graph)
    }

    @Test("IR ≥ 4: an initializer that is also a graph input is skipped with OverridableInitializer, graph unchanged",
          arguments: ["W", "B", "bn_scale", "bn_var"])
    func overridableSkipped(_ name: String) throws {
        var model = fixture().model
        model.updateGraph { g in
            let t = g.initializer(named: name)!
            g.inputs.append(valueInfo(name, .float, dims: t.dims.map(Int.init)))
        }
        let before = model
        let report = try runBuiltins(&model)
        let unchanged = model == before
        #expect(unchanged)
        #expect(report.remarks.count == 1)
        let r = try #require(report.remarks.first)
        #expect(r.kind == .missed)
        #expect(r.reason == "OverridableInitializer")
        #expect(r.message.contains("'\(name)'"))
        #expect(r.message.contains("--assume-constant-inputs"))
    }

    @Test("IR ≥ 4 with assumeConstantInputs: folds, and the folded or removed initializers leave the graph inputs")
    func overridableAssumedConstant() throws {
        let f = fixture()
        var model = f.model
        model.hideBehindIdentities("bn_bias", count: 1)
        model.updateGraph { g in
            for t in g.initializers { g.inputs.append(valueInfo(t.name!, .float, dims: t.dims.map(Int.init))) }
        }
        #expect(model.graph!.inputs.count == 7)
        let report = try runBuiltins(&model, assumeConstantInputs: true)
        expectRemarks(report, [folded])
        let graph = try #require(model.graph)
        #expect(nodeNames(graph) == ["conv"])
        #expect(initializerNames(graph) == ["W", "B"])
        #expect(graph.inputs.map(\.name) == ["X"])
        try expectMatchesReference(f, graph: graph)
    }

    @Test("assumeConstantInputs: a shared overridable weight stays an input for its other reader")
    func overridableSharedStaysInput() throws {
        let f = fixture()
        var model = f.model
        model.updateGraph { g in
            g.inputs.append(valueInfo("W", .float, dims: f.weightShape))
            g.nodes.append(Node(opType: "Conv", inputs: ["X", "W"], outputs: ["Z"], name: "other",
                                attributes: g.nodes[0].attributes))
            g.outputs.append(valueInfo("Z", .float, dims: f.outputShape))
        }
        let report = try runBuiltins(&model, assumeConstantInputs: true)
        expectRemarks(report, [folded])
        let graph = try #require(model.graph)
        #expect(nodeNames(graph) == ["conv", "other"])
        #expect(graph.nodes[0].inputs == ["X", "W_bnfold", "B"])
        #expect(graph.inputs.map(\.name) == ["X", "W"])
        #expect(try graph.initializer(named: "W")?.doubles() == f.weight)
        try expectMatchesReference(f, graph: graph)
    }
}

/// The lookup itself: where each disguise is found, and why others are not constant.
@Suite("PassContext.constant(named:in:)")
struct ConstantLookupTests {
    let context = PassContext(irVersion: 8, opsetImports: [OperatorSetID(domain: "", version: 17)])

    @Test("An Identity chain reports each Identity node and the root")
    func identitySource() throws {
        let w = makeTensor("w", .float, dims: [2], values: [1, 2])
        let graph = Graph(nodes: [Node(opType: "Identity", inputs: ["w"], outputs: ["a"]),
                                  Node(opType: "Identity", inputs: ["a"], outputs: ["b"])],
                          outputs: [ValueInfo(name: "b")], initializers: [w])
        let (tensor, source) = try context.constant(named: "b", in: graph).get()
        #expect(source == .identity(1, of: .identity(0, of: .initializer(0))))
        #expect(source.root == .initializer(0))
        #expect(try tensor.doubles() == [1, 2])
    }

    @Test("An Identity of a graph input says so")
    func identityOfInput() {
        let graph = Graph(nodes: [Node(opType: "Identity", inputs: ["x"], outputs: ["a"])],
                          inputs: [valueInfo("x", .float, dims: [2])], outputs: [ValueInfo(name: "a")])
        let result = context.constant(named: "a", in: graph)
        #expect(throws: NotConstant.identityOf(source: "x", .graphInput)) { try result.get() }
        if case .failure(let why) = result {
            #expect(why.explanation == "is an Identity of 'x', which is a graph input, supplied at run time")
        }
    }

    @Test("An Identity cycle (an invalid graph) ends the lookup")
    func identityCycle() {
        let graph = Graph(nodes: [Node(opType: "Identity", inputs: ["b"], outputs: ["a"]),
                                  Node(opType: "Identity", inputs: ["a"], outputs: ["b"])],
                          outputs: [ValueInfo(name: "b")])
        #expect(throws: NotConstant.identityOf(source: "a", .computed(opType: "Identity"))) {
            try context.constant(named: "b", in: graph).get()
        }
    }

    @Test("value_int and value_ints are int64 constants")
    func intForms() throws {
        let graph = Graph(nodes: [Node(opType: "Constant", inputs: [], outputs: ["i"], attributes: [.int("value_int", -3)]),
                                  Node(opType: "Constant", inputs: [], outputs: ["is"], attributes: [.ints("value_ints", [4, 5])])],
                          outputs: [ValueInfo(name: "i"), ValueInfo(name: "is")])
        let (i, _) = try context.constant(named: "i", in: graph).get()
        #expect(i.elementType == .int64)
        #expect(i.dims == [])
        #expect(try i.int64s() == [-3])
        let (ints, source) = try context.constant(named: "is", in: graph).get()
        #expect(source == .constantNode(1))
        #expect(ints.dims == [2])
        #expect(try ints.int64s() == [4, 5])
    }

    func sparseGraph(indices: Tensor, values: [Double] = [3, 7], dims: [Int64] = [2, 2]) -> Graph {
        var attribute = Attribute(name: "sparse_value")
        attribute.type = .sparseTensor
        attribute.sparseTensor = SparseTensor(values: makeTensor(nil, .float16, dims: [values.count], values: values),
                                              indices: indices, dims: dims)
        return Graph(nodes: [Node(opType: "Constant", inputs: [], outputs: ["s"], attributes: [attribute])],
                     outputs: [ValueInfo(name: "s")])
    }

    @Test("sparse_value expands to a dense tensor, from linear or coordinate indices")
    func sparse() throws {
        for indices in [makeTensor(nil, .int64, dims: [2], values: [3, 1]),
                        makeTensor(nil, .int64, dims: [2, 2], values: [1, 1, 0, 1])] {
            let (t, _) = try context.constant(named: "s", in: sparseGraph(indices: indices)).get()
            #expect(t.elementType == .float16)
            #expect(t.dims == [2, 2])
            #expect(try t.doubles() == [0, 7, 0, 3])
        }
    }

    @Test("A sparse_value with an index outside its shape, or too large to expand, is not a constant")
    func sparseBad() {
        let outside = sparseGraph(indices: makeTensor(nil, .int64, dims: [2], values: [4, 1]))
        #expect(throws: NotConstant.unreadableConstant) { try context.constant(named: "s", in: outside).get() }
        let coordinateOutside = sparseGraph(indices: makeTensor(nil, .int64, dims: [2, 2], values: [0, 2, 0, 0]))
        #expect(throws: NotConstant.unreadableConstant) { try context.constant(named: "s", in: coordinateOutside).get() }
        let huge = sparseGraph(indices: makeTensor(nil, .int64, dims: [2], values: [0, 1]), dims: [1 << 12, 1 << 11])
        #expect(throws: NotConstant.unreadableConstant) { try context.constant(named: "s", in: huge).get() }
    }

    @Test("Initializer inputs: constant for IR 3, overridable for IR 4 unless assumed, and the option reaches only the main graph")
    func initializerInputs() throws {
        let w = makeTensor("w", .float, dims: [1], values: [1])
        let graph = Graph(inputs: [valueInfo("w", .float, dims: [1])], outputs: [ValueInfo(name: "w")], initializers: [w])
        #expect(throws: Never.self) { try PassContext(irVersion: 3, opsetImports: []).constant(named: "w", in: graph).get() }
        #expect(throws: NotConstant.overridableInitializer) {
            try PassContext(irVersion: 4, opsetImports: []).constant(named: "w", in: graph).get()
        }
        let assumed = PassContext(irVersion: 4, opsetImports: [], assumeConstantInputs: true)
        #expect(throws: Never.self) { try assumed.constant(named: "w", in: graph).get() }
        var inner = assumed
        inner.scope = GraphScope().entering(Graph(), node: "loop", attribute: "body")
        #expect(throws: NotConstant.overridableInitializer) { try inner.constant(named: "w", in: graph).get() }
    }
}
