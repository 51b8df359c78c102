import Testing
@testable import GraphPasses
import ONNXGraph
import TestSupport

/// The pass manager runs every pass inside If/Loop/Scan bodies too.
@Suite("Passes inside subgraphs")
struct SubgraphPassTests {
    /// A Conv → BN fixture named with `prefix` whose graph will become a body.
    func fixture(_ prefix: String, seed: UInt64, bias: Bool = true, ir: Int64 = 8) -> ConvBNFixture {
        var spec = ConvBNSpec(rank: 2, grouping: .single, hasBias: bias, elementType: .float, irVersion: ir, seed: seed)
        spec.namePrefix = prefix
        return ConvBNFixture(spec)
    }

    /// The fixture's graph as a body: no inputs (X comes from the enclosing
    /// graph), its constants inside unless `constantsOutside`.
    func body(_ f: ConvBNFixture, extraInputs: [ValueInfo] = [], extraOutputs: [ValueInfo] = [],
              extraNodes: [Node] = [], constantsOutside: Bool = false) -> Graph {
        var g = f.graph
        g.inputs = extraInputs
        g.outputs = extraOutputs + g.outputs
        g.nodes = extraNodes + g.nodes
        if constantsOutside { g.initializers = [] }
        return g
    }

    /// A main graph with input X (and `cond`) holding `node`, whose output `out` is the graph output.
    func model(holding node: Node, initializers: [Tensor] = [], ir: Int64 = 8, extraNodes: [Node] = [],
               extraOutputs: [ValueInfo] = []) -> Model {
        var g = Graph(name: "main", nodes: extraNodes + [node],
                      inputs: [valueInfo("X", .float, dims: [1, 3, 6, 7]), ValueInfo(name: "cond", type: .tensor(.bool, dims: []))],
                      outputs: [ValueInfo(name: node.outputs[0])] + extraOutputs, initializers: initializers)
        g.valueInfo = []
        return Model(irVersion: ir, opsetImports: [OperatorSetID(domain: "", version: 15)], graph: g)
    }

    func branches(of model: Model, node: String = "if") throws -> (then: Graph, else: Graph) {
        let graph = try #require(model.graph)
        let n = try #require(graph.node(named: node))
        return (try #require(n.attribute("then_branch")?.g), try #require(n.attribute("else_branch")?.g))
    }

    @Test("A BN in each branch of an If folds; remarks name the path")
    func ifBranches() throws {
        let t = fixture("t_", seed: 51), e = fixture("e_", seed: 52, bias: false)
        let node = Node(opType: "If", inputs: ["cond"], outputs: ["out"], name: "if",
                        attributes: [.graph("then_branch", body(t)), .graph("else_branch", body(e))])
        var m = model(holding: node)
        let report = try runBuiltins(&m)
        expectRemarks(report, [("fold-batchnorm", .applied, "ConvBatchNormFolded", "if/then_branch/t_bn"),
                               ("fold-batchnorm", .applied, "ConvBatchNormFolded", "if/else_branch/e_bn")])
        let (thenBranch, elseBranch) = try branches(of: m)
        #expect(nodeNames(thenBranch) == ["t_conv"])
        #expect(initializerNames(thenBranch) == ["t_W", "t_B"])
        #expect(nodeNames(elseBranch) == ["e_conv"])
        #expect(initializerNames(elseBranch) == ["e_W", "e_conv_bias"])
        #expect(thenBranch.inputs.isEmpty && elseBranch.inputs.isEmpty)
        #expect(thenBranch.valueInfo.isEmpty && elseBranch.valueInfo.isEmpty)
        try expectMatchesReference(t, graph: thenBranch)
        try expectMatchesReference(e, graph: elseBranch)
        #expect(nodeNames(m.graph!) == ["if"])
    }

    @Test("IR 3: a bias added inside a branch does not become a branch input")
    func ir3BranchHasNoInputs() throws {
        let t = fixture("t_", seed: 53, bias: false, ir: 3)
        let node = Node(opType: "If", inputs: ["cond"], outputs: ["out"], name: "if",
                        attributes: [.graph("then_branch", body(t)), .graph("else_branch", body(t))])
        var m = model(holding: node, ir: 3)
        _ = try runBuiltins(&m)
        let (thenBranch, _) = try branches(of: m)
        #expect(initializerNames(thenBranch) == ["t_W", "t_conv_bias"])
        #expect(thenBranch.inputs.isEmpty)
    }

    @Test("A BN in a Loop body folds; the body keeps its inputs and outputs")
    func loopBody() throws {
        let f = fixture("", seed: 54)
        let loopBody = body(f, extraInputs: [ValueInfo(name: "i", type: .tensor(.int64, dims: [])),
                                             ValueInfo(name: "c_in", type: .tensor(.bool, dims: []))],
                            extraOutputs: [ValueInfo(name: "c_out", type: .tensor(.bool, dims: []))],
                            extraNodes: [Node(opType: "Identity", inputs: ["c_in"], outputs: ["c_out"], name: "keep_going")])
        let node = Node(opType: "Loop", inputs: ["trip", "cond"], outputs: ["out"], name: "loop",
                        attributes: [.graph("body", loopBody)])
        var m = model(holding: node, initializers: [makeTensor("trip", .int64, dims: [], values: [2])])
        let report = try runBuiltins(&m)
        expectRemarks(report, [("fold-batchnorm", .applied, "ConvBatchNormFolded", "loop/body/bn")])
        let folded = try #require(m.graph?.node(named: "loop")?.attribute("body")?.g)
        #expect(nodeNames(folded) == ["keep_going", "conv"])
        #expect(folded.inputs.map(\.name) == ["i", "c_in"])
        #expect(folded.outputs.map(\.name) == ["c_out", "Y"])
        try expectMatchesReference(f, graph: folded)
    }

    @Test("Nested: a BN in an If inside a Loop body folds, remark path through both")
    func nested() throws {
        let f = fixture("", seed: 55)
        let inner = Node(opType: "If", inputs: ["c_in"], outputs: ["Y_if"], name: "if",
                         attributes: [.graph("then_branch", body(f)), .graph("else_branch", body(f))])
        let loopBody = Graph(name: "body", nodes: [Node(opType: "Identity", inputs: ["c_in"], outputs: ["c_out"]), inner],
                             inputs: [ValueInfo(name: "i"), ValueInfo(name: "c_in")],
                             outputs: [ValueInfo(name: "c_out"), ValueInfo(name: "Y_if")])
        let node = Node(opType: "Loop", inputs: ["", "cond"], outputs: ["out"], name: "loop",
                        attributes: [.graph("body", loopBody)])
        var m = model(holding: node)
        let report = try runBuiltins(&m)
        expectRemarks(report, [("fold-batchnorm", .applied, "ConvBatchNormFolded", "loop/body/if/then_branch/bn"),
                               ("fold-batchnorm", .applied, "ConvBatchNormFolded", "loop/body/if/else_branch/bn")])
        let ifNode = try #require(m.graph?.node(named: "loop")?.attribute("body")?.g?.node(named: "if"))
        let thenBranch = try #require(ifNode.attribute("then_branch")?.g)
        try expectMatchesReference(f, graph: thenBranch)
    }

    @Test("Constants of the enclosing graph count inside; local copies replace them, and outer ones no one reads go")
    func outerConstants() throws {
        let f = fixture("", seed: 56)
        let node = Node(opType: "If", inputs: ["cond"], outputs: ["out"], name: "if",
                        attributes: [.graph("then_branch", body(f, constantsOutside: true)),
                                     .graph("else_branch", Graph(nodes: [Node(opType: "Identity", inputs: ["X"], outputs: ["x_out"])],
                                                                 outputs: [ValueInfo(name: "x_out")]))])
        var m = model(holding: node, initializers: f.graph.initializers)
        #expect(m.graph!.capturedNames.isEmpty)
        #expect(initializerNames(m.graph!) == ["W", "B", "bn_scale", "bn_bias", "bn_mean", "bn_var"])
        let report = try runBuiltins(&m)
        expectRemarks(report, [("fold-batchnorm", .applied, "ConvBatchNormFolded", "if/then_branch/bn")])
        let (thenBranch, _) = try branches(of: m)
        #expect(nodeNames(thenBranch) == ["conv"])
        #expect(thenBranch.nodes[0].inputs == ["X", "W_bnfold", "B_bnfold"])
        #expect(initializerNames(thenBranch) == ["W_bnfold", "B_bnfold"])
        #expect(m.graph!.initializers.isEmpty)
        try expectMatchesReference(f, graph: thenBranch)
    }

    @Test("An outer weight a branch still reads is kept unchanged when the outer BN folds")
    func outerInitializerStillRead() throws {
        let f = fixture("", seed: 57)
        let reader = Graph(nodes: [Node(opType: "Conv", inputs: ["X", "W"], outputs: ["z"], name: "inner_conv",
                                        attributes: f.graph.nodes[0].attributes)],
                           outputs: [ValueInfo(name: "z")])
        var m = f.model
        m.updateGraph { g in
            g.inputs.append(ValueInfo(name: "cond", type: .tensor(.bool, dims: [])))
            g.nodes.append(Node(opType: "If", inputs: ["cond"], outputs: ["if_out"], name: "if",
                                attributes: [.graph("then_branch", reader), .graph("else_branch", reader)]))
            g.outputs.append(ValueInfo(name: "if_out"))
        }
        let report = try runBuiltins(&m)
        expectRemarks(report, [("fold-batchnorm", .applied, "ConvBatchNormFolded", "bn")])
        let graph = try #require(m.graph)
        #expect(nodeNames(graph) == ["conv", "if"])
        #expect(graph.nodes[0].inputs == ["X", "W_bnfold", "B"])
        #expect(initializerNames(graph) == ["W", "B", "W_bnfold"])
        #expect(try graph.initializer(named: "W")?.doubles() == f.weight)
        let (thenBranch, _) = try branches(of: m)
        #expect(thenBranch.nodes[0].inputs == ["X", "W"])
        try expectMatchesReference(f, graph: graph)
    }

    @Test("FoldConstants inside a branch: the dynamo bias reads the outer weight and input")
    func foldConstantsInBranch() throws {
        let f = fixture("", seed: 58, bias: false)
        let zero = makeTensor(nil, .float, dims: [1], values: [0])
        let biasNodes = [
            constantNode(output: "zero_f", tensor: zero, name: "const_zero"),
            Node(opType: "Shape", inputs: ["W"], outputs: ["W_dim0"], name: "w_shape", attributes: [.int("start", 0), .int("end", 1)]),
            Node(opType: "CastLike", inputs: ["zero_f", "X"], outputs: ["zero"], name: "zero"),
            Node(opType: "Expand", inputs: ["zero", "W_dim0"], outputs: ["B"], name: "bias"),
        ]
        var branch = body(f, extraNodes: biasNodes, constantsOutside: true)
        branch.nodes[biasNodes.count].inputs = ["X", "W", "B"]
        let node = Node(opType: "If", inputs: ["cond"], outputs: ["out"], name: "if",
                        attributes: [.graph("then_branch", branch), .graph("else_branch", branch)])
        var m = model(holding: node, initializers: f.graph.initializers)
        let report = try runBuiltins(&m)
        // fold-constants runs on both branches, then fold-batchnorm does.
        let constants = ["then_branch", "else_branch"].flatMap { branch in
            ["w_shape", "zero", "bias"].map { ("fold-constants", Remark.Kind.applied, "ConstantFolded", "if/\(branch)/\($0)") }
        }
        let batchNorms = ["then_branch", "else_branch"].map {
            ("fold-batchnorm", Remark.Kind.applied, "ConvBatchNormFolded", "if/\($0)/bn")
        }
        expectRemarks(report, constants + batchNorms)
        let (thenBranch, elseBranch) = try branches(of: m)
        for b in [thenBranch, elseBranch] {
            #expect(nodeNames(b) == ["conv"])
            #expect(b.nodes[0].inputs == ["X", "W_bnfold", "B"])
            #expect(initializerNames(b) == ["B", "W_bnfold"])
            try expectMatchesReference(f, graph: b)
        }
        #expect(m.graph!.initializers.isEmpty)
    }
}

/// Leave no litter: what folds remove, and what they must keep.
@Suite("Leave no litter")
struct LitterTests {
    @Test("Values training_info reads are neither removed nor rewritten in place")
    func trainingInfoPinned() throws {
        let f = ConvBNFixture(ConvBNSpec(seed: 61))
        var model = f.model
        var info = TrainingInfo()
        info.algorithm = Graph(name: "train", nodes: [Node(opType: "Add", inputs: ["W", "bn_mean"], outputs: ["t"])],
                               outputs: [ValueInfo(name: "t")])
        info.updateBinding = [StringPair(key: "bn_var", value: "t")]
        model.trainingInfo = [info]
        let report = try runBuiltins(&model)
        expectRemarks(report, [("fold-batchnorm", .applied, "ConvBatchNormFolded", "bn")])
        let graph = try #require(model.graph)
        #expect(nodeNames(graph) == ["conv"])
        #expect(graph.nodes[0].inputs == ["X", "W_bnfold", "B"])
        #expect(initializerNames(graph) == ["W", "B", "bn_mean", "bn_var", "W_bnfold"])
        #expect(try graph.initializer(named: "W")?.doubles() == f.weight)
        try expectMatchesReference(f, graph: graph)
    }

    @Test("removeDeadValues removes only what it is pointed at: unused values the model carried stay")
    func onlyWhatTheFoldKilled() throws {
        let f = ConvBNFixture(ConvBNSpec(seed: 62))
        var model = f.model
        model.updateGraph { g in
            g.initializers.append(makeTensor("unused", .float, dims: [1], values: [1]))
            g.nodes.insert(Node(opType: "Identity", inputs: ["unused"], outputs: ["unused2"], name: "dangling"), at: 0)
        }
        _ = try runBuiltins(&model)
        let graph = try #require(model.graph)
        #expect(nodeNames(graph) == ["dangling", "conv"])
        #expect(initializerNames(graph) == ["W", "B", "unused"])
    }

    @Test("The folded graph stays topologically sorted and defines each value once")
    func staysValid() throws {
        let f = ConvBNFixture(ConvBNSpec(seed: 63))
        var model = f.model
        model.hideBehindIdentities("W", count: 2)
        try model.moveToConstantNode("bn_scale", as: .value)
        _ = try runBuiltins(&model)
        #expect(throws: Never.self) { try model.validate() }
    }
}
