import Testing
@testable import ONNXGraph
import TestSupport

/// The index-keeping edits: after any sequence of them, every query answers
/// as a graph rebuilt from scratch does (names freed by a removal are free
/// again for `uniqueName`, positions renumbered, uses in order).
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

    /// The same graph with its index dropped (assigning `nodes` rebuilds).
    func rebuilt(_ g: Graph) -> Graph {
        var copy = g
        copy.nodes = g.nodes
        return copy
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
                let n = g.nodes.count
                guard n > 0 else { break }
                switch Int.random(in: 0..<7, using: &rng) {
                case 0: g.setInput(node: Int.random(in: 0..<n, using: &rng), slot: 1, to: names.randomElement(using: &rng)!)
                case 1: g.appendInput(node: Int.random(in: 0..<n, using: &rng), "extra")
                case 2: g.setOutput(node: Int.random(in: 0..<n, using: &rng), slot: 0, to: "extra")
                case 3: g.appendInitializer(makeTensor("extra", .float, dims: [1], values: [1]))
                case 4: g.removeInitializers(named: [names.randomElement(using: &rng)!])
                case 5:
                    let k = Int.random(in: 1...min(2, n), using: &rng)
                    g.removeNodes(at: Set((0..<k).map { _ in Int.random(in: 0..<n, using: &rng) }))
                default: g.removeInputs(named: ["x"])
                }
                #expect(answers(g, names: names) == answers(rebuilt(g), names: names), "round \(round)")
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
        g.removeNodes(at: [0])
        #expect(g.uniqueName("z") == "z")   // the last reader went: the name is free again
        #expect(snapshot.nodes.count == 1)
    }
}
