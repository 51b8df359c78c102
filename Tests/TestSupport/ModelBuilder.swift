import Equivalence
import ONNXGraph

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Deterministic random numbers

/// The tests' generator is the one `bnfold check` uses (SplitMix64): its
/// sequence depends only on the seed, so every test builds the same model on
/// every machine.
public typealias SeededGenerator = SplitMix64

extension SplitMix64 {
    /// Uniform on `range`.
    public mutating func uniform(_ range: ClosedRange<Double>) -> Double {
        Double.random(in: range, using: &self)
    }

    /// Normal with the given mean and standard deviation (Box–Muller).
    public mutating func normal(mean: Double = 0, standardDeviation: Double) -> Double {
        mean + standardDeviation * normal()
    }

    public mutating func normals(_ count: Int, mean: Double = 0, standardDeviation: Double) -> [Double] {
        (0..<count).map { _ in normal(mean: mean, standardDeviation: standardDeviation) }
    }

    public mutating func uniforms(_ count: Int, _ range: ClosedRange<Double>) -> [Double] {
        (0..<count).map { _ in uniform(range) }
    }
}

// MARK: - Tensors, value infos, nodes

/// A tensor of `type` holding `values` in `raw_data`. Float types are rounded
/// by the IR's own encoder; integer types (and bool) must hold integral values.
public func makeTensor(_ name: String?, _ type: DataType, dims: [Int], values: [Double]) -> Tensor {
    precondition(Reference.product(dims) == values.count, "\(values.count) values for shape \(dims)")
    if type.isFoldableFloat {
        guard let t = Tensor(name: name, elementType: type, dims: dims.map(Int64.init), values: values) else {
            preconditionFailure("cannot encode \(type)")
        }
        return t
    }
    var bytes: [UInt8] = []
    func append<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }
    for v in values {
        switch type {
        case .int8: append(Int8(v))
        case .uint8, .bool: append(UInt8(v))
        case .int16: append(Int16(v))
        case .uint16: append(UInt16(v))
        case .int32: append(Int32(v))
        case .uint32: append(UInt32(v))
        case .int64: append(Int64(v))
        case .uint64: append(UInt64(v))
        default: preconditionFailure("makeTensor does not build \(type)")
        }
    }
    var t = Tensor(name: name, elementType: type, dims: dims.map(Int64.init))
    t.rawData = ByteBuffer(bytes)
    return t
}

/// `values` as `type` holds them: rounded into the type and widened back.
public func rounded(_ values: [Double], to type: DataType) -> [Double] {
    // The tensor is built and read back by the IR under test; its element
    // conversions are checked on their own in ElementConversionTests.
    try! makeTensor(nil, type, dims: [values.count], values: values).doubles()
}

/// A dense tensor value info with fully known dimensions.
public func valueInfo(_ name: String, _ type: DataType, dims: [Int]) -> ValueInfo {
    ValueInfo(name: name, type: .tensor(type, dims: dims.map(Int64.init)))
}

/// A `Constant` node whose `value` attribute is `tensor`.
public func constantNode(output: String, tensor: Tensor, name: String? = nil) -> Node {
    Node(opType: "Constant", inputs: [], outputs: [output], name: name, attributes: [.tensor("value", tensor)])
}

extension Graph {
    /// The first node called `name`.
    public func node(named name: String) -> Node? { nodes.first { $0.name == name } }

    /// Index of the first node called `name`.
    public func nodeIndex(named name: String) -> Int? { nodes.firstIndex { $0.name == name } }

    /// Default-domain nodes of one operator type, in order.
    public func nodes(ofType opType: String) -> [Node] { nodes.filter { $0.isOp(opType) } }

    /// The tensor called `name`: an initializer, or the `value` of the
    /// `Constant` node that produces it.
    public func constantTensor(named name: String) -> Tensor? {
        if let t = initializer(named: name) { return t }
        guard let (index, _) = value(named: name).producer else { return nil }
        let node = self[index]
        guard node.isOp("Constant"), let a = node.attribute("value"), a.type == .tensor else { return nil }
        return a.t
    }

    /// The numbers of ``constantTensor(named:)``.
    public func constantValues(named name: String) throws -> [Double]? {
        try constantTensor(named: name)?.doubles()
    }

    /// Evaluates the Conv node `node` of this graph with the reference, its
    /// weight and bias read from the graph's constants.
    public func evaluateConv(_ node: Node, input: [Double], inputShape: [Int]) throws -> (values: [Double], shape: [Int]) {
        precondition(node.isOp("Conv"))
        guard let w = constantTensor(named: node.inputs[1]) else {
            preconditionFailure("weight '\(node.inputs[1])' is not a constant")
        }
        var bias: [Double]?
        if node.inputs.count >= 3, !node.inputs[2].isEmpty {
            guard let b = try constantValues(named: node.inputs[2]) else {
                preconditionFailure("bias '\(node.inputs[2])' is not a constant")
            }
            bias = b
        }
        return Reference.conv(
            input: input, inputShape: inputShape, weight: try w.doubles(), weightShape: w.dims.map(Int.init),
            bias: bias, group: Int(node.intAttribute("group") ?? 1),
            strides: node.intsAttribute("strides")?.map(Int.init),
            pads: node.intsAttribute("pads")?.map(Int.init),
            dilations: node.intsAttribute("dilations")?.map(Int.init))
    }
}

extension Model {
    /// Mutates the main graph.
    public mutating func updateGraph(_ body: (inout Graph) throws -> Void) rethrows {
        var g = graph ?? Graph()
        try body(&g)
        graph = g
    }

    /// Mutates the first node of the main graph called `name`.
    public mutating func updateNode(named name: String, _ body: (inout Node) throws -> Void) rethrows {
        try updateGraph { g in
            guard let i = g.nodeIndex(named: name) else { preconditionFailure("no node '\(name)'") }
            try body(&g.nodes[i])
        }
    }

    /// Replaces the data of the initializer called `name` (same type and shape).
    public mutating func setInitializer(_ name: String, values: [Double]) {
        updateGraph { g in
            guard let i = g.initializers.firstIndex(where: { $0.name == name }) else {
                preconditionFailure("no initializer '\(name)'")
            }
            let old = g.initializers[i]
            g.initializers[i] = makeTensor(name, old.elementType, dims: old.dims.map(Int.init), values: values)
        }
    }
}

// MARK: - Conv → BatchNormalization models

/// How the Conv's channels are grouped.
public enum Grouping: String, Sendable, CaseIterable, CustomStringConvertible {
    /// group = 1 (3 → 5 channels).
    case single
    /// group = 2 (4 → 6 channels).
    case two
    /// group = C_in = C_out = 4.
    case depthwise

    public var description: String { rawValue }
}

/// What ``ConvBNFixture`` builds: `Y = BatchNormalization(Conv(X, W, B?), γ, β, μ, σ²)`.
public struct ConvBNSpec: Sendable {
    /// Spatial rank (1–3); sets the geometry below.
    public var rank: Int
    public var inChannels: Int
    public var outChannels: Int
    public var group: Int
    public var spatial: [Int]
    public var kernel: [Int]
    public var strides: [Int]
    /// `[begin…, end…]`, deliberately asymmetric.
    public var pads: [Int]
    public var dilations: [Int]
    /// Whether the Conv has a bias input.
    public var hasBias: Bool
    /// Element type of X, W, B, the BN parameters and Y.
    public var elementType: DataType
    /// The BN's `epsilon` attribute; nil leaves it out (ONNX default 1e-5).
    public var epsilon: Float?
    /// The default-domain opset the model imports. BN attributes follow its
    /// BatchNormalization version: `is_test = 1` before 7, an explicit
    /// `training_mode = 0` at 14.
    public var bnOpset: Int64
    /// IR < 4 also lists every initializer as a graph input.
    public var irVersion: Int64
    /// Seed of the BN parameters and Conv bias.
    public var seed: UInt64
    /// Seed of the Conv weights (defaults to `seed`): equal weight seeds give equal weights.
    public var weightSeed: UInt64?
    /// σ² is drawn uniformly from this range.
    public var varianceRange: ClosedRange<Double>
    /// Put W, B and the BN parameters in `Constant` nodes instead of initializers.
    public var constantsAsNodes: Bool
    /// Prefixed to every name except the graph input `X`.
    public var namePrefix: String

    public init(rank: Int = 2, grouping: Grouping = .single, hasBias: Bool = true, elementType: DataType = .float,
                epsilon: Float? = nil, bnOpset: Int64 = 15, irVersion: Int64 = 8, seed: UInt64 = 1) {
        self.rank = rank
        switch grouping {
        case .single: (inChannels, outChannels, group) = (3, 5, 1)
        case .two: (inChannels, outChannels, group) = (4, 6, 2)
        case .depthwise: (inChannels, outChannels, group) = (4, 4, 4)
        }
        switch rank {
        case 1:
            (spatial, kernel, strides, pads, dilations) = ([9], [3], [2], [1, 1], [1])
        case 2:
            (spatial, kernel, strides, pads, dilations) = ([6, 7], [3, 3], [1, 2], [1, 0, 1, 2], [1, 2])
        case 3:
            (spatial, kernel, strides, pads, dilations) = ([4, 5, 6], [3, 2, 3], [1, 1, 2], [1, 0, 1, 1, 1, 0], [1, 2, 1])
        default:
            preconditionFailure("rank \(rank) not in 1...3")
        }
        self.hasBias = hasBias
        self.elementType = elementType
        self.epsilon = epsilon
        self.bnOpset = bnOpset
        self.irVersion = irVersion
        self.seed = seed
        self.weightSeed = nil
        self.varianceRange = 0.5...2
        self.constantsAsNodes = false
        self.namePrefix = ""
    }

    public var weightShape: [Int] { [outChannels, inChannels / group] + kernel }
    public var inputShape: [Int] { [1, inChannels] + spatial }
    public var outputShape: [Int] {
        [1, outChannels] + (0..<rank).map {
            Reference.convOutputSize(input: spatial[$0], kernel: kernel[$0], stride: strides[$0],
                                     padBegin: pads[$0], padEnd: pads[rank + $0], dilation: dilations[$0])
        }
    }
}

/// A Conv → BatchNormalization model and the parameters it was built from.
///
/// Every parameter array holds exactly the numbers the model stores (drawn
/// in Double, rounded once into the element type), so ``reference(input:epsilon:)``
/// computes what the unfolded model computes, in Double.
public struct ConvBNFixture {
    public var model: Model
    public let spec: ConvBNSpec
    /// Names of the values and nodes (all but `input` carry the spec's prefix).
    public let names: Names

    public let weight: [Double]
    public let convBias: [Double]?
    public let scale: [Double]
    public let bnBias: [Double]
    public let mean: [Double]
    public let variance: [Double]

    public struct Names: Sendable {
        public var input = "X"
        public var weight, convBias, convOutput, output, scale, bnBias, mean, variance, conv, bn: String
        init(prefix p: String) {
            weight = p + "W"; convBias = p + "B"; convOutput = p + "conv_out"; output = p + "Y"
            scale = p + "bn_scale"; bnBias = p + "bn_bias"; mean = p + "bn_mean"; variance = p + "bn_var"
            conv = p + "conv"; bn = p + "bn"
        }
        /// The BN parameter names, in input order (γ, β, μ, σ²).
        public var bnParameters: [String] { [scale, bnBias, mean, variance] }
    }

    /// The model's graph (always present).
    public var graph: Graph { model.graph! }
    public var weightShape: [Int] { spec.weightShape }
    public var inputShape: [Int] { spec.inputShape }
    public var outputShape: [Int] { spec.outputShape }

    /// ε as the BatchNormalization sees it: a FLOAT attribute, widened.
    public var epsilon: Double { Double(spec.epsilon ?? 1e-5) }

    /// The exact per-channel BN scale `γ / sqrt(σ² + ε)`.
    public func bnScale(epsilon: Double? = nil) -> [Double] {
        let eps = epsilon ?? self.epsilon
        return zip(scale, variance).map { $0 / ($1 + eps).squareRoot() }
    }

    public init(_ spec: ConvBNSpec) {
        self.spec = spec
        let names = Names(prefix: spec.namePrefix)
        self.names = names
        let type = spec.elementType
        let channels = spec.outChannels

        var weightRNG = SeededGenerator(seed: spec.weightSeed ?? spec.seed)
        var rng = SeededGenerator(seed: spec.seed &* 0x2545_F491_4F6C_DD1D &+ 17)
        let w = rounded(weightRNG.normals(Reference.product(spec.weightShape), standardDeviation: 1), to: type)
        let b = spec.hasBias ? rounded(rng.normals(channels, standardDeviation: 0.5), to: type) : nil
        // γ in ±[0.5, 1.5], about a third negative, channel 0 always negative.
        let gamma = rounded((0..<channels).map { c in
            let magnitude = rng.uniform(0.5...1.5)
            return c == 0 || rng.uniform(0...1) < 0.3 ? -magnitude : magnitude
        }, to: type)
        let beta = rounded(rng.normals(channels, standardDeviation: 0.3), to: type)
        let mu = rounded(rng.normals(channels, standardDeviation: 0.5), to: type)
        let sigma2 = rounded(rng.uniforms(channels, spec.varianceRange), to: type)
        (weight, convBias, scale, bnBias, mean, variance) = (w, b, gamma, beta, mu, sigma2)

        var constants: [Tensor] = [makeTensor(names.weight, type, dims: spec.weightShape, values: w)]
        if let b { constants.append(makeTensor(names.convBias, type, dims: [channels], values: b)) }
        for (name, values) in zip(names.bnParameters, [gamma, beta, mu, sigma2]) {
            constants.append(makeTensor(name, type, dims: [channels], values: values))
        }

        var convAttributes: [Attribute] = [
            .ints("kernel_shape", spec.kernel.map(Int64.init)),
            .ints("strides", spec.strides.map(Int64.init)),
            .ints("pads", spec.pads.map(Int64.init)),
            .ints("dilations", spec.dilations.map(Int64.init)),
        ]
        if spec.group != 1 { convAttributes.append(.int("group", Int64(spec.group))) }
        let conv = Node(opType: "Conv",
                        inputs: [names.input, names.weight] + (spec.hasBias ? [names.convBias] : []),
                        outputs: [names.convOutput], name: names.conv, attributes: convAttributes)

        var bnAttributes: [Attribute] = []
        if let e = spec.epsilon { bnAttributes.append(.float("epsilon", e)) }
        bnAttributes.append(.float("momentum", 0.9))
        if spec.bnOpset < 7 { bnAttributes.append(.int("is_test", 1)) }
        if spec.bnOpset == 14 { bnAttributes.append(.int("training_mode", 0)) }
        let bn = Node(opType: "BatchNormalization", inputs: [names.convOutput] + names.bnParameters,
                      outputs: [names.output], name: names.bn, attributes: bnAttributes)

        var graph = Graph(name: spec.namePrefix + "conv_bn",
                          inputs: [valueInfo(names.input, type, dims: spec.inputShape)],
                          outputs: [valueInfo(names.output, type, dims: spec.outputShape)])
        if spec.constantsAsNodes {
            graph.nodes = constants.map { t in
                var value = t
                value.name = nil
                return constantNode(output: t.name!, tensor: value, name: "const_" + t.name!)
            } + [conv, bn]
        } else {
            graph.nodes = [conv, bn]
            graph.initializers = constants
            if spec.irVersion < 4 {
                graph.inputs += constants.map { valueInfo($0.name!, type, dims: $0.dims.map(Int.init)) }
            }
        }
        graph.valueInfo = [valueInfo(names.convOutput, type, dims: spec.outputShape)]

        model = Model(irVersion: spec.irVersion, opsetImports: [OperatorSetID(domain: "", version: spec.bnOpset)],
                      graph: graph)
        model.producerName = "bnfold-tests"
    }

    /// A deterministic input `X` (standard normal, rounded into the element type).
    public func randomInput(seed: UInt64 = 99) -> [Double] {
        var rng = SeededGenerator(seed: seed)
        return rounded(rng.normals(Reference.product(inputShape), standardDeviation: 1), to: spec.elementType)
    }

    /// Conv then BatchNormalization of the original parameters, in Double.
    public func reference(input: [Double], epsilon: Double? = nil) -> [Double] {
        let y = Reference.conv(input: input, inputShape: inputShape, weight: weight, weightShape: weightShape,
                               bias: convBias, group: spec.group, strides: spec.strides, pads: spec.pads,
                               dilations: spec.dilations)
        return Reference.batchNorm(input: y.values, shape: y.shape, scale: scale, bias: bnBias, mean: mean,
                                   variance: variance, epsilon: epsilon ?? self.epsilon)
    }
}
