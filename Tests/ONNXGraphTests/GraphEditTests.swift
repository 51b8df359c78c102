import Testing
@testable import ONNXGraph
import TestSupport

/// The index-keeping edits: after any sequence of them, every query answers
/// as a graph whose index is rebuilt from scratch does (names freed by a
/// removal are free again for `uniqueName`, uses in order), and no edit
/// moves a node's ID.
@Suite("Graph edits")
struct GraphEditTests {
    /// What a query-by-query comparison needs: every answer for every name.
    func answers(_ g: Graph, names: [String]) -> [String] {
        names.map { n in
            let v = g.value(named: n)
            return "\(n): \(v.producer.map { "\($0.node).\($0.output)" } ?? "-") \(v.uses.map { "\($0.node).\($0.input ?? -1)" }) "
                + "\(v.isGraphInput) \(v.isGraphOutput) \(v.initializer.map(String.init) ?? "-") \(g.uniqueName(n))"
        } + [g.uniqueName("fresh"), "\(g.capturedNames.sorted())"]
    }

    /// The same graph (same IDs) with its index dropped: the next query rebuilds it.
    func rebuilt(_ g: Graph) -> Graph {
        var copy = g
        copy.dropIndex()
        return copy
    }

    /// Every live node by ID, named: what must not move.
    func nodesByID(_ g: Graph) -> [NodeID: String] {
        Dictionary(uniqueKeysWithValues: g.nodeIDs.map { ($0, g[$0].name ?? "") })
    }

    @Test("Random edit sequences keep every query equal to a rebuild")
    func randomEdits() {
        var rng = SeededGenerator(seed: 13)
        for round in 0..<200 {
            // A chain x → n0 → … with an initializer per node and a graph output.
            let length = 3 + round % 6
            var nodes: [Node] = [], initializers: [Tensor] = []
            var previous = "x"
            for i in 0..<length {
                initializers.append(makeTensor("w\(i)", .float, dims: [1], values: [Double(i)]))
                nodes.append(Node(opType: "Add", inputs: [previous, "w\(i)"], outputs: ["v\(i)"], name: "n\(i)"))
                previous = "v\(i)"
            }
            var g = Graph(name: "g", nodes: nodes, inputs: [ValueInfo(name: "x")], outputs: [ValueInfo(name: previous)],
                          initializers: initializers)
            let names = ["x", "fresh", "extra"] + (0..<length).flatMap { ["w\($0)", "v\($0)", "n\($0)"] }
            _ = g.value(named: "x")   // build the index, so the edits patch it
            for _ in 0..<6 {
                let ids = g.nodeIDs
                guard !ids.isEmpty else { break }
                let before = nodesByID(g)
                var removed: Set<NodeID> = []
                switch Int.random(in: 0..<8, using: &rng) {
                case 0: g.setInput(node: ids.randomElement(using: &rng)!, slot: 1, to: names.randomElement(using: &rng)!)
                case 1: g.appendInput(node: ids.randomElement(using: &rng)!, "extra")
                case 2: g.setOutput(node: ids.randomElement(using: &rng)!, slot: 0, to: "extra")
                case 3: g.appendInitializer(makeTensor("extra", .float, dims: [1], values: [1]))
                case 4: g.removeInitializers(named: [names.randomElement(using: &rng)!])
                case 5:
                    let k = Int.random(in: 1...min(2, ids.count), using: &rng)
                    removed = Set((0..<k).map { _ in ids.randomElement(using: &rng)! })
                    g.removeNodes(removed)
                case 6: g.replaceAllUses(of: names.randomElement(using: &rng)!, with: "extra")
                default: g.removeInputs(named: ["x"])
                }
                #expect(answers(g, names: names) == answers(rebuilt(g), names: names), "round \(round)")
                // Survivors keep their IDs; erased ones are gone.
                let after = nodesByID(g)
                #expect(after == before.filter { !removed.contains($0.key) }, "round \(round)")
            }
        }
    }

    /// A graph copy taken before an edit keeps its own answers.
    @Test("Copies do not see each other's edits")
    func copiesAreIndependent() {
        var g = Graph(name: "g", nodes: [Node(opType: "Relu", inputs: ["x"], outputs: ["y"])],
                      inputs: [ValueInfo(name: "x")], outputs: [ValueInfo(name: "y")])
        #expect(g.value(named: "x").uses.count == 1)
        let snapshot = g
        g.setInput(node: 0, slot: 0, to: "z")
        #expect(g.value(named: "x").uses.isEmpty)
        #expect(g.value(named: "z").uses.count == 1)
        #expect(snapshot.value(named: "x").uses.count == 1)
        #expect(snapshot.value(named: "z").uses.isEmpty)
        g.removeNodes([0])
        #expect(g.uniqueName("z") == "z")   // the last reader went: the name is free again
        #expect(snapshot.nodes.count == 1)
    }
}
