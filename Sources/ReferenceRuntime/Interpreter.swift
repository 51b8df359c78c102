import ONNXGraph

/// Why a graph could not be run: names the node and its operator.
public struct RuntimeError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The node's name, or `OpType#index` when it has none; empty for graph-level problems.
    public let node: String
    public let opType: String
    public let problem: String

    public init(node: String, opType: String, problem: String) {
        self.node = node
        self.opType = opType
        self.problem = problem
    }

    public var description: String {
        node.isEmpty ? problem : "node '\(node)' (\(opType)): \(problem)"
    }
}

/// A problem inside a kernel; the interpreter adds the node and operator.
struct KernelError: Error, CustomStringConvertible {
    let message: String
    init(_ message: String) { self.message = message }
    var description: String { message }
}

/// Executes an ONNX graph on the CPU, node by node in file order (ONNX
/// requires topological order; `Model.validate()` checks it).
///
/// Initializers and `Constant` nodes are constants; a graph input with the
/// same name as an initializer may be overridden by the caller. Every
/// operator outside ``supportedOperators`` — or from another domain — is an
/// error naming the node, never a silent pass.
public struct Interpreter {
    /// The graph as run: in float64 mode, a copy whose float types, `Cast`
    /// targets and constant attributes are double (initializers stay as
    /// loaded and are widened as nodes read them).
    public let graph: Graph
    /// The default-domain opset version (attribute defaults depend on it).
    public let opset: Int64
    /// True when every floating-point value is computed in float64.
    public let computesInFloat64: Bool
    private let constants: [String: RuntimeTensor]

    public init(graph: Graph, opset: Int64) throws {
        self.graph = graph
        self.opset = opset
        self.computesInFloat64 = false
        var constants: [String: RuntimeTensor] = [:]
        for t in graph.initializers {
            guard let name = t.name, !name.isEmpty else { continue }
            do {
                constants[name] = try RuntimeTensor(t, releasingSource: true)
            } catch {
                throw RuntimeError(node: "", opType: "", problem: "initializer '\(name)': \(error)")
            }
        }
        self.constants = constants
    }

    private init(graph: Graph, opset: Int64, computesInFloat64: Bool, constants: [String: RuntimeTensor]) {
        self.graph = graph
        self.opset = opset
        self.computesInFloat64 = computesInFloat64
        self.constants = constants
    }

    /// An interpreter for a model's graph at its default-domain opset.
    public init(model: Model) throws {
        guard let graph = model.graph else {
            throw RuntimeError(node: "", opType: "", problem: "the model has no graph")
        }
        guard let opset = model.opsetVersion() else {
            throw RuntimeError(node: "", opType: "", problem: "the model imports no default-domain opset")
        }
        try self.init(graph: graph, opset: opset)
    }

    /// The same network computed in float64: float, float16 and bfloat16
    /// inputs, outputs, `Cast` targets and constants all become double
    /// (widening is exact), so the only rounding left is float64's.
    ///
    /// The loaded initializers are shared, not copied: each is widened when
    /// a node reads it and dropped after, so a float64 reference run of a
    /// large model holds one extra layer's weights at a time instead of a
    /// double-size copy of all of them.
    public func computingInFloat64() throws -> Interpreter {
        if computesInFloat64 { return self }
        let retyped = try graph.retypingFloats(to: .double, initializers: false)
        return Interpreter(graph: retyped, opset: opset, computesInFloat64: true, constants: constants)
    }

    /// Operators of the default domain this runtime executes.
    public static var supportedOperators: Set<String> { Set(kernels.keys) }

    /// The nodes (display name, operator) this runtime cannot execute:
    /// unknown operators, operators of other domains, and nodes holding
    /// subgraphs. Empty means the whole graph can run.
    public static func unsupportedNodes(in graph: Graph) -> [(node: String, opType: String)] {
        graph.nodes.enumerated().compactMap { index, node in
            let ok = node.isDefaultDomain && kernels[node.opType] != nil && node.subgraphs.isEmpty
            return ok ? nil : (node.displayName(index: index), node.opType)
        }
    }

    /// The operator types (with their domain when not the default one) that
    /// keep this graph from running, sorted.
    public static func unsupportedOperators(in graph: Graph) -> [String] {
        var result = Set<String>()
        for node in graph.nodes where !(node.isDefaultDomain && kernels[node.opType] != nil && node.subgraphs.isEmpty) {
            result.insert(node.isDefaultDomain ? node.opType : "\(node.domain ?? ""):\(node.opType)")
        }
        return result.sorted()
    }

    /// Runs the graph. `inputs` gives every graph input that is not an
    /// initializer; returns every graph output by name.
    ///
    /// `observe`, when given, is called after each node with the node's
    /// index and its wall time in seconds (for profiling).
    public func run(inputs: [String: RuntimeTensor],
                    observe: ((_ nodeIndex: Int, _ seconds: Double) -> Void)? = nil) throws -> [String: RuntimeTensor] {
        var values = constants
        for input in graph.inputs {
            guard let name = input.name, !name.isEmpty else { continue }
            if var given = inputs[name] {
                if computesInFloat64 { given = given.widenedToDouble() }
                try Interpreter.check(given, against: input)
                values[name] = given
            } else if values[name] == nil {
                throw RuntimeError(node: "", opType: "", problem: "graph input '\(name)' was not given")
            }
        }
        for (name, value) in inputs where values[name] == nil {
            values[name] = computesInFloat64 ? value.widenedToDouble() : value
        }

        // Free each intermediate after its last read (graph outputs are kept):
        // it leaves `values` before the node runs, so a kernel holding the
        // only reference may reuse its buffer for the result.
        var lastUse: [String: Int] = [:]
        for (i, node) in graph.nodes.enumerated() { for name in node.inputs where !name.isEmpty { lastUse[name] = i } }
        let outputNames = Set(graph.outputs.compactMap(\.name))
        let clock = ContinuousClock()

        for (index, node) in graph.nodes.enumerated() {
            let started = observe == nil ? nil : clock.now
            let display = { node.displayName(index: index) }
            func fail(_ problem: String) -> RuntimeError { RuntimeError(node: display(), opType: node.opType, problem: problem) }
            guard node.isDefaultDomain else {
                throw fail("operator \(node.domain ?? ""):\(node.opType) is not supported (only the default ONNX domain is)")
            }
            guard let kernel = Interpreter.kernels[node.opType] else {
                throw fail("operator \(node.opType) is not supported")
            }
            guard node.subgraphs.isEmpty else { throw fail("nodes with subgraphs are not supported") }
            let context = KernelContext(node: node, opset: opset)
            context.inputs.reserveCapacity(node.inputs.count)
            for name in node.inputs {
                if name.isEmpty { context.inputs.append(nil); continue }
                guard let v = values[name] else { throw fail("input '\(name)' is not defined") }
                context.inputs.append(computesInFloat64 && constants[name] != nil ? v.widenedToDouble() : v)
            }
            for name in node.inputs where !name.isEmpty && lastUse[name] == index && !outputNames.contains(name) && constants[name] == nil {
                values[name] = nil
            }
            var results: [RuntimeTensor]
            do {
                results = try kernel(context)
            } catch let error as KernelError {
                throw fail(error.message)
            }
            for (slot, name) in node.outputs.enumerated() where !name.isEmpty {
                guard slot < results.count else {
                    throw fail("output \(slot) ('\(name)') is not supported by this runtime")
                }
                var r = results[slot]
                results[slot] = RuntimeTensor(shape: [], elementType: .undefined, storage: .int([]))
                r.roundToElementType()
                values[name] = r
            }
            if let started, let observe {
                let d = clock.now - started
                observe(index, Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18)
            }
        }
        var outputs: [String: RuntimeTensor] = [:]
        for output in graph.outputs {
            guard let name = output.name, !name.isEmpty else { continue }
            guard let v = values[name] else {
                throw RuntimeError(node: "", opType: "", problem: "graph output '\(name)' was not computed")
            }
            outputs[name] = computesInFloat64 ? v.widenedToDouble() : v
        }
        return outputs
    }
}

extension Interpreter {
    /// A given input must have the declared element type and every
    /// declared fixed dimension (symbolic and unknown dimensions match anything).
    static func check(_ value: RuntimeTensor, against info: ValueInfo) throws {
        let name = info.name ?? ""
        guard let type = info.type?.tensorType else { return }
        if let declared = type.elementType, declared != .undefined, declared != value.elementType {
            throw RuntimeError(node: "", opType: "", problem: "graph input '\(name)' is \(declared), but a \(value.elementType) tensor was given")
        }
        guard let dims = type.shape?.dims else { return }
        guard dims.count == value.rank else {
            throw RuntimeError(node: "", opType: "", problem: "graph input '\(name)' has rank \(dims.count), but shape \(value.shape) was given")
        }
        for (i, d) in dims.enumerated() {
            if case .value(let v)? = d.value, v != Int64(value.shape[i]) {
                throw RuntimeError(node: "", opType: "", problem: "graph input '\(name)' has dimension \(v) on axis \(i), but shape \(value.shape) was given")
            }
        }
    }
}

/// What a kernel sees: its node (attributes), its inputs (nil for an omitted
/// optional input) and the opset.
final class KernelContext {
    let node: Node
    /// Inputs in node order; a kernel may ``take(_:)`` one to reuse its buffer.
    var inputs: [RuntimeTensor?] = []
    let opset: Int64

    init(node: Node, opset: Int64, inputs: [RuntimeTensor?] = []) {
        self.node = node
        self.opset = opset
        self.inputs = inputs
    }

    /// A required input, moved out of the context: when the interpreter
    /// has released it (this node is its last reader), the caller holds the
    /// only reference and can write into its storage without a copy.
    func take(_ i: Int) throws -> RuntimeTensor {
        let v = try input(i)
        inputs[i] = nil
        return v
    }

    /// A required input.
    func input(_ i: Int) throws -> RuntimeTensor {
        guard i < inputs.count, let v = inputs[i] else { throw KernelError("input \(i) is missing") }
        return v
    }

    /// An optional input (nil when absent or named "").
    func optionalInput(_ i: Int) -> RuntimeTensor? { i < inputs.count ? inputs[i] : nil }

    func int(_ name: String, _ defaultValue: Int) throws -> Int {
        guard let a = node.attribute(name) else { return defaultValue }
        guard let v = node.intAttribute(name), a.type == .int || a.type == nil else {
            throw KernelError("attribute '\(name)' must be an INT")
        }
        guard v >= Int64(Int32.min), v <= Int64(Int32.max) else { throw KernelError("attribute '\(name)' = \(v) is out of range") }
        return Int(v)
    }

    func ints(_ name: String) throws -> [Int]? {
        guard node.attribute(name) != nil else { return nil }
        guard let v = node.intsAttribute(name) else { throw KernelError("attribute '\(name)' must be INTS") }
        guard v.allSatisfy({ $0 >= Int64(Int32.min) && $0 <= Int64(Int32.max) }) else {
            throw KernelError("attribute '\(name)' has a value out of range")
        }
        return v.map { Int($0) }
    }

    func float(_ name: String, _ defaultValue: Float) throws -> Float {
        guard node.attribute(name) != nil else { return defaultValue }
        guard let v = node.floatAttribute(name) else { throw KernelError("attribute '\(name)' must be a FLOAT") }
        return v
    }

    func string(_ name: String, _ defaultValue: String) throws -> String {
        guard let a = node.attribute(name) else { return defaultValue }
        guard a.type == .string || a.type == nil, let s = a.s else { throw KernelError("attribute '\(name)' must be a STRING") }
        return String(decoding: s, as: UTF8.self)
    }

    /// Normalizes a possibly negative axis for a tensor of `rank`.
    func axis(_ axis: Int, rank: Int) throws -> Int {
        let a = axis < 0 ? axis + rank : axis
        guard a >= 0, a < max(rank, 1) else { throw KernelError("axis \(axis) is out of range for rank \(rank)") }
        return a
    }
}

typealias Kernel = @Sendable (KernelContext) throws -> [RuntimeTensor]

extension Interpreter {
    /// Every kernel by operator type; each family registers its own.
    static let kernels: [String: Kernel] = {
        var table: [String: Kernel] = [:]
        for family in [convKernels, normalizationKernels, matmulKernels, elementwiseKernels,
                       layoutKernels, poolKernels, reduceKernels, resizeKernels] {
            table.merge(family) { first, _ in first }
        }
        return table
    }()
}
