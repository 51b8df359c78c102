import Testing
import ONNXGraph
@testable import ReferenceRuntime
import TestSupport

/// Unit roundoff of float32 and float64 (half an ulp of 1).
let u32 = 0x1p-24
let u64 = 0x1p-53

/// Runs one node on the given inputs (names "in0", "in1", …; "" for an
/// omitted optional input) and returns its outputs in order.
func runNode(_ op: String, _ inputs: [RuntimeTensor?], attributes: [Attribute] = [], outputs: Int = 1,
             opset: Int64 = 17) throws -> [RuntimeTensor] {
    let inputNames = inputs.enumerated().map { $0.element == nil ? "" : "in\($0.offset)" }
    let outputNames = (0..<outputs).map { "out\($0)" }
    let node = Node(opType: op, inputs: inputNames, outputs: outputNames, name: "n", attributes: attributes)
    var graph = Graph(name: "g", nodes: [node])
    graph.inputs = inputNames.filter { !$0.isEmpty }.map { ValueInfo(name: $0) }
    graph.outputs = outputNames.map { ValueInfo(name: $0) }
    var feeds: [String: RuntimeTensor] = [:]
    for (i, t) in inputs.enumerated() { if let t { feeds["in\(i)"] = t } }
    let result = try Interpreter(graph: graph, opset: opset).run(inputs: feeds)
    return outputNames.map { result[$0]! }
}

/// Random values that are exactly representable in `type` (so the Double
/// reference and the runtime start from the same numbers).
func randomValues(_ count: Int, _ rng: inout SeededGenerator, type: DataType = .float, range: ClosedRange<Double> = -1...1) -> [Double] {
    let v = rng.uniforms(count, range)
    switch type {
    case .float: return v.map { Double(Float($0)) }
    case .double: return v
    default: return rounded(v, to: type)
    }
}

func tensor(_ shape: [Int], _ values: [Double], _ type: DataType = .float) -> RuntimeTensor {
    try! RuntimeTensor(shape: shape, values: values, elementType: type)
}

func ints(_ values: [Int]) -> RuntimeTensor {
    RuntimeTensor(shape: [values.count], ints: values.map(Int64.init))
}

/// Expects every `actual[i]` within `bound[i]` of `expected[i]`; reports the worst element.
func expectClose(_ actual: [Double], _ expected: [Double], bound: [Double], _ what: String,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(actual.count == expected.count, "\(what): \(actual.count) values, expected \(expected.count)", sourceLocation: sourceLocation)
    guard actual.count == expected.count else { return }
    var worst: (index: Int, excess: Double)? = nil
    for i in actual.indices {
        let err = abs(actual[i] - expected[i])
        let ok = err <= bound[i] || (actual[i].isNaN && expected[i].isNaN)
        if !ok, worst == nil || err / max(bound[i], .leastNonzeroMagnitude) > worst!.excess {
            worst = (i, err / max(bound[i], .leastNonzeroMagnitude))
        }
    }
    if let w = worst {
        Issue.record("\(what): element \(w.index) is \(actual[w.index]), expected \(expected[w.index]) ± \(bound[w.index])",
                     sourceLocation: sourceLocation)
    }
}

/// Exact comparison (layout operators, max pooling: no arithmetic).
func expectEqual(_ actual: RuntimeTensor, shape: [Int], _ expected: [Double], _ what: String,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(actual.shape == shape, "\(what): shape", sourceLocation: sourceLocation)
    #expect(actual.doubles() == expected, "\(what): values", sourceLocation: sourceLocation)
}

/// Row-major multi-index of a flat position.
func unflatten(_ index: Int, _ shape: [Int]) -> [Int] { Reference.unflatten(index, shape: shape) }

func flatten(_ index: [Int], _ shape: [Int]) -> Int {
    var flat = 0
    for (i, d) in zip(index, shape) { flat = flat * d + i }
    return flat
}

func product(_ shape: [Int]) -> Int { Reference.product(shape) }
