import ONNXGraph

/// Why a graph could not be run: names the node and its operator.
public struct RuntimeError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The node's name, or `OpType#index` when it has none; empty for graph-level problems.
    public let node: String
    public let opType: String
    public let problem: String
    /// Set when the run stopped because the memory budget (or the system's
    /// allocator) refused a tensor: a limit of this run, not a fault of the
    /// model, so callers skip a check or report a resource error.
    public let memory: MemoryBudgetExceeded?

    public init(node: String, opType: String, problem: String, memory: MemoryBudgetExceeded? = nil) {
        self.node = node
        self.opType = opType
        self.problem = problem
        self.memory = memory
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
    /// The graph compiled to value slots (shared with the float64 copy,
    /// which has the same names).
    private let plan: Plan

    public init(graph: Graph, opset: Int64) throws {
        self.graph = graph
        self.opset = opset
        self.computesInFloat64 = false
        var constants: [String: RuntimeTensor] = [:]
        let ledger = MemoryLedger.current
        for t in graph.initializers {
            guard let name = t.name, !name.isEmpty else { continue }
            do {
                try reserveBytes(count: t.elementCount ?? 0, bytesPerElement: RuntimeTensor.storageKind(of: t.elementType) == .float ? 4 : 8)
                let loaded = try RuntimeTensor(t, releasingSource: true)
                try ledger?.settle(holding: loaded.storageBytes)
                constants[name] = loaded
            } catch let limit as MemoryBudgetExceeded {
                throw RuntimeError(node: "", opType: "", problem: "initializer '\(name)': \(limit)", memory: limit)
            } catch {
                throw RuntimeError(node: "", opType: "", problem: "initializer '\(name)': \(error)")
            }
        }
        self.constants = constants
        self.plan = Plan(graph, constants: constants)
    }

    private init(graph: Graph, opset: Int64, computesInFloat64: Bool, constants: [String: RuntimeTensor], plan: Plan) {
        self.graph = graph
        self.opset = opset
        self.computesInFloat64 = computesInFloat64
        self.constants = constants
        self.plan = plan
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
        return Interpreter(graph: retyped, opset: opset, computesInFloat64: true, constants: constants, plan: plan)
    }

    /// Operators of the default domain this runtime executes.
    public static var supportedOperators: Set<String> { Set(kernels.keys) }

    /// The nodes (display name, operator) this runtime cannot execute:
    /// unknown operators, operators of other domains, and nodes holding
    /// subgraphs. Empty means the whole graph can run.
    public static func unsupportedNodes(in graph: Graph) -> [(node: String, opType: String)] {
        graph.nodes.enumerated().compactMap { index, node in
            let ok = node.isDefaultDomain && kernels[node.opType] != nil && !node.holdsSubgraphs
            return ok ? nil : (node.displayName(index: index), node.opType)
        }
    }

    /// The operator types (with their domain when not the default one) that
    /// keep this graph from running, sorted.
    public static func unsupportedOperators(in graph: Graph) -> [String] {
        var result = Set<String>()
        for node in graph.nodes where !(node.isDefaultDomain && kernels[node.opType] != nil && !node.holdsSubgraphs) {
            result.insert(node.isDefaultDomain ? node.opType : "\(node.domain ?? ""):\(node.opType)")
        }
        return result.sorted()
    }

    /// Runs the graph. `inputs` gives every graph input that is not an
    /// initializer; returns every graph output by name.
    ///
    /// `observe`, when given, is called after each node with the node's
    /// index and its wall time in seconds (for profiling).
    ///
    /// Under a memory budget (``MemoryBudget/measured(_:)``) every tensor
    /// the run makes is weighed before it is allocated; the returned outputs
    /// stay counted as held (the caller holds them) and everything else the
    /// run made is released when it returns. A refusal is a ``RuntimeError``
    /// with ``RuntimeError/memory`` set.
    public func run(inputs: [String: RuntimeTensor],
                    observe: ((_ nodeIndex: Int, _ seconds: Double) -> Void)? = nil) throws -> [String: RuntimeTensor] {
        let ledger = MemoryLedger.current
        var madeHere = 0   // bytes this run settled and has not released
        defer { ledger?.release(madeHere) }
        func limited(_ node: String, _ opType: String, _ limit: MemoryBudgetExceeded) -> RuntimeError {
            RuntimeError(node: node, opType: opType, problem: limit.description, memory: limit)
        }
        func widened(_ value: RuntimeTensor) throws -> RuntimeTensor {
            guard computesInFloat64, case .float = value.storage else { return value }
            do {
                try reserveBytes(count: value.count, bytesPerElement: 8)
                let wide = value.widenedToDouble()
                try ledger?.settle(holding: wide.storageBytes)
                madeHere += wide.storageBytes
                return wide
            } catch let limit as MemoryBudgetExceeded {
                throw limited("", "", limit)
            }
        }
        // Values live in slots (names were resolved once, in the plan):
        // no string is hashed per node.
        var values = plan.constantValues
        var given = [Bool](repeating: false, count: plan.names.count)
        for input in graph.inputs {
            guard let name = input.name, !name.isEmpty, let slot = plan.slot[name] else { continue }
            if let value = inputs[name] {
                let value = try widened(value)
                try Interpreter.check(value, against: input)
                values[slot] = value
                given[slot] = true
            } else if values[slot] == nil {
                throw RuntimeError(node: "", opType: "", problem: "graph input '\(name)' was not given")
            }
        }
        for (name, value) in inputs {
            guard let slot = plan.slot[name], !given[slot], values[slot] == nil else { continue }
            values[slot] = try widened(value)
            given[slot] = true
        }
        let clock = ContinuousClock()
        let nodes = graph.nodes

        for step in plan.steps {
            let index = step.node
            let node = nodes[index]
            let started = observe == nil ? nil : clock.now
            let display = { node.displayName(index: index) }
            func fail(_ problem: String) -> RuntimeError { RuntimeError(node: display(), opType: node.opType, problem: problem) }
            guard node.isDefaultDomain else {
                throw fail("operator \(node.domain ?? ""):\(node.opType) is not supported (only the default ONNX domain is)")
            }
            guard let kernel = step.kernel else {
                throw fail("operator \(node.opType) is not supported")
            }
            guard !node.holdsSubgraphs else { throw fail("nodes with subgraphs are not supported") }
            let context = KernelContext(node: node, opset: opset)
            context.inputs.reserveCapacity(step.inputs.count)
            // Before the kernel: the widened constants it reads (float64
            // mode) and room for an output as large as its largest input
            // (what elementwise kernels make without announcing a shape).
            var announced = 0
            for (k, slot) in step.inputs.enumerated() {
                if slot < 0 { context.inputs.append(nil); continue }
                guard let v = values[slot] else { throw fail("input '\(node.inputs[k])' is not defined") }
                let wide = computesInFloat64 && plan.isConstant[slot]
                if wide, case .float = v.storage { announced += v.count * 8 }
                context.inputs.append(wide ? v.widenedToDouble() : v)
            }
            let largestInput = context.inputs.reduce(0) { max($0, $1?.storageBytes ?? 0) }
            var freed = 0
            // Each intermediate leaves `values` after its last read (graph
            // outputs are kept), before the node runs, so a kernel holding
            // the only reference may reuse its buffer for the result.
            for slot in step.frees {
                if let v = values[slot] {
                    values[slot] = nil
                    if !given[slot] || computesInFloat64 { freed += v.storageBytes }
                }
            }
            var results: [RuntimeTensor]
            do {
                try ledger?.reserve(announced + largestInput)
                results = try kernel(context)
            } catch let error as KernelError {
                throw fail(error.message)
            } catch let limit as MemoryBudgetExceeded {
                throw limited(display(), node.opType, limit)
            }
            var made = 0
            for (k, slot) in step.outputs.enumerated() where slot >= 0 {
                guard k < results.count else {
                    throw fail("output \(k) ('\(node.outputs[k])') is not supported by this runtime")
                }
                var r = results[k]
                results[k] = RuntimeTensor(shape: [], elementType: .undefined, storage: .int([]))
                r.roundToElementType()
                if let replaced = values[slot], !plan.isConstant[slot] { freed += replaced.storageBytes }
                made += r.storageBytes
                values[slot] = r
            }
            ledger?.release(min(freed, madeHere))
            madeHere -= min(freed, madeHere)
            do {
                try ledger?.settle(holding: made)
                madeHere += made
            } catch let limit as MemoryBudgetExceeded {
                madeHere += made
                throw limited(display(), node.opType, limit)
            }
            if let started, let observe {
                let d = clock.now - started
                observe(index, Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18)
            }
        }
        var outputs: [String: RuntimeTensor] = [:]
        for output in graph.outputs {
            guard let name = output.name, !name.isEmpty else { continue }
            guard let slot = plan.slot[name], let v = values[slot] else {
                throw RuntimeError(node: "", opType: "", problem: "graph output '\(name)' was not computed")
            }
            outputs[name] = computesInFloat64 ? v.widenedToDouble() : v
        }
        // The outputs stay counted: the caller holds them (and releases them
        // with RuntimeTensor.release when done).
        let kept = outputs.values.reduce(0) { $0 + $1.storageBytes }
        madeHere -= min(kept, madeHere)
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
    /// The graph compiled once for every run: each value name becomes a slot
    /// in an array, each node a step naming its input and output slots, its
    /// kernel, and the slots whose last read it is. A run then indexes
    /// arrays instead of hashing every input name several times per node
    /// (which was most of the cost of a small graph's run).
    final class Plan: @unchecked Sendable {
        struct Step {
            /// The node's position in the graph.
            var node: Int
            /// Input slots in order (−1: an omitted optional input).
            var inputs: [Int]
            /// Output slots in order (−1: an omitted output).
            var outputs: [Int]
            /// Slots read for the last time here: not graph outputs, not constants.
            var frees: [Int]
            /// Nil for an operator the runtime lacks (the run says so when it gets there).
            var kernel: Kernel?
        }
        let slot: [String: Int]
        let names: [String]
        let steps: [Step]
        let isConstant: [Bool]
        /// The constants in their slots, nil elsewhere: a run's starting values.
        let constantValues: [RuntimeTensor?]

        init(_ graph: Graph, constants: [String: RuntimeTensor]) {
            let nodes = graph.nodes
            var slot: [String: Int] = [:]
            slot.reserveCapacity(constants.count + graph.inputs.count + 2 * nodes.count)
            var names: [String] = []
            names.reserveCapacity(constants.count + graph.inputs.count + 2 * nodes.count)
            var lastUse: [Int] = []
            func id(_ name: String) -> Int {
                if let s = slot[name] { return s }
                slot[name] = names.count
                names.append(name)
                lastUse.append(-1)
                return names.count - 1
            }
            for name in constants.keys { _ = id(name) }
            for input in graph.inputs { if let n = input.name, !n.isEmpty { _ = id(n) } }
            var steps: [Step] = []
            steps.reserveCapacity(nodes.count)
            for (i, node) in nodes.enumerated() {
                let inputs = node.inputs.map { $0.isEmpty ? -1 : id($0) }
                // An Identity computes nothing: its output is another name
                // for its input's slot (exporters write long chains of them).
                if node.isOp("Identity"), inputs.count == 1, inputs[0] >= 0, node.outputs.count == 1,
                   !node.outputs[0].isEmpty, slot[node.outputs[0]] == nil, !node.holdsSubgraphs {
                    slot[node.outputs[0]] = inputs[0]
                    continue
                }
                for s in inputs where s >= 0 { lastUse[s] = steps.count }
                steps.append(Step(node: i, inputs: inputs, outputs: node.outputs.map { $0.isEmpty ? -1 : id($0) }, frees: [],
                                  kernel: node.isDefaultDomain ? Interpreter.kernels[node.opType] : nil))
            }
            for output in graph.outputs { if let n = output.name, !n.isEmpty { _ = id(n) } }
            let outputSlots = Set(graph.outputs.compactMap { $0.name.flatMap { slot[$0] } })
            var isConstant = [Bool](repeating: false, count: names.count)
            var values = [RuntimeTensor?](repeating: nil, count: names.count)
            for (name, value) in constants { let s = slot[name]!; isConstant[s] = true; values[s] = value }
            for (s, i) in lastUse.enumerated() where i >= 0 && !outputSlots.contains(s) && !isConstant[s] { steps[i].frees.append(s) }
            self.slot = slot
            self.names = names
            self.steps = steps
            self.isConstant = isConstant
            self.constantValues = values
        }
    }
}

extension Interpreter {
    /// Every kernel by operator type; each family registers its own.
    static let kernels: [String: Kernel] = {
        var table: [String: Kernel] = [:]
        for family in [convKernels, normalizationKernels, matmulKernels, elementwiseKernels,
                       layoutKernels, poolKernels, reduceKernels, resizeKernels, mathKernels, tensorKernels] {
            table.merge(family) { first, _ in first }
        }
        return table
    }()
}
