import ONNXGraph

/// A `Conv`, `ConvTranspose`, `Gemm` or `MatMul` node with constant weights,
/// read once with everything the folds need: the weight layout, the bias as
/// Double, the channel counts.
///
/// Every fold bnfold does is one of two affine maps meeting a linear op:
///
/// - **on its output** (BN, Mul or Add after it): `z_c = a_c·y_c + d_c` for
///   output channel c gives `W' = W·a_c` on every weight of output channel c
///   and `b'_c = a_c·b_c + d_c` (``foldingOutputAffine(scale:bias:createsBias:)``);
/// - **on its input** (BN before it): `x'_i = s_i·x_i + t_i` for input
///   channel i gives `W' = W·s_i` on every weight reading input channel i
///   and `b'_o = b_o + Σ_{i,k} W[o,i,k]·t_i` (``foldingInputAffine(scale:shift:)``).
///
/// The four operators differ only in where the channels sit in the weight
/// (``BlockChannels``) and in how the bias is stored (Gemm's is `beta·C`,
/// MatMul has none). Arithmetic is Double, rounded once into the element type.
struct LinearOperator {
    enum Kind: String { case conv = "Conv", convTranspose = "ConvTranspose", gemm = "Gemm", matMul = "MatMul" }

    let kind: Kind
    let node: NodeID
    let label: String
    let weight: Tensor
    let weightSource: ConstantSource
    /// Conv/ConvTranspose `B` or Gemm `C`, and where it comes from; nil when absent.
    let bias: (tensor: Tensor, source: ConstantSource)?
    /// The bias as the op adds it, row-major `[biasRows, outChannels]`:
    /// `B` for convolutions, `beta·C` broadcast for Gemm, zeros when absent.
    let effectiveBias: [Double]
    /// 1 except for a Gemm `C` of shape `[M, N]` or `[M, 1]` with M > 1.
    let biasRows: Int
    /// C_out (Gemm/MatMul: N, the output columns).
    let outChannels: Int
    /// C_in (Gemm/MatMul: K, the contracted features).
    let inChannels: Int
    let group: Int
    /// Πk for convolutions, 1 for Gemm/MatMul.
    let kernelSize: Int
    /// Gemm's `transB` (MatMul: false).
    let transB: Bool
    /// Gemm's `alpha` (1 otherwise).
    let alpha: Double
    /// Rank of the op's output: the weight's rank for convolutions, 2 for Gemm/MatMul.
    let outputRank: Int
    /// The node's inputs when it was read.
    var nodeInputs: [String]? = nil

    var elementType: DataType { weight.elementType }

    /// The weight and bias as read, by the names the node reads them under
    /// (for the fold's record: no second lookup).
    var constants: [String: Tensor] {
        guard let node = nodeInputs else { return [:] }
        var c: [String: Tensor] = [:]
        if node.count > 1 { c[node[1]] = weight }
        if node.count > 2, !node[2].isEmpty, let bias { c[node[2]] = bias.tensor }
        return c
    }

    /// Operator types this reads.
    static func isLinear(_ node: Node) -> Bool {
        node.isDefaultDomain && Kind(rawValue: node.opType) != nil
    }

    /// Reads `graph[index]`, or says why it cannot be folded into.
    static func read(_ index: NodeID, in graph: Graph, context: PassContext) -> Result<LinearOperator, FoldMiss> {
        let node = graph[index]
        let label = node.displayName(index: index.raw)
        guard node.isDefaultDomain, let kind = Kind(rawValue: node.opType) else {
            return .failure(FoldMiss(.noFoldableProducer, "\(label) is a \(node.opType), not a linear op"))
        }
        guard node.inputs.count >= 2, !node.inputs[1].isEmpty else {
            return .failure(FoldMiss(.shapeMismatch, "\(label) has no weight input"))
        }
        if kind == .matMul && node.inputs.count != 2 {
            return .failure(FoldMiss(.shapeMismatch, "\(label) has \(node.inputs.count) inputs; MatMul takes 2"))
        }
        let weight: Tensor, weightSource: ConstantSource
        switch context.constant(named: node.inputs[1], in: graph, else: .nonConstantWeights,
                                describing: "the weight '\(node.inputs[1])' of \(label)") {
        case .success(let w): (weight, weightSource) = w
        case .failure(let miss): return .failure(miss)
        }
        var bias: (tensor: Tensor, source: ConstantSource)?
        if node.inputs.count >= 3, !node.inputs[2].isEmpty {
            switch context.constant(named: node.inputs[2], in: graph, else: .nonConstantWeights,
                                    describing: "the bias '\(node.inputs[2])' of \(label)") {
            case .success(let b): bias = b
            case .failure(let miss): return .failure(miss)
            }
        }
        let type = weight.elementType
        guard type.isFoldableFloat else {
            return .failure(FoldMiss(.unsupportedElementType, "the weight of \(label) has element type \(type); bnfold folds float, double, float16 and bfloat16"))
        }
        if let b = bias?.tensor, b.elementType != type {
            return .failure(FoldMiss(.unsupportedElementType, "the bias of \(label) has element type \(b.elementType), the weight \(type)"))
        }
        let dims = weight.dims.map { Int(clamping: $0) }
        guard dims.allSatisfy({ $0 > 0 }), let count = weight.elementCount, count > 0 else {
            return .failure(FoldMiss(.shapeMismatch, "the weight of \(label) has shape \(weight.dims)"))
        }

        // Layout attributes, type-checked: a FLOAT transB is not "absent".
        func intAttribute(_ name: String, default value: Int64, allowed: ClosedRange<Int64>) -> Result<Int64, FoldMiss> {
            guard node.attribute(name) != nil else { return .success(value) }
            guard let v = node.intAttribute(name), allowed.contains(v) else {
                return .failure(FoldMiss(.unsupportedAttribute, "\(label) has an attribute '\(name)' that is not an INT in \(allowed)"))
            }
            return .success(v)
        }
        func floatAttribute(_ name: String) -> Result<Double, FoldMiss> {
            guard node.attribute(name) != nil else { return .success(1) }
            guard let v = node.floatAttribute(name), v.isFinite else {
                return .failure(FoldMiss(.unsupportedAttribute, "\(label) has an attribute '\(name)' that is not a finite FLOAT"))
            }
            return .success(Double(v))
        }

        var group = 1, outChannels = 0, inChannels = 0, kernelSize = 1, outputRank = 2
        var transB = false, alpha = 1.0, beta = 1.0
        switch kind {
        case .conv, .convTranspose:
            guard dims.count >= 3 else {
                return .failure(FoldMiss(.shapeMismatch, "the weight of \(label) has shape \(weight.dims), not \(kind == .conv ? "[C_out, C_in/group, k...]" : "[C_in, C_out/group, k...]")"))
            }
            switch intAttribute("group", default: 1, allowed: 1...Int64(Int32.max)) {
            case .success(let g): group = Int(g)
            case .failure(let miss): return .failure(miss)
            }
            kernelSize = dims[2...].reduce(1, *)  // ≤ the element count, which fits
            outputRank = dims.count
            // C_in = dims[1]·group (Conv) or C_out = dims[1]·group (ConvTranspose): a hostile group may overflow.
            let (grouped, overflow) = dims[1].multipliedReportingOverflow(by: group)
            guard !overflow else {
                return .failure(FoldMiss(.shapeMismatch, "\(label) has group \(group), too large for its weight \(weight.dims)"))
            }
            if kind == .conv {
                (outChannels, inChannels) = (dims[0], grouped)
                guard outChannels % group == 0 else {
                    return .failure(FoldMiss(.shapeMismatch, "\(label) has \(outChannels) output channels, not a multiple of group \(group)"))
                }
            } else {
                (inChannels, outChannels) = (dims[0], grouped)
                guard inChannels % group == 0 else {
                    return .failure(FoldMiss(.shapeMismatch, "\(label) has \(inChannels) input channels, not a multiple of group \(group)"))
                }
            }
        case .gemm, .matMul:
            guard dims.count == 2 else {
                return .failure(FoldMiss(.shapeMismatch, "the weight of \(label) has shape \(weight.dims); bnfold folds into a 2-D weight"))
            }
            if kind == .gemm {
                let attributes = (intAttribute("transB", default: 0, allowed: 0...1), floatAttribute("alpha"),
                                  floatAttribute("beta"), intAttribute("transA", default: 0, allowed: 0...1))
                switch attributes {
                case (.success(let t), .success(let a), .success(let b), .success):
                    (transB, alpha, beta) = (t == 1, a, b)
                case (.failure(let m), _, _, _), (_, .failure(let m), _, _), (_, _, .failure(let m), _),
                     (_, _, _, .failure(let m)):
                    return .failure(m)
                }
            }
            (inChannels, outChannels) = transB ? (dims[1], dims[0]) : (dims[0], dims[1])
        }

        // The bias as the op adds it.
        var biasRows = 1
        var effective = [Double](repeating: 0, count: outChannels)
        if let (b, _) = bias {
            guard let values = try? b.doubles() else {
                return .failure(FoldMiss(.nonConstantWeights, "the bias of \(label) could not be read"))
            }
            if kind == .gemm {
                // C broadcasts to [M, N]: scalar, [N], [1, N], [M, N], [M, 1] (and [1], [1, 1]).
                let c = b.dims.map { Int(clamping: $0) }
                let columns = c.last ?? 1
                guard c.count <= 2, columns == 1 || columns == outChannels, c.allSatisfy({ $0 > 0 }) else {
                    return .failure(FoldMiss(.shapeMismatch, "the bias C of \(label) has shape \(b.dims), which does not broadcast to [M, \(outChannels)]"))
                }
                biasRows = c.count == 2 ? c[0] : 1
                // An [M, 1] C becomes [M, N]: refuse sizes a hostile file could make enormous.
                let (size, overflow) = biasRows.multipliedReportingOverflow(by: outChannels)
                guard !overflow, size <= max(values.count, 1 << 24) else {
                    return .failure(FoldMiss(.shapeMismatch, "the bias C of \(label) has shape \(b.dims); broadcast to \(outChannels) columns it would be too large"))
                }
                effective = (0..<(biasRows * outChannels)).map { i in
                    beta == 0 ? 0 : beta * values[(i / outChannels) * columns + (columns == 1 ? 0 : i % outChannels)]
                }
            } else {
                guard values.count == outChannels else {
                    return .failure(FoldMiss(.shapeMismatch, "the bias of \(label) has \(values.count) values for \(outChannels) output channels"))
                }
                effective = values
            }
        }
        var op = LinearOperator(
            kind: kind, node: index, label: label, weight: weight, weightSource: weightSource, bias: bias,
            effectiveBias: effective, biasRows: biasRows, outChannels: outChannels, inChannels: inChannels,
            group: group, kernelSize: kernelSize, transB: transB, alpha: alpha, outputRank: outputRank)
        op.nodeInputs = node.inputs
        return .success(op)
    }

    // MARK: Folds

    /// Where each output channel's weights are: blocks and their channels.
    var outputChannelLayout: (blockSize: Int, channels: BlockChannels) {
        switch kind {
        case .conv: return (inChannels / group * kernelSize, .consecutive)
        case .convTranspose:
            // [C_in, C_out/g, k…]: weight [i, j, …] is output channel (i / (C_in/g))·(C_out/g) + j.
            return (kernelSize, BlockChannels(period: outChannels / group, repeats: inChannels / group))
        case .gemm, .matMul:
            // [N, K] (transB): row n is channel n. [K, N]: column n, one element per block.
            return transB ? (inChannels, .consecutive) : (1, BlockChannels(period: outChannels, repeats: inChannels))
        }
    }

    /// Where each input channel's weights are.
    var inputChannelLayout: (blockSize: Int, channels: BlockChannels) {
        switch kind {
        case .conv:
            // [C_out, C_in/g, k…]: weight [o, i, …] reads input channel (o / (C_out/g))·(C_in/g) + i.
            return (kernelSize, BlockChannels(period: inChannels / group, repeats: outChannels / group))
        case .convTranspose:
            return (outChannels / group * kernelSize, .consecutive)
        case .gemm, .matMul:
            return transB ? (1, BlockChannels(period: inChannels, repeats: outChannels)) : (outChannels, .consecutive)
        }
    }

    /// The rewrite for `z_c = scale_c·y_c + …` after the op: weights of
    /// output channel c times `scale[c]` (unchanged when `scale` is nil), and
    /// the new bias `bias(c, b)` from the old effective bias b of channel c.
    /// With `createsBias` false and no bias, none is added (a Mul).
    func foldingOutputAffine(scale: [Double]?, bias newBias: (Int, Double) -> Double,
                             createsBias: Bool) -> Result<LinearRewrite, FoldMiss> {
        var weight: Tensor?
        if let scale {
            precondition(scale.count == outChannels)
            let layout = outputChannelLayout
            switch scaled(scale: scale, layout: layout) {
            case .success(let w): weight = w
            case .failure(let miss): return .failure(miss)
            }
        }
        guard bias != nil || createsBias else { return .success(LinearRewrite(weight: weight, bias: nil)) }
        let values = effectiveBias.enumerated().map { newBias($0.offset % outChannels, $0.element) }
        return finishing(weight: weight, biasValues: values)
    }

    /// The rewrite for `x'_i = scale_i·x_i + shift_i` before the op: weights
    /// reading input channel i times `scale[i]`, and
    /// `b'_o = b_o + alpha·Σ W[o, i, k]·shift_i` over every weight of output
    /// channel o (Gemm's alpha; 1 for the others).
    func foldingInputAffine(scale: [Double], shift: [Double]) -> Result<LinearRewrite, FoldMiss> {
        precondition(scale.count == inChannels && shift.count == inChannels)
        let weight: Tensor
        switch scaled(scale: scale, layout: inputChannelLayout) {
        case .success(let w): weight = w
        case .failure(let miss): return .failure(miss)
        }
        guard let w = try? self.weight.doubles() else {
            return .failure(FoldMiss(.nonConstantWeights, "the weight of \(label) could not be read"))
        }
        // Σ over the weights of each output channel of W·shift(input channel).
        var added = [Double](repeating: 0, count: outChannels)
        switch kind {
        case .conv:
            let inPerGroup = inChannels / group, outPerGroup = outChannels / group
            for o in 0..<outChannels {
                let firstInput = (o / outPerGroup) * inPerGroup
                var sum = 0.0
                for i in 0..<inPerGroup {
                    let base = (o * inPerGroup + i) * kernelSize
                    var taps = 0.0
                    for k in 0..<kernelSize { taps += w[base + k] }
                    sum += taps * shift[firstInput + i]
                }
                added[o] = sum
            }
        case .gemm, .matMul:
            for j in 0..<outChannels {
                var sum = 0.0
                for k in 0..<inChannels {
                    sum += (transB ? w[j * inChannels + k] : w[k * outChannels + j]) * shift[k]
                }
                added[j] = alpha * sum
            }
        case .convTranspose:
            preconditionFailure("a BatchNormalization does not fold forward into a ConvTranspose")
        }
        let values = effectiveBias.enumerated().map { $0.element + added[$0.offset % outChannels] }
        return finishing(weight: weight, biasValues: values)
    }

    private func scaled(scale: [Double], layout: (blockSize: Int, channels: BlockChannels)) -> Result<Tensor, FoldMiss> {
        do {
            return .success(try weight.scaledBlocks(blockSize: layout.blockSize, scale: scale, channels: layout.channels))
        } catch let e as UnrepresentableElement {
            return .failure(FoldMiss(.notRepresentable, "weight element \(e.index) of \(label) becomes \(e.value), which is not representable in \(elementType)"))
        } catch {
            return .failure(FoldMiss(.nonConstantWeights, "the weight of \(label) could not be read: \(error)"))
        }
    }

    /// Checks the new bias and encodes it: `[N]` (or the old bias's exact
    /// shape and storage when that is `[N]` already), `[M, N]` for a Gemm
    /// whose C had M > 1 rows.
    private func finishing(weight: Tensor?, biasValues values: [Double]) -> Result<LinearRewrite, FoldMiss> {
        let type = elementType
        if let bad = values.firstIndex(where: { !type.roundsToFinite($0) }) {
            return .failure(FoldMiss(.notRepresentable, "channel \(bad % outChannels): the folded bias \(values[bad]) of \(label) is not representable in \(type)"))
        }
        var dims = biasRows == 1 ? [Int64(outChannels)] : [Int64(biasRows), Int64(outChannels)]
        if let old = bias?.tensor, old.elementCount == values.count { dims = old.dims }  // [N], [1, N], [M, N] stay
        let tensor: Tensor?
        if let old = bias?.tensor, old.dims == dims {
            tensor = old.replacingData(with: values)
        } else {
            tensor = Tensor(name: nil, elementType: type, dims: dims, values: values)
        }
        guard let tensor else {
            return .failure(FoldMiss(.unsupportedElementType, "cannot write element type \(type)"))
        }
        return .success(LinearRewrite(weight: weight, bias: tensor))
    }
}

/// New constants for a ``LinearOperator``: what ``Graph/apply(_:to:context:opset:)`` writes.
struct LinearRewrite {
    /// The new weight; nil leaves it as it is.
    var weight: Tensor?
    /// The new bias (Conv/ConvTranspose `B`, Gemm `C` with `beta = 1`); nil leaves it absent.
    var bias: Tensor?
}

extension Graph {
    /// Writes `rewrite` into the op's node: new weight, new or replaced
    /// bias, through ``replaceConstantInput(node:slot:with:source:context:)``
    /// (a constant shared with another reader, pinned by `training_info` or
    /// belonging to an enclosing graph is not edited: the node gets a copy
    /// under a fresh name). A Gemm's bias is the whole `beta·C` term, so
    /// `beta` becomes 1; a MatMul with a bias becomes a Gemm `(A, B', C')`
    /// under the same name (alpha = beta = 1, no transposes: the same
    /// product, plus C broadcast over the rows).
    ///
    /// No node is removed or moved, so node indices stay valid.
    /// - Returns: names that may now be dead — every constant input the op
    ///   read before (the ends of `Identity` chains it no longer reads
    ///   through, a replaced bias) — for ``removeDeadValues(_:context:)``
    ///   once the caller's rewrite is complete.
    mutating func apply(_ rewrite: LinearRewrite, to op: LinearOperator, context: PassContext,
                        opset: Int64) -> Set<String> {
        let index = op.node
        var maybeDead = Set(self[index].inputs.dropFirst())
        if let weight = rewrite.weight {
            replaceConstantInput(node: index, slot: 1, with: weight, source: op.weightSource, context: context)
        }
        guard let bias = rewrite.bias else { return maybeDead }
        if let (old, source) = op.bias, old.dims == bias.dims {
            replaceConstantInput(node: index, slot: 2, with: bias, source: source, context: context)
        } else {
            // New, or a Gemm C that changes shape (a declaration of the old
            // name, e.g. an IR < 4 graph input, would then be wrong): a new
            // initializer; the old one goes if nothing else reads it.
            let node = self[index]
            let base = node.name.flatMap { $0.isEmpty ? nil : $0 } ?? node.inputs[1]
            let name = context.uniqueName(base + "_bias", in: self)
            addInitializer(bias, named: name, context: context)
            if self[index].inputs.count >= 3 {
                maybeDead.insert(self[index].inputs[2])
                setInput(node: index, slot: 2, to: name)
            } else {
                appendInput(node: index, name)
            }
        }
        updateNode(index) { node in
            if op.kind == .matMul {
                node.opType = "Gemm"
            }
            if op.kind == .gemm || op.kind == .matMul {
                if let i = node.attributes.firstIndex(where: { $0.name == "beta" }) {
                    node.attributes[i] = .float("beta", 1)
                }
                // Gemm before opset 7 broadcasts C only when asked to.
                if opset < 7, bias.dims.count < 2, node.intAttribute("broadcast") != 1 {
                    node.attributes.removeAll { $0.name == "broadcast" }
                    node.attributes.append(.int("broadcast", 1))
                }
            }
        }
        return maybeDead
    }
}
