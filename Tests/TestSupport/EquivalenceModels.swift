import ONNXGraph

/// Models for the equivalence checks: a ConvTranspose → BatchNormalization
/// network and hand-made folds of it, right and wrong.
public enum ConvTransposeBN {
    /// ConvTranspose weights are [C_in, C_out/group, k…]: the output channel is axis 1.
    public static let inChannels = 3, outChannels = 5, kernel = 3, spatial = 6

    public struct Parameters {
        public var weight: [Double]      // [C_in, C_out, k, k]
        public var bias: [Double]        // [C_out]
        public var scale: [Double], shift: [Double], mean: [Double], variance: [Double]
        public var epsilon = 1e-5
    }

    public static func parameters(seed: UInt64 = 11) -> Parameters {
        var rng = SeededGenerator(seed: seed)
        let w = rounded(rng.uniforms(inChannels * outChannels * kernel * kernel, -0.5...0.5), to: .float)
        return Parameters(weight: w,
                          bias: rounded(rng.uniforms(outChannels, -0.5...0.5), to: .float),
                          scale: rounded(rng.uniforms(outChannels, 0.5...2), to: .float),
                          shift: rounded(rng.uniforms(outChannels, -1...1), to: .float),
                          mean: rounded(rng.uniforms(outChannels, -1...1), to: .float),
                          variance: rounded(rng.uniforms(outChannels, 0.25...2), to: .float))
    }

    static func model(nodes: [Node], initializers: [Tensor]) -> Model {
        let graph = Graph(name: "convtranspose_bn", nodes: nodes,
                          inputs: [valueInfo("x", .float, dims: [1, inChannels, spatial, spatial])],
                          outputs: [ValueInfo(name: "y", type: .tensor(.float, dims: [1, Int64(outChannels), Int64(spatial + kernel - 1), Int64(spatial + kernel - 1)]))],
                          initializers: initializers)
        return Model(irVersion: 8, opsetImports: [OperatorSetID(domain: "", version: 17)], graph: graph)
    }

    static var weightDims: [Int] { [inChannels, outChannels, kernel, kernel] }

    /// ConvTranspose(x, W, b) → BatchNormalization → y.
    public static func original(_ p: Parameters = parameters()) -> Model {
        let c = [outChannels]
        return model(nodes: [
            Node(opType: "ConvTranspose", inputs: ["x", "W", "B"], outputs: ["c"], name: "deconv"),
            Node(opType: "BatchNormalization", inputs: ["c", "gamma", "beta", "mean", "var"], outputs: ["y"], name: "bn",
                 attributes: [.float("epsilon", Float(p.epsilon))]),
        ], initializers: [
            makeTensor("W", .float, dims: weightDims, values: p.weight),
            makeTensor("B", .float, dims: c, values: p.bias),
            makeTensor("gamma", .float, dims: c, values: p.scale),
            makeTensor("beta", .float, dims: c, values: p.shift),
            makeTensor("mean", .float, dims: c, values: p.mean),
            makeTensor("var", .float, dims: c, values: p.variance),
        ])
    }

    /// The BN folded by hand: `W'[i, o] = W[i, o]·s[channel]`, `b' = (b − mean)·s + β`,
    /// with `s = γ/√(var + ε)`. `channelAxis` 1 is right; 0 (the input
    /// channel, `s[i mod C_out]`) is the classic mistake.
    public static func folded(_ p: Parameters = parameters(), channelAxis: Int = 1, epsilon: Double? = nil) -> Model {
        let eps = epsilon ?? p.epsilon
        let s = (0..<outChannels).map { p.scale[$0] / (p.variance[$0] + eps).squareRoot() }
        let k2 = kernel * kernel
        var w = p.weight
        for i in 0..<inChannels {
            for o in 0..<outChannels {
                let factor = channelAxis == 1 ? s[o] : s[i % outChannels]
                for j in 0..<k2 { w[(i * outChannels + o) * k2 + j] *= factor }
            }
        }
        let b = (0..<outChannels).map { (p.bias[$0] - p.mean[$0]) * s[$0] + p.shift[$0] }
        return model(nodes: [
            Node(opType: "ConvTranspose", inputs: ["x", "W", "B"], outputs: ["y"], name: "deconv"),
        ], initializers: [
            makeTensor("W", .float, dims: weightDims, values: w),
            makeTensor("B", .float, dims: [outChannels], values: b),
        ])
    }
}

extension Model {
    /// A copy in which every BatchNormalization's ε attribute is `epsilon`
    /// (folding it then gives the "forgot ε" mistake when `epsilon` is tiny).
    public func withBatchNormEpsilon(_ epsilon: Float) -> Model {
        var m = self
        m.updateGraph { g in
            for i in g.nodes.indices where g.nodes[i].isOp("BatchNormalization") {
                g.nodes[i].attributes.removeAll { $0.name == "epsilon" }
                g.nodes[i].attributes.append(.float("epsilon", epsilon))
            }
        }
        return m
    }
}
