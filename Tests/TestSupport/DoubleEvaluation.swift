import ONNXGraph

/// Runs a small graph of `Conv`, `ConvTranspose`, `Gemm`, `MatMul`, `Add`,
/// `Mul`, `BatchNormalization` and `Identity` in Double with the
/// ``Reference`` loops, reading its constants from the graph (initializers
/// or `Constant` nodes with `value` or `value_floats`). The tests use it on the unfolded graph (the reference) and on
/// the folded one (its stored, rounded constants, evaluated exactly).
///
/// Independent of the reference runtime on purpose: the passes' tests
/// should not depend on the code that verifies the passes.
public struct DoubleEvaluation {
    /// The graph's first output.
    public var values: [Double]
    public var shape: [Int]
    /// Bound on the number of terms any output is summed from, added over
    /// the graph's nodes: `(terms + 10)·2^-53` relative to the magnitudes
    /// bounds the Double evaluation's own rounding error.
    public var terms: Int

    /// Evaluates `graph` on its one non-constant input.
    ///
    /// With `absolute`, every constant and the input are replaced by their
    /// magnitudes and BatchNormalization computes `|s|·(x + |μ|) + |β|`
    /// (s = γ/sqrt(σ²+ε)): each output is then the sum of the magnitudes of
    /// every term that makes it up — the scale against which rounding
    /// errors are measured.
    public init(_ graph: Graph, input: [Double], inputShape: [Int], absolute: Bool = false) throws {
        var values: [String: (values: [Double], shape: [Int])] = [:]
        func magnitude(_ v: [Double]) -> [Double] { absolute ? v.map(\.magnitude) : v }
        for t in graph.initializers {
            if let name = t.name { values[name] = (magnitude(try t.doubles()), t.dims.map(Int.init)) }
        }
        let inputName = try required(graph.inputs.first { $0.name.map { values[$0] == nil } ?? false }?.name)
        values[inputName] = (magnitude(input), inputShape)
        var terms = 0
        for node in graph.nodes {
            func operand(_ slot: Int) throws -> (values: [Double], shape: [Int])? {
                guard slot < node.inputs.count, !node.inputs[slot].isEmpty else { return nil }
                return try required(values[node.inputs[slot]], "'\(node.inputs[slot])' is not computed yet")
            }
            let ints = { (name: String) in node.intsAttribute(name)?.map(Int.init) }
            let group = Int(node.intAttribute("group") ?? 1)
            let result: (values: [Double], shape: [Int])
            switch node.opType {
            case "Constant":
                if let floats = node.attribute("value_floats")?.floats, !floats.isEmpty {
                    result = (magnitude(floats.map(Double.init)), [floats.count])
                } else {
                    let t = try required(node.attribute("value")?.t)
                    result = (magnitude(try t.doubles()), t.dims.map(Int.init))
                }
            case "Identity":
                result = try operand(0)!
            case "Conv":
                let (x, w, b) = (try operand(0)!, try operand(1)!, try operand(2))
                var pads = ints("pads")
                if let autoPad = node.attribute("auto_pad")?.s.map({ String(decoding: $0, as: UTF8.self) }), autoPad != "NOTSET" {
                    // The tests use VALID, and SAME_* only with 1-sized kernels: no padding either way.
                    precondition(autoPad == "VALID" || w.shape.dropFirst(2).allSatisfy { $0 == 1 }, "auto_pad \(autoPad)")
                    pads = nil
                }
                result = Reference.conv(input: x.values, inputShape: x.shape, weight: w.values, weightShape: w.shape,
                                        bias: b?.values, group: group, strides: ints("strides"), pads: pads,
                                        dilations: ints("dilations"))
                terms += w.values.count / w.shape[0] + 1
            case "ConvTranspose":
                let (x, w, b) = (try operand(0)!, try operand(1)!, try operand(2))
                result = Reference.convTranspose(input: x.values, inputShape: x.shape, weight: w.values,
                                                 weightShape: w.shape, bias: b?.values, group: group,
                                                 strides: ints("strides"), pads: ints("pads"),
                                                 dilations: ints("dilations"), outputPadding: ints("output_padding"))
                terms += w.values.count / w.shape[1] / group + 1
            case "Gemm":
                let (a, b, c) = (try operand(0)!, try operand(1)!, try operand(2))
                let alpha = Double(node.floatAttribute("alpha") ?? 1), beta = Double(node.floatAttribute("beta") ?? 1)
                result = Reference.gemm(a: a.values, aShape: a.shape, b: b.values, bShape: b.shape, c: c,
                                        transA: node.intAttribute("transA") == 1, transB: node.intAttribute("transB") == 1,
                                        alpha: absolute ? alpha.magnitude : alpha, beta: absolute ? beta.magnitude : beta)
                terms += b.values.count + 2
            case "MatMul":
                let (a, b) = (try operand(0)!, try operand(1)!)
                result = Reference.matMul(a: a.values, aShape: a.shape, b: b.values, bShape: b.shape)
                terms += b.shape[0]
            case "Add", "Mul":
                let (a, b) = (try operand(0)!, try operand(1)!)
                let shape = Reference.broadcastShape(a.shape, b.shape)
                let (x, y) = (Reference.broadcast(a.values, from: a.shape, to: shape),
                              Reference.broadcast(b.values, from: b.shape, to: shape))
                result = (zip(x, y).map { node.opType == "Add" ? $0 + $1 : $0 * $1 }, shape)
                terms += 1
            case "BatchNormalization":
                let x = try operand(0)!
                let (gamma, beta, mean, variance) = (try operand(1)!.values, try operand(2)!.values,
                                                     try operand(3)!.values, try operand(4)!.values)
                let epsilon = Double(node.floatAttribute("epsilon") ?? 1e-5)
                if absolute {
                    // |s|·(|x| + |μ|) + |β|; variance was made non-negative by magnitude(), and is positive here.
                    result = (Reference.batchNorm(input: x.values, shape: x.shape, scale: gamma, bias: beta,
                                                  mean: mean.map { -$0 }, variance: variance, epsilon: epsilon), x.shape)
                } else {
                    result = (Reference.batchNorm(input: x.values, shape: x.shape, scale: gamma, bias: beta,
                                                  mean: mean, variance: variance, epsilon: epsilon), x.shape)
                }
                terms += 10
            default:
                preconditionFailure("DoubleEvaluation does not run \(node.opType)")
            }
            values[node.outputs[0]] = result
        }
        let output = try required(values[try required(graph.outputs.first?.name)])
        (self.values, self.shape, self.terms) = (output.values, output.shape, terms)
    }
}

/// The value, or an error saying what was missing.
private func required<T>(_ value: T?, _ message: @autoclosure () -> String = "missing value") throws -> T {
    guard let value else { throw EvaluationError(message()) }
    return value
}

struct EvaluationError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
