import Testing
import ONNXGraph

/// `Model.validate()` and scopes: a subgraph may read an enclosing graph's
/// values, never define one of its own under the same name.
@Suite struct ValidationScopeTests {
    /// main: y = Relu(X); If(cond) then: z = Relu(<then-y>) … with the then
    /// branch either reading the outer y or redefining y after reading it.
    func model(shadow: Bool) -> Model {
        var then = Graph(name: "then", nodes: [Node(opType: "Relu", inputs: ["y"], outputs: ["z"], name: "t_relu")])
        if shadow {
            then.nodes.append(Node(opType: "Relu", inputs: ["X"], outputs: ["y"], name: "t_redefine"))
        }
        then.outputs = [ValueInfo(name: "z")]
        var otherwise = Graph(name: "else", nodes: [Node(opType: "Identity", inputs: ["y"], outputs: ["e"], name: "e_id")])
        otherwise.outputs = [ValueInfo(name: "e")]
        var main = Graph(name: "main", nodes: [
            Node(opType: "Relu", inputs: ["X"], outputs: ["y"], name: "relu"),
            Node(opType: "If", inputs: ["cond"], outputs: ["out"], name: "if",
                 attributes: [.graph("then_branch", then), .graph("else_branch", otherwise)]),
        ])
        main.inputs = [ValueInfo(name: "X"), ValueInfo(name: "cond")]
        main.outputs = [ValueInfo(name: "out")]
        return Model(irVersion: 8, opsetImports: [OperatorSetID(domain: "", version: 17)], graph: main)
    }

    @Test func readingAnOuterValueIsValid() throws {
        try model(shadow: false).validate()
    }

    @Test func redefiningAnOuterNameIsRejected() {
        do {
            try model(shadow: true).validate()
            Issue.record("a subgraph redefining an outer value was accepted")
        } catch let error as ModelValidationError {
            #expect(error.message.contains("defines 'y', which an enclosing graph already defines"))
            #expect(error.message.contains("t_redefine"))
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }
}
