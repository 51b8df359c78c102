import ONNXGraph

/// A small model built node by node, its constants drawn from a seeded
/// generator and stored rounded into one element type — so that the
/// numbers a test reads back are exactly the numbers the model holds.
public struct ModelSketch {
    public let type: DataType
    public var rng: SeededGenerator
    public var graph: Graph
    public let inputName: String
    public let inputShape: [Int]

    /// A graph with one input, declared with its full shape (folds that
    /// depend on a value's rank read it from such declarations).
    public init(type: DataType, seed: UInt64, input: String = "X", inputShape: [Int]) {
        self.type = type
        self.rng = SeededGenerator(seed: seed)
        self.inputName = input
        self.inputShape = inputShape
        graph = Graph(name: "sketch", inputs: [valueInfo(input, type, dims: inputShape)])
    }

    /// Adds an initializer holding `values` rounded into the element type.
    @discardableResult
    public mutating func constant(_ name: String, dims: [Int], values: [Double], type: DataType? = nil) -> String {
        graph.initializers.append(makeTensor(name, type ?? self.type, dims: dims, values: values))
        return name
    }

    /// Adds an initializer of standard-normal values (times `scale`).
    @discardableResult
    public mutating func randomConstant(_ name: String, dims: [Int], scale: Double = 1) -> String {
        constant(name, dims: dims, values: rng.normals(Reference.product(dims), standardDeviation: scale))
    }

    public mutating func node(_ opType: String, _ inputs: [String], _ output: String, name: String,
                              _ attributes: [Attribute] = []) {
        graph.nodes.append(Node(opType: opType, inputs: inputs, outputs: [output], name: name, attributes: attributes))
    }

    /// A BatchNormalization with parameters drawn like ``ConvBNFixture``'s:
    /// γ in ±[0.5, 1.5] (channel 0 negative), β ~ N(0, 0.3²), μ ~ N(0, 0.5²),
    /// σ² uniform in [0.5, 2]; parameters named `<name>_scale` etc.
    public mutating func batchNorm(_ input: String, _ output: String, channels: Int, name: String,
                                   epsilon: Float? = nil) {
        let gamma = (0..<channels).map { c in
            let magnitude = rng.uniform(0.5...1.5)
            return c == 0 || rng.uniform(0...1) < 0.3 ? -magnitude : magnitude
        }
        let beta = rng.normals(channels, standardDeviation: 0.3)
        let mean = rng.normals(channels, standardDeviation: 0.5)
        let variance = rng.uniforms(channels, 0.5...2)
        var params: [String] = []
        for (suffix, values) in [("scale", gamma), ("bias", beta), ("mean", mean), ("var", variance)] {
            params.append(constant("\(name)_\(suffix)", dims: [channels], values: values))
        }
        node("BatchNormalization", [input] + params, output, name: name,
             epsilon.map { [.float("epsilon", $0)] } ?? [])
    }

    /// The model, with `output` as its one graph output (type declared,
    /// shape not: the tests do not rely on output shapes being declared).
    public func model(output: String, opset: Int64 = 15, irVersion: Int64 = 8) -> Model {
        var g = graph
        g.outputs = [ValueInfo(name: output, type: TypeProto(value: .tensor(.init(elementType: type, shape: nil))))]
        var model = Model(irVersion: irVersion, opsetImports: [OperatorSetID(domain: "", version: opset)], graph: g)
        model.producerName = "bnfold-tests"
        return model
    }

    /// A deterministic input (standard normal, rounded into the element type).
    public func randomInput(seed: UInt64) -> [Double] {
        var r = SeededGenerator(seed: seed)
        return rounded(r.normals(Reference.product(inputShape), standardDeviation: 1), to: type)
    }
}
