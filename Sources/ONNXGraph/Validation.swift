/// Structural checks run on every model before any pass touches it.
///
/// A model file can come from anywhere. Passes assume what the ONNX IR
/// promises — every value defined exactly once, before it is read (nodes in
/// topological order, so no cycles), graph outputs defined — and that the
/// operators they rewrite carry attributes and constant inputs of the types
/// the operator's schema allows. A model that breaks these promises is an
/// input error (exit 2), reported with the graph, node and value involved,
/// rather than something a pass half-understands.

/// Why a model is not well formed.
public struct ModelValidationError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

extension Model {
    /// Checks the main graph (and, recursively, every graph inside node
    /// attributes). Functions and training graphs are carried through
    /// unchanged and not checked.
    /// - Throws: ``ModelValidationError`` describing the first problem found.
    public func validate() throws {
        guard let graph else { throw ModelValidationError("the model has no graph") }
        try GraphValidator(graph: graph, path: "main graph", outer: []).check()
    }
}

/// What the schema of an operator bnfold rewrites says about it.
struct OperatorSchema {
    let inputs: ClosedRange<Int>
    let attributes: [String: Attribute.Kind]
    /// Input slots that must hold floating-point tensors (float16, float,
    /// double, bfloat16) when their type is known.
    let floatInputs: [Int]

    /// Operators whose window attributes (strides, pads, dilations,
    /// kernel_shape, group) are range-checked.
    static let windowOperators: Set<String> = ["Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool"]

    static let known: [String: OperatorSchema] = [
        "Conv": OperatorSchema(
            inputs: 2...3,
            attributes: ["auto_pad": .string, "dilations": .ints, "group": .int, "kernel_shape": .ints,
                         "pads": .ints, "strides": .ints],
            floatInputs: [0, 1, 2]),
        "ConvTranspose": OperatorSchema(
            inputs: 2...3,
            attributes: ["auto_pad": .string, "dilations": .ints, "group": .int, "kernel_shape": .ints,
                         "output_padding": .ints, "output_shape": .ints, "pads": .ints, "strides": .ints],
            floatInputs: [0, 1, 2]),
        // Gemm also takes integer types (opset 11 on), so no float inputs here.
        "Gemm": OperatorSchema(
            inputs: 2...3,
            attributes: ["alpha": .float, "beta": .float, "transA": .int, "transB": .int, "broadcast": .int],
            floatInputs: []),
        "BatchNormalization": OperatorSchema(
            inputs: 5...5,
            attributes: ["epsilon": .float, "momentum": .float, "training_mode": .int, "spatial": .int,
                         "is_test": .int, "consumed_inputs": .ints],
            floatInputs: [0, 1, 2, 3, 4]),
    ]
}

private struct GraphValidator {
    let graph: Graph
    let path: String
    /// Names visible from enclosing graphs.
    let outer: Set<String>
    /// Declared types by value name (graph inputs first, then value_info),
    /// looked up per node: a scan per node made validation quadratic.
    let declared: [String: ValueInfo]

    init(graph: Graph, path: String, outer: Set<String>) {
        self.graph = graph
        self.path = path
        self.outer = outer
        var declared: [String: ValueInfo] = [:]
        for v in graph.inputs + graph.valueInfo { if let n = v.name, declared[n] == nil { declared[n] = v } }
        self.declared = declared
    }

    func nodeLabel(_ index: Int) -> String {
        let node = graph.nodes[index]
        return "node '\(node.displayName(index: index))' (\(node.opType)) in the \(path)"
    }

    func check() throws {
        // A sparse initializer is named by its values tensor.
        let initializerNames = try uniqueNames(
            graph.initializers.map(\.name) + graph.sparseInitializers.map { $0.values?.name },
            what: "initializer", twice: "is defined twice")
        let inputNames = try uniqueNames(graph.inputs.map(\.name), what: "input", twice: "is listed twice")
        // An initializer may also be listed as an input (its default value).
        var defined = initializerNames.union(inputNames)
        var producedLater: [String: Int] = [:]
        producedLater.reserveCapacity(graph.nodeCount)
        for (i, node) in graph.nodes.enumerated() {
            for output in node.outputs where !output.isEmpty && producedLater[output] == nil {
                producedLater[output] = i
            }
        }
        let types = knownTensorTypes()
        for (i, node) in graph.nodes.enumerated() {
            for input in node.inputs where !input.isEmpty {
                if defined.contains(input) || outer.contains(input) { continue }
                if let later = producedLater[input], later >= i {
                    throw ModelValidationError("\(nodeLabel(i)) reads '\(input)' before \(nodeLabel(later)) produces it: the graph has a cycle or is not in topological order")
                }
                throw ModelValidationError("\(nodeLabel(i)) reads '\(input)', which no node, input or initializer defines")
            }
            var attributeNames: Set<String> = []
            for attribute in node.attributes {
                guard let name = attribute.name, !name.isEmpty else {
                    throw ModelValidationError("\(nodeLabel(i)) has an attribute without a name")
                }
                guard attributeNames.insert(name).inserted else {
                    throw ModelValidationError("\(nodeLabel(i)) has attribute '\(name)' twice")
                }
            }
            for sub in node.subgraphs {
                try GraphValidator(graph: sub, path: "subgraph '\(sub.name ?? "?")' of \(nodeLabel(i))",
                                   outer: outer.union(defined)).check()
            }
            if node.isDefaultDomain, let schema = OperatorSchema.known[node.opType] {
                try checkSchema(schema, node: i, types: types)
            } else if node.isDefaultDomain, OperatorSchema.windowOperators.contains(node.opType) {
                try checkAttributeValues(node: i)
            }
            for output in node.outputs where !output.isEmpty {
                // ONNX values are single-assignment across scopes: a
                // subgraph may read an enclosing graph's value, not define
                // its own under the same name (which would also make
                // "who produces this?" depend on the scope).
                guard !outer.contains(output) else {
                    throw ModelValidationError("\(nodeLabel(i)) defines '\(output)', which an enclosing graph already defines: value names must be unique across scopes")
                }
                guard defined.insert(output).inserted else {
                    throw ModelValidationError("value '\(output)' is defined twice in the \(path) (again by \(nodeLabel(i)))")
                }
            }
        }
        for v in graph.outputs {
            let name = v.name ?? ""
            guard !name.isEmpty else { throw ModelValidationError("an output of the \(path) has no name") }
            guard defined.contains(name) || outer.contains(name) else {
                throw ModelValidationError("output '\(name)' of the \(path) is not computed by any node, input or initializer")
            }
        }
    }

    /// The names as a set, or an error for a missing or repeated one.
    func uniqueNames(_ names: [String?], what: String, twice: String) throws -> Set<String> {
        var seen: Set<String> = []
        seen.reserveCapacity(names.count)   // no growth copies of a million-name set
        for name in names {
            guard let name, !name.isEmpty else { throw ModelValidationError("an \(what) of the \(path) has no name") }
            guard seen.insert(name).inserted else { throw ModelValidationError("\(what) '\(name)' \(twice) in the \(path)") }
        }
        return seen
    }

    /// Element types of values whose type the file states: initializers and
    /// typed graph inputs, outputs and value_info entries.
    func knownTensorTypes() -> [String: DataType] {
        var types: [String: DataType] = [:]
        types.reserveCapacity(graph.inputs.count + graph.valueInfo.count + graph.outputs.count + graph.initializerStore.count)
        for v in graph.inputs + graph.valueInfo + graph.outputs {
            if let name = v.name, let elem = v.type?.tensorType?.elementType { types[name] = elem }
        }
        for t in graph.initializers { if let name = t.name { types[name] = t.elementType } }
        return types
    }

    func checkSchema(_ schema: OperatorSchema, node index: Int, types: [String: DataType]) throws {
        let node = graph.nodes[index]
        guard schema.inputs.contains(node.inputs.count) else {
            let expected = schema.inputs.count == 1 ? "\(schema.inputs.lowerBound)"
                : "\(schema.inputs.lowerBound) to \(schema.inputs.upperBound)"
            throw ModelValidationError("\(nodeLabel(index)) has \(node.inputs.count) inputs; \(node.opType) takes \(expected)")
        }
        for attribute in node.attributes {
            guard let name = attribute.name, let expected = schema.attributes[name] else { continue }
            let actual = attribute.type ?? inferredKind(attribute)
            guard actual == expected else {
                throw ModelValidationError("\(nodeLabel(index)) has attribute '\(name)' of type \(kindName(actual)), but \(node.opType) needs \(kindName(expected))")
            }
        }
        try checkAttributeValues(node: index)
        for slot in schema.floatInputs where slot < node.inputs.count && !node.inputs[slot].isEmpty {
            let name = node.inputs[slot]
            if let type = types[name], !type.isFoldableFloat {
                throw ModelValidationError("\(nodeLabel(index)) input '\(name)' has element type \(type), but \(node.opType) needs float16, float, double or bfloat16")
            }
        }
    }

    /// The attribute values the ONNX spec rules out for the window
    /// operators (Conv, ConvTranspose, pools) and BatchNormalization:
    /// strides, dilations, kernel_shape and group ≥ 1, pads and
    /// output_padding ≥ 0, a finite epsilon; for a constant weight W,
    /// kernel_shape equal to W's spatial dims and (Conv) group dividing
    /// W's output channels. Sizes that depend on the input are left to the
    /// runtime: the input size may be symbolic.
    func checkAttributeValues(node index: Int) throws {
        let node = graph.nodes[index]
        func ints(_ name: String) -> [Int64] { node.attribute(name)?.ints ?? [] }
        func refuse(_ name: String, _ values: [Int64], _ rule: String) throws {
            throw ModelValidationError("\(nodeLabel(index)) has \(name) \(values): \(rule)")
        }
        if OperatorSchema.windowOperators.contains(node.opType) {
            for name in ["strides", "dilations", "kernel_shape"] where ints(name).contains(where: { $0 < 1 }) {
                try refuse(name, ints(name), "each must be at least 1")
            }
            for name in ["pads", "output_padding"] where ints(name).contains(where: { $0 < 0 }) {
                try refuse(name, ints(name), "each must be at least 0")
            }
            if let group = node.attribute("group")?.i, group < 1 {
                try refuse("group", [group], "it must be at least 1")
            }
            let rank = ints("kernel_shape").count
            if rank > 0, !ints("pads").isEmpty, ints("pads").count != 2 * rank {
                try refuse("pads", ints("pads"), "a kernel of \(rank) axes needs \(2 * rank) values")
            }
        }
        if node.opType == "Conv" || node.opType == "ConvTranspose", node.inputs.count > 1,
           let weight = graph.initializer(named: node.inputs[1]), weight.dims.count >= 3 {
            let spatial = Array(weight.dims.dropFirst(2))
            if node.attribute("kernel_shape") != nil, ints("kernel_shape") != spatial {
                try refuse("kernel_shape", ints("kernel_shape"), "the weight '\(weight.name ?? "")' has spatial dims \(spatial)")
            }
            for name in ["strides", "dilations"] where node.attribute(name) != nil && ints(name).count != spatial.count {
                try refuse(name, ints(name), "the weight '\(weight.name ?? "")' has \(spatial.count) spatial axes")
            }
            let group = node.attribute("group")?.i ?? 1
            let channels = weight.dims[0]
            if channels % group != 0 {
                try refuse("group", [group], "it must divide the \(channels) \(node.opType == "Conv" ? "output" : "input") channels of the weight '\(weight.name ?? "")'")
            }
        }
        try checkWindowFits(node: index)
        if node.opType == "BatchNormalization", let epsilon = node.attribute("epsilon")?.f, !epsilon.isFinite {
            throw ModelValidationError("\(nodeLabel(index)) has epsilon \(epsilon): it must be finite")
        }
    }

    /// A Conv or pool with explicit padding whose dilated kernel,
    /// `(k − 1)·d + 1`, is larger than its padded input on an axis the model
    /// fixes (a declared input or value_info shape) has no output: the ONNX
    /// shape rule gives a negative size. Found here, before any pass, so it
    /// is an input error (and a dilation of 2⁶² never reaches the runtime's
    /// arithmetic). Axes with a symbolic size are left to run time.
    func checkWindowFits(node index: Int) throws {
        let node = graph.nodes[index]
        guard node.opType != "ConvTranspose", node.inputs.first.map({ !$0.isEmpty }) == true else { return }
        let autoPad = node.attribute("auto_pad")?.s.map { String(decoding: $0, as: UTF8.self) } ?? "NOTSET"
        guard autoPad == "NOTSET" || autoPad == "VALID" else { return }
        var kernel = node.attribute("kernel_shape")?.ints ?? []
        if kernel.isEmpty, node.inputs.count > 1,
           let weight = graph.initializer(named: node.inputs[1]), weight.dims.count >= 3 {
            kernel = Array(weight.dims.dropFirst(2))
        }
        let name = node.inputs[0]
        guard !kernel.isEmpty,
              let info = declared[name],
              let dims = info.type?.tensorType?.shape?.dims, dims.count == kernel.count + 2 else { return }
        let dilations = node.attribute("dilations")?.ints ?? []
        let pads = autoPad == "VALID" ? [] : (node.attribute("pads")?.ints ?? [])
        for axis in kernel.indices {
            guard case .value(let size)? = dims[axis + 2].value, size >= 0 else { continue }
            let d = axis < dilations.count ? dilations[axis] : 1
            let padded = size.addingReportingOverflow(pads.count == 2 * kernel.count ? pads[axis] &+ pads[axis + kernel.count] : 0)
            let span = (kernel[axis] - 1).multipliedReportingOverflow(by: d)
            let fits = !span.overflow && !padded.overflow && span.partialValue < padded.partialValue
            if !fits {
                let what = span.overflow ? "more than Int64 can hold" : "\(span.partialValue + 1)"
                throw ModelValidationError("\(nodeLabel(index)) has kernel \(kernel) with dilations \(dilations.isEmpty ? kernel.map { _ in 1 } : dilations): "
                    + "its extent on spatial axis \(axis) is \(what), larger than the input '\(name)' of size \(size) padded to \(padded.overflow ? "more than Int64 can hold" : "\(padded.partialValue)")")
            }
        }
    }

    /// For attributes written without `type` (very old files): the kind
    /// implied by the one value field that is set.
    func inferredKind(_ a: Attribute) -> Attribute.Kind? {
        if a.f != nil { return .float }
        if a.i != nil { return .int }
        if a.s != nil { return .string }
        if a.t != nil { return .tensor }
        if a.g != nil { return .graph }
        if !a.ints.isEmpty { return .ints }
        if !a.floats.isEmpty { return .floats }
        if !a.strings.isEmpty { return .strings }
        return nil
    }

    func kindName(_ kind: Attribute.Kind?) -> String {
        switch kind {
        case .float?: "FLOAT"; case .int?: "INT"; case .string?: "STRING"; case .tensor?: "TENSOR"
        case .graph?: "GRAPH"; case .floats?: "FLOATS"; case .ints?: "INTS"; case .strings?: "STRINGS"
        case .tensors?: "TENSORS"; case .graphs?: "GRAPHS"; case .sparseTensor?: "SPARSE_TENSOR"
        case .sparseTensors?: "SPARSE_TENSORS"; case .typeProto?: "TYPE_PROTO"; case .typeProtos?: "TYPE_PROTOS"
        case .undefined?: "UNDEFINED"
        case let other?: "type #\(other.rawValue)"
        case nil: "none"
        }
    }
}
