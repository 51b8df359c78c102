import Testing
@testable import GraphPasses
import ONNXGraph
import TestSupport

/// Runs the default pipeline (every built-in pass, ``BuiltinPasses/all``) as the CLI does.
func runBuiltins(_ model: inout Model, assumeConstantInputs: Bool = false) throws -> PassManager.Report {
    try PassManager(passes: BuiltinPasses.all, assumeConstantInputs: assumeConstantInputs).run(on: &model)
}

/// The forms of a `Constant` node's value attribute.
enum ConstantForm: String, CaseIterable, CustomStringConvertible {
    case value, valueFloat = "value_float", valueFloats = "value_floats", sparseValue = "sparse_value"
    var description: String { rawValue }
}

/// A `Constant` node called `const_<output>` producing `tensor` (float) in `form`.
/// `value_float` needs a one-element tensor; `sparse_value` lists every
/// element, last first, with `[NNZ, rank]` coordinates.
func constantNode(_ output: String, holding tensor: Tensor, as form: ConstantForm) throws -> Node {
    let values = try tensor.doubles()
    var attribute: Attribute
    switch form {
    case .value:
        var t = tensor
        t.name = nil
        attribute = .tensor("value", t)
    case .valueFloat:
        precondition(values.count == 1 && tensor.elementType == .float)
        attribute = .float("value_float", Float(values[0]))
    case .valueFloats:
        precondition(tensor.elementType == .float)
        attribute = Attribute(name: "value_floats")
        attribute.type = .floats
        attribute.floats = values.map { Float($0) }
    case .sparseValue:
        let order = Array(values.indices.reversed())
        let shape = tensor.dims.map(Int.init)
        let coordinates = order.flatMap { Reference.unflatten($0, shape: shape).map(Double.init) }
        let sparse = SparseTensor(
            values: makeTensor(nil, tensor.elementType, dims: [order.count], values: order.map { values[$0] }),
            indices: makeTensor(nil, .int64, dims: [order.count, shape.count], values: coordinates),
            dims: tensor.dims)
        attribute = Attribute(name: "sparse_value")
        attribute.type = .sparseTensor
        attribute.sparseTensor = sparse
    }
    return Node(opType: "Constant", inputs: [], outputs: [output], name: "const_" + output, attributes: [attribute])
}

extension Model {
    /// Replaces the initializer `name` by a `Constant` node (first in the graph) of the same value.
    mutating func moveToConstantNode(_ name: String, as form: ConstantForm) throws {
        try updateGraph { g in
            guard let i = g.initializers.firstIndex(where: { $0.name == name }) else { preconditionFailure("no \(name)") }
            let node = try constantNode(name, holding: g.initializers[i], as: form)
            g.initializers.remove(at: i)
            g.nodes.insert(node, at: 0)
        }
    }

    /// Renames the initializer `name` to `<name>_raw` and inserts `count`
    /// Identity nodes (`id_<name>_1` …) in front, the last producing `name`.
    mutating func hideBehindIdentities(_ name: String, count: Int) {
        updateGraph { g in
            guard let i = g.initializers.firstIndex(where: { $0.name == name }) else { preconditionFailure("no \(name)") }
            g.initializers[i].name = name + "_raw"
            var previous = name + "_raw"
            var chain: [Node] = []
            for k in 1...count {
                let output = k == count ? name : "\(name)_id\(k)"
                chain.append(Node(opType: "Identity", inputs: [previous], outputs: [output], name: "id_\(name)_\(k)"))
                previous = output
            }
            g.nodes.insert(contentsOf: chain, at: 0)
        }
    }
}

/// Expects the remarks `(pass, kind, reason, node)` in this order.
func expectRemarks(_ report: PassManager.Report, _ expected: [(String, Remark.Kind, String, String)],
                   sourceLocation: SourceLocation = #_sourceLocation) {
    let got = report.remarks.map { "\($0.pass) \($0.kind) \($0.reason) \($0.node)" }
    let want = expected.map { "\($0.0) \($0.1) \($0.2) \($0.3)" }
    #expect(got == want, "messages: \(report.remarks.map(\.message))", sourceLocation: sourceLocation)
}

/// The names of the graph's nodes, in order.
func nodeNames(_ graph: Graph) -> [String] { graph.nodes.map { $0.name ?? "?" } }

/// The names of the graph's initializers, in order.
func initializerNames(_ graph: Graph) -> [String] { graph.initializers.map { $0.name ?? "?" } }
