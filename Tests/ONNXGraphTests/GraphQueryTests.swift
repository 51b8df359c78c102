import Testing
@testable import ONNXGraph
import TestSupport

@Suite("Graph queries")
struct GraphQueryTests {
    /// x (input), w (initializer) →
    ///   0: a = Relu(x)
    ///   1: b = Add(a, w)
    ///   2: c = Mul(a, a)
    ///   3: s0, s1 = Split(b, "")        (an omitted optional input)
    /// outputs: c, s1
    func sample() -> Graph {
        Graph(
            name: "g",
            nodes: [
                Node(opType: "Relu", inputs: ["x"], outputs: ["a"], name: "relu"),
                Node(opType: "Add", inputs: ["a", "w"], outputs: ["b"], name: "add"),
                Node(opType: "Mul", inputs: ["a", "a"], outputs: ["c"], name: "mul"),
                Node(opType: "Split", inputs: ["b", ""], outputs: ["s0", "s1"], name: "split"),
            ],
            inputs: [valueInfo("x", .float, dims: [4])],
            outputs: [valueInfo("c", .float, dims: [4]), valueInfo("s1", .float, dims: [2])],
            initializers: [makeTensor("w", .float, dims: [4], values: [1, 2, 3, 4])])
    }

    @Test("Producers, uses and flags of each value")
    func producersAndUses() {
        let g = sample()
        let a = g.value(named: "a")
        #expect(a.producer?.node == 0 && a.producer?.output == 0)
        #expect(a.uses == [Use(node: 1, input: 0), Use(node: 2, input: 0), Use(node: 2, input: 1)])
        #expect(!a.isGraphInput && !a.isGraphOutput && a.initializer == nil && !a.isDead)

        let x = g.value(named: "x")
        #expect(x.producer == nil)
        #expect(x.isGraphInput && x.uses == [Use(node: 0, input: 0)])

        let w = g.value(named: "w")
        #expect(w.initializer == 0 && !w.isGraphInput && w.producer == nil)
        #expect(w.uses == [Use(node: 1, input: 1)])
        #expect(g.initializer(named: "w")?.name == "w")

        let c = g.value(named: "c")
        #expect(c.isGraphOutput && c.uses.isEmpty && !c.isDead)

        let s1 = g.value(named: "s1")
        #expect(s1.producer?.node == 3 && s1.producer?.output == 1)
        #expect(g.value(named: "s0").isDead)

        // The omitted optional input is nobody's use.
        #expect(g.value(named: "").uses.isEmpty)
        #expect(g.value(named: "b").uses == [Use(node: 3, input: 0)])

        let missing = g.value(named: "nope")
        #expect(missing.producer == nil && missing.uses.isEmpty && missing.initializer == nil && missing.isDead)
        #expect(g.initializer(named: "nope") == nil)
    }

    /// `sample()` plus 4: an If whose then-branch reads `a`, and whose
    /// else-branch holds a Loop whose body reads `b` (two levels down) and
    /// defines its own `t`, and whose output is the outer `c` directly.
    func withSubgraphs() -> Graph {
        var g = sample()
        let loopBody = Graph(
            name: "body",
            nodes: [Node(opType: "Add", inputs: ["i", "b"], outputs: ["t"]),
                    Node(opType: "Identity", inputs: ["t"], outputs: ["t_out"])],
            inputs: [valueInfo("i", .int64, dims: []), valueInfo("cond_in", .bool, dims: [])],
            outputs: [valueInfo("cond_in", .bool, dims: []), valueInfo("t_out", .float, dims: [4])])
        let elseBranch = Graph(
            name: "else",
            nodes: [Node(opType: "Loop", inputs: ["", ""], outputs: ["loop_out"], name: "loop",
                         attributes: [.graph("body", loopBody)])],
            outputs: [valueInfo("loop_out", .float, dims: [4])])
        let thenBranch = Graph(
            name: "then",
            nodes: [Node(opType: "Neg", inputs: ["a"], outputs: ["neg"], name: "neg")],
            outputs: [valueInfo("c", .float, dims: [4])])
        g.inputs.append(valueInfo("cond", .bool, dims: []))
        g.nodes.append(Node(opType: "If", inputs: ["cond"], outputs: ["if_out"], name: "if",
                            attributes: [.graph("then_branch", thenBranch), .graph("else_branch", elseBranch)]))
        return g
    }

    @Test("Names read inside subgraphs (at any depth) count as uses by the holding node")
    func subgraphCaptures() {
        let g = withSubgraphs()
        #expect(g.value(named: "a").uses.last == Use(node: 4, input: nil))
        #expect(g.value(named: "a").uses.count == 4)
        #expect(g.value(named: "b").uses == [Use(node: 3, input: 0), Use(node: 4, input: nil)])
        // A graph output of a branch that names an outer value is a read too.
        #expect(g.value(named: "c").uses == [Use(node: 4, input: nil)])
        #expect(g.value(named: "cond").uses == [Use(node: 4, input: 0)])
        // Values defined inside the subgraphs are not the outer graph's.
        #expect(g.value(named: "t").uses.isEmpty)
        #expect(g.value(named: "neg").producer == nil)
        #expect(g.value(named: "i").uses.isEmpty)

        let node = g.nodes[4]
        #expect(node.subgraphs.count == 2)
        #expect(node.subgraphs[0].capturedNames == ["a", "c"])
        #expect(node.subgraphs[1].capturedNames == ["b"])
        // The body defines i, cond_in and t itself: it captures only b.
        #expect(node.subgraphs[1].nodes[0].subgraphs[0].capturedNames == ["b"])
        // The main graph defines everything it reads.
        #expect(g.capturedNames.isEmpty)
    }

    @Test("Two branches reading the same name give one use for the node")
    func oneUsePerNode() {
        var g = sample()
        let branch = Graph(name: "br", nodes: [Node(opType: "Identity", inputs: ["a"], outputs: ["o"])],
                           outputs: [valueInfo("o", .float, dims: [4])])
        g.nodes.append(Node(opType: "If", inputs: ["a"], outputs: ["r"], name: "if",
                            attributes: [.graph("then_branch", branch), .graph("else_branch", branch)]))
        #expect(g.value(named: "a").uses.suffix(2) == [Use(node: 4, input: 0), Use(node: 4, input: nil)])
    }

    @Test("A name undefined in the main graph is captured (and not defined by a later node use)")
    func capturedInMainGraph() {
        let g = Graph(nodes: [Node(opType: "Relu", inputs: ["outer"], outputs: ["y"])],
                      outputs: [valueInfo("y", .float, dims: [1])])
        #expect(g.capturedNames == ["outer"])
        #expect(g.value(named: "outer").uses == [Use(node: 0, input: 0)])
    }

    @Test("allNames covers values, initializers, node names and names inside subgraphs")
    func allNames() {
        let g = withSubgraphs()
        for name in ["x", "w", "a", "b", "c", "s0", "s1", "cond", "if_out", "relu", "split", "if",
                     "neg", "loop", "loop_out", "t", "t_out", "i", "cond_in"] {
            #expect(g.allNames.contains(name), "\(name)")
        }
        #expect(!g.allNames.contains(""))
    }

    @Test("uniqueName avoids every name in the graph and its subgraphs")
    func uniqueName() {
        var g = withSubgraphs()
        #expect(g.uniqueName("fresh") == "fresh")
        #expect(g.uniqueName("a") == "a_1")
        #expect(g.uniqueName("w") == "w_1")          // initializer
        #expect(g.uniqueName("relu") == "relu_1")    // node name
        #expect(g.uniqueName("t") == "t_1")          // defined inside a Loop body
        #expect(g.uniqueName("cond_in") == "cond_in_1")  // a subgraph input
        #expect(g.uniqueName("a", avoiding: ["a_1", "a_2"]) == "a_3")
        #expect(g.uniqueName("fresh", avoiding: ["fresh"]) == "fresh_1")
        g.nodes.append(Node(opType: "Identity", inputs: ["a"], outputs: ["a_1"]))
        #expect(g.uniqueName("a") == "a_2")
        g.initializers.append(makeTensor("a_2", .float, dims: [1], values: [0]))
        #expect(g.uniqueName("a") == "a_3")
    }

    // MARK: Index invalidation

    @Test("Appending, editing and removing nodes updates producers and uses")
    func nodeMutations() {
        var g = sample()
        #expect(g.value(named: "a").uses.count == 3)
        g.nodes.append(Node(opType: "Neg", inputs: ["a"], outputs: ["n"]))
        #expect(g.value(named: "a").uses.count == 4)
        #expect(g.value(named: "n").producer?.node == 4)

        // In-place edit through a subscript.
        g.nodes[2].inputs = ["x", "x"]
        #expect(g.value(named: "a").uses == [Use(node: 1, input: 0), Use(node: 4, input: 0)])
        #expect(g.value(named: "x").uses.count == 3)
        g.nodes[0].outputs[0] = "a2"
        #expect(g.value(named: "a").producer == nil)
        #expect(g.value(named: "a2").producer?.node == 0)

        // Removing a node shifts the indices of the later ones.
        g.nodes.remove(at: 1)
        #expect(g.value(named: "c").producer?.node == 1)
        #expect(g.value(named: "n").producer?.node == 3)
        #expect(g.value(named: "b").producer == nil)
    }

    @Test("Editing a subgraph inside a node updates the captures")
    func subgraphMutation() {
        var g = withSubgraphs()
        #expect(g.value(named: "s0").uses.isEmpty)
        g.nodes[4].attributes[0].g!.nodes.append(Node(opType: "Neg", inputs: ["s0"], outputs: ["n2"]))
        #expect(g.value(named: "s0").uses == [Use(node: 4, input: nil)])
        g.nodes[4].attributes = []
        #expect(g.value(named: "a").uses.count == 3)
        #expect(g.value(named: "b").uses.count == 1)
    }

    @Test("Initializer, input and output changes update the flags")
    func valueListMutations() {
        var g = sample()
        #expect(g.value(named: "w").initializer == 0)
        g.initializers.insert(makeTensor("z", .float, dims: [1], values: [0]), at: 0)
        #expect(g.value(named: "w").initializer == 1)
        #expect(g.initializer(named: "z") != nil)
        g.initializers[1].name = "w2"
        #expect(g.value(named: "w").initializer == nil)
        #expect(g.initializer(named: "w2") != nil)
        g.initializers.removeAll()
        #expect(g.initializer(named: "w2") == nil && g.initializer(named: "z") == nil)

        #expect(!g.value(named: "w").isGraphInput)
        g.inputs.append(valueInfo("w", .float, dims: [4]))
        #expect(g.value(named: "w").isGraphInput)
        g.inputs[1].name = "w3"
        #expect(!g.value(named: "w").isGraphInput)

        #expect(g.value(named: "s0").isDead)
        g.outputs.append(valueInfo("s0", .float, dims: [2]))
        #expect(g.value(named: "s0").isGraphOutput && !g.value(named: "s0").isDead)
        g.outputs.removeAll()
        #expect(!g.value(named: "c").isGraphOutput && g.value(named: "c").isDead)
    }

    @Test("Copies answer for their own state, whichever was indexed first")
    func copies() {
        var original = sample()
        _ = original.value(named: "a")  // build the index, then copy (the copy shares it)
        var copy = original
        copy.nodes.removeLast()
        #expect(copy.value(named: "s1").producer == nil)
        #expect(original.value(named: "s1").producer?.node == 3)

        // Copy before indexing; index the copy first; then change the original.
        let fresh = sample()
        var a = fresh
        let b = fresh
        _ = b.value(named: "a")
        a.nodes.removeFirst()
        #expect(a.value(named: "a").producer == nil)
        #expect(b.value(named: "a").producer?.node == 0)
        #expect(fresh.value(named: "a").producer?.node == 0)
        original = a
        #expect(original.value(named: "c").producer?.node == 1)
    }

    @Test("Equality ignores the index")
    func equalityIgnoresIndex() {
        let a = sample()
        let b = sample()
        _ = a.value(named: "x")
        #expect(a == b)
        var c = b
        c.nodes[0].name = "other"
        #expect(c != a)
    }
}
