/// Conv and ConvTranspose, any spatial rank 1–3, through im2col/col2im and
/// BLAS gemm (one gemm per batch item and group).

/// Window geometry of one Conv/Pool node, always with three spatial axes:
/// lower ranks are padded in front with size-1 axes (kernel 1, stride 1,
/// no padding), which changes no index arithmetic.
struct Geometry3 {
    var input = [1, 1, 1]
    var kernel = [1, 1, 1]
    var strides = [1, 1, 1]
    var dilations = [1, 1, 1]
    var padBegin = [0, 0, 0]
    var padEnd = [0, 0, 0]
    var output = [1, 1, 1]
    var inputCount: Int { input.reduce(1, *) }
    var kernelCount: Int { kernel.reduce(1, *) }
    var outputCount: Int { output.reduce(1, *) }
}

/// Reads `strides`, `dilations`, `pads`, `auto_pad` (and, for pools,
/// `ceil_mode`) and computes the output size of a Conv or pooling window
/// (ONNX Conv/MaxPool/AveragePool shape rules):
/// - NOTSET: `⌊(in + pb + pe − ((k−1)·d + 1)) / s⌋ + 1` (⌈·⌉ with ceil_mode,
///   dropping a last window that would start inside the end padding);
/// - VALID: the same with no padding;
/// - SAME_UPPER / SAME_LOWER: `⌈in / s⌉`, with total padding
///   `max(0, (out−1)·s + (k−1)·d + 1 − in)` split evenly, the odd unit at the
///   end (UPPER) or the beginning (LOWER).
func windowGeometry(_ ctx: KernelContext, inputSpatial: [Int], kernel: [Int], ceilMode: Bool = false) throws -> Geometry3 {
    let rank = inputSpatial.count
    guard (1...3).contains(rank) else { throw KernelError("\(rank) spatial axes (1 to 3 are supported)") }
    guard kernel.count == rank else { throw KernelError("kernel has \(kernel.count) axes, input has \(rank) spatial axes") }
    let strides = try ctx.ints("strides") ?? Array(repeating: 1, count: rank)
    let dilations = try ctx.dilations(kernel: kernel)
    var pads = try ctx.ints("pads") ?? Array(repeating: 0, count: 2 * rank)
    let autoPad = try ctx.string("auto_pad", "NOTSET")
    guard strides.count == rank, strides.allSatisfy({ $0 >= 1 }) else { throw KernelError("bad strides \(strides)") }
    guard dilations.count == rank, dilations.allSatisfy({ $0 >= 1 }) else { throw KernelError("bad dilations \(dilations)") }
    guard pads.count == 2 * rank, pads.allSatisfy({ $0 >= 0 }) else { throw KernelError("bad pads \(pads)") }
    guard kernel.allSatisfy({ $0 >= 1 }) else { throw KernelError("bad kernel shape \(kernel)") }
    try requireWindowSized(["strides": strides, "dilations": dilations, "pads": pads, "kernel_shape": kernel, "input": inputSpatial])

    var output = [Int](repeating: 0, count: rank)
    for i in 0..<rank {
        let effective = (kernel[i] - 1) * dilations[i] + 1
        switch autoPad {
        case "NOTSET", "":
            break
        case "VALID":
            pads[i] = 0; pads[rank + i] = 0
        case "SAME_UPPER", "SAME_LOWER":
            let out = (inputSpatial[i] + strides[i] - 1) / strides[i]
            let total = max(0, (out - 1) * strides[i] + effective - inputSpatial[i])
            let small = total / 2
            pads[i] = autoPad == "SAME_UPPER" ? small : total - small
            pads[rank + i] = total - pads[i]
            output[i] = out
            continue
        default:
            throw KernelError("unknown auto_pad '\(autoPad)'")
        }
        let span = inputSpatial[i] + pads[i] + pads[rank + i] - effective
        guard span >= 0 else {
            throw KernelError("the window (\(effective)) is larger than the padded input (\(inputSpatial[i] + pads[i] + pads[rank + i])) on spatial axis \(i)")
        }
        var out = (ceilMode ? (span + strides[i] - 1) / strides[i] : span / strides[i]) + 1
        if ceilMode, (out - 1) * strides[i] >= inputSpatial[i] + pads[i] { out -= 1 }
        output[i] = out
    }
    return try Geometry3(rank: rank, input: inputSpatial, kernel: kernel, strides: strides, dilations: dilations,
                         pads: pads, output: output)
}

/// Refuses window values above `maxElements` (2³¹ − 1, the runtime's
/// tensor size limit). With every term at most 2³¹, the geometry formulas
/// (`s·(in − 1) + op + (k − 1)·d + 1 − pb − pe`, at most 2·2⁶² + 2³³) stay
/// inside Int, so they need no overflow checks of their own.
func requireWindowSized(_ values: [String: [Int]]) throws {
    for (name, list) in values.sorted(by: { $0.key < $1.key }) where list.contains(where: { $0.magnitude > UInt(maxElements) }) {
        throw KernelError("\(name) \(list) has a value beyond \(maxElements)")
    }
}

/// The last `rank` entries of a Geometry3 array (undoes the front padding).
func spatial(_ values: [Int], rank: Int) -> [Int] { Array(values[(3 - rank)...]) }

let convKernels: [String: Kernel] = [
    "Conv": { ctx in
        let x = try ctx.input(0), w = try ctx.input(1)
        let b = ctx.optionalInput(2)
        guard x.rank >= 3, w.rank == x.rank else { throw KernelError("X has shape \(x.shape), W has shape \(w.shape)") }
        let group = try ctx.int("group", 1)
        let n = x.shape[0], c = x.shape[1], m = w.shape[0]
        guard group >= 1, c % group == 0, m % group == 0, w.shape[1] == c / group else {
            throw KernelError("X has \(c) channels, W has shape \(w.shape), group = \(group)")
        }
        let kernel = try ctx.ints("kernel_shape") ?? Array(w.shape[2...])
        guard kernel == Array(w.shape[2...]) else { throw KernelError("kernel_shape \(kernel) does not match W \(w.shape)") }
        if let b, b.shape != [m] { throw KernelError("B has shape \(b.shape), expected [\(m)]") }
        let geo = try windowGeometry(ctx, inputSpatial: Array(x.shape[2...]), kernel: kernel)
        let rank = x.rank - 2
        let outShape = [n, m] + spatial(geo.output, rank: rank)
        _ = try allocationCount(outShape)
        _ = try allocationCount([c / group * geo.kernelCount, geo.outputCount])
        if x.count == 0 || w.count == 0 {
            // Empty input or no input channels: the output is the bias.
            let bias = b?.doubles() ?? []
            let values = (0..<(outShape.reduce(1, *))).map { bias.isEmpty ? 0 : bias[($0 / geo.outputCount) % m] }
            return [try RuntimeTensor(shape: outShape, values: values, elementType: x.elementType)]
        }
        let inputs = [x, w] + (b.map { [$0] } ?? [])
        let storage = try withFloats(inputs, "Conv",
            float: { a in Float.wrap(convolve(a[0], a[1], a.count > 2 ? a[2] : nil, n: n, c: c, m: m, group: group, geo: geo)) },
            double: { a in Double.wrap(convolve(a[0], a[1], a.count > 2 ? a[2] : nil, n: n, c: c, m: m, group: group, geo: geo)) })
        return [RuntimeTensor(shape: outShape, elementType: x.elementType, storage: storage)]
    },
    "ConvTranspose": { ctx in
        let x = try ctx.input(0), w = try ctx.input(1)
        let b = ctx.optionalInput(2)
        guard x.rank >= 3, x.rank <= 5, w.rank == x.rank else { throw KernelError("X has shape \(x.shape), W has shape \(w.shape)") }
        let rank = x.rank - 2
        let group = try ctx.int("group", 1)
        let n = x.shape[0], c = x.shape[1]
        guard group >= 1, c % group == 0, w.shape[0] == c else {
            throw KernelError("X has \(c) channels, W has shape \(w.shape), group = \(group)")
        }
        // group ≤ C unless C = 0, so only an empty input can overflow this.
        let (m, overflow) = w.shape[1].multipliedReportingOverflow(by: group)
        guard !overflow else { throw KernelError("W has shape \(w.shape), group = \(group): too many output channels") }
        let kernel = try ctx.ints("kernel_shape") ?? Array(w.shape[2...])
        guard kernel == Array(w.shape[2...]) else { throw KernelError("kernel_shape \(kernel) does not match W \(w.shape)") }
        if let b, b.shape != [m] { throw KernelError("B has shape \(b.shape), expected [\(m)]") }
        let geo = try transposeGeometry(ctx, inputSpatial: Array(x.shape[2...]), kernel: kernel)
        let outShape = [n, m] + spatial(geo.output, rank: rank)
        _ = try allocationCount(outShape)
        _ = try allocationCount([w.shape[1] * geo.kernelCount, geo.inputCount])
        if x.count == 0 || w.count == 0 {
            let bias = b?.doubles() ?? []
            let values = (0..<(outShape.reduce(1, *))).map { bias.isEmpty ? 0 : bias[($0 / geo.outputCount) % m] }
            return [try RuntimeTensor(shape: outShape, values: values, elementType: x.elementType)]
        }
        let inputs = [x, w] + (b.map { [$0] } ?? [])
        let storage = try withFloats(inputs, "ConvTranspose",
            float: { a in Float.wrap(convolveTransposed(a[0], a[1], a.count > 2 ? a[2] : nil, n: n, c: c, m: m, group: group, geo: geo)) },
            double: { a in Double.wrap(convolveTransposed(a[0], a[1], a.count > 2 ? a[2] : nil, n: n, c: c, m: m, group: group, geo: geo)) })
        return [RuntimeTensor(shape: outShape, elementType: x.elementType, storage: storage)]
    },
]

/// Conv: for each batch item and group, `Y_g = W_g · cols`, where `cols`
/// (im2col) has one row per (input channel, kernel tap) and one column per
/// output position, zero where the tap reads padding. Y starts as the bias
/// and gemm adds the product to it (beta = 1). im2col is split over the
/// workers by rows and the gemm by rows or columns (``parallelGemm``); a
/// grouped convolution with at least as many groups as workers is split by
/// group instead, each worker with its own `cols`.
func convolve<T: RuntimeFloat>(_ x: [T], _ w: [T], _ b: [T]?, n: Int, c: Int, m: Int, group: Int, geo: Geometry3) -> [T] {
    let cg = c / group, mg = m / group
    let kCount = geo.kernelCount, oCount = geo.outputCount, iCount = geo.inputCount
    let rows = cg * kCount
    // A 1×…×1 kernel with stride 1 and no padding reads each input position
    // once, in order: im2col would be a copy of X's group block, so the
    // gemm reads X directly.
    let pointwise = kCount == 1 && geo.strides == [1, 1, 1] && geo.padBegin == [0, 0, 0]
        && geo.padEnd == [0, 0, 0] && oCount == iCount
    var y = [T](unsafeUninitializedCapacity: n * m * oCount) { buffer, initialized in
        for plane in 0..<(n * m) {
            let value = b?[plane % m] ?? 0
            (buffer.baseAddress! + plane * oCount).initialize(repeating: value, count: oCount)
        }
        initialized = n * m * oCount
    }
    let byGroup = group >= Parallelism.current && group > 1
    x.withUnsafeBufferPointer { xp in
        w.withUnsafeBufferPointer { wp in
            y.withUnsafeMutableBufferPointer { yp in
                let (xs, ws, ys) = (Shared(xp.baseAddress!), Shared(wp.baseAddress!), Shared(yp.baseAddress!))
                /// One group of one batch item; `split` parallelises inside it.
                func one(_ bi: Int, _ g: Int, cols: UnsafeMutablePointer<T>?, split: Bool) {
                    let xBlock = xs.value + (bi * c + g * cg) * iCount
                    let source: UnsafePointer<T>
                    if let cols {
                        if split {
                            parallelChunks(cg, grain: max(1, 16_384 / max(kCount * oCount, 1))) { channels in
                                im2col(xBlock, channels: channels, geo: geo, into: cols)
                            }
                        } else {
                            im2col(xBlock, channels: 0..<cg, geo: geo, into: cols)
                        }
                        source = UnsafePointer(cols)
                    } else {
                        source = xBlock
                    }
                    let gemm = split ? parallelGemm : T.gemm
                    gemm(false, false, mg, oCount, rows, 1, ws.value + g * mg * rows, rows, source, oCount, 1,
                         ys.value + (bi * m + g * mg) * oCount, oCount)
                }
                if byGroup {
                    parallelChunks(n * group, grain: 1) { items in
                        var cols = [T](repeating: 0, count: pointwise ? 0 : rows * oCount)
                        cols.withUnsafeMutableBufferPointer { cp in
                            for item in items { one(item / group, item % group, cols: pointwise ? nil : cp.baseAddress!, split: false) }
                        }
                    }
                } else {
                    var cols = [T](repeating: 0, count: pointwise ? 0 : rows * oCount)
                    cols.withUnsafeMutableBufferPointer { cp in
                        for bi in 0..<n {
                            for g in 0..<group { one(bi, g, cols: pointwise ? nil : cp.baseAddress!, split: true) }
                        }
                    }
                }
            }
        }
    }
    return y
}

/// im2col rows of input channels `channels` of one group block `x`: row
/// `(ci, kd, kh, kw)` holds, per output position, the input element that
/// tap reads, or 0 in the padding. Along the innermost axis the positions
/// inside the input form one run, found without a test per element.
func im2col<T: RuntimeFloat>(_ x: UnsafePointer<T>, channels: Range<Int>, geo: Geometry3, into cols: UnsafeMutablePointer<T>) {
    let (iD, iH, iW) = (geo.input[0], geo.input[1], geo.input[2])
    let (oD, oH, oW) = (geo.output[0], geo.output[1], geo.output[2])
    let (kD, kH, kW) = (geo.kernel[0], geo.kernel[1], geo.kernel[2])
    let (sD, sH, sW) = (geo.strides[0], geo.strides[1], geo.strides[2])
    let (dD, dH, dW) = (geo.dilations[0], geo.dilations[1], geo.dilations[2])
    let (pD, pH, pW) = (geo.padBegin[0], geo.padBegin[1], geo.padBegin[2])
    let iCount = geo.inputCount, oCount = geo.outputCount
    /// First o ≥ 0 with o·s − p + k·d ≥ 0, and first o with it ≥ size (clamped to [0, out]).
    func inside(_ p: Int, _ kOffset: Int, _ s: Int, _ size: Int, _ out: Int) -> Range<Int> {
        func firstAtLeast(_ bound: Int) -> Int {   // smallest o with o·s ≥ bound
            bound <= 0 ? 0 : (bound + s - 1) / s
        }
        let lo = min(out, firstAtLeast(p - kOffset)), hi = min(out, firstAtLeast(size + p - kOffset))
        return lo..<max(lo, hi)
    }
    for ci in channels {
        let xBase = x + ci * iCount
        for kd in 0..<kD { for kh in 0..<kH { for kw in 0..<kW {
            let row = ((ci * kD + kd) * kH + kh) * kW + kw
            var out = cols + row * oCount
            let wRun = inside(pW, kw * dW, sW, iW, oW)
            for od in 0..<oD {
                let id = od * sD - pD + kd * dD
                let dOK = id >= 0 && id < iD
                for oh in 0..<oH {
                    let ih = oh * sH - pH + kh * dH
                    if !(dOK && ih >= 0 && ih < iH) || wRun.isEmpty {
                        out.update(repeating: 0, count: oW)
                    } else {
                        let src = xBase + (id * iH + ih) * iW - pW + kw * dW
                        if wRun.lowerBound > 0 { out.update(repeating: 0, count: wRun.lowerBound) }
                        if sW == 1 {
                            (out + wRun.lowerBound).update(from: src + wRun.lowerBound, count: wRun.count)
                        } else {
                            for ow in wRun { out[ow] = src[ow * sW] }
                        }
                        if wRun.upperBound < oW { (out + wRun.upperBound).update(repeating: 0, count: oW - wRun.upperBound) }
                    }
                    out += oW
                }
            }
        }}}
    }
}

/// ConvTranspose geometry (ONNX ConvTranspose shape rules):
/// `out = s·(in − 1) + output_padding + (k − 1)·d + 1 − pb − pe`; with
/// `output_shape` (or auto_pad SAME_*, which asks for `in · s`) the total
/// padding `s·(in − 1) + output_padding + (k − 1)·d + 1 − out` is split,
/// per the spec, with the odd unit at the end for SAME_UPPER and at the
/// beginning otherwise. In the returned geometry `input` is X's spatial size.
func transposeGeometry(_ ctx: KernelContext, inputSpatial: [Int], kernel: [Int]) throws -> Geometry3 {
    let rank = inputSpatial.count
    let strides = try ctx.ints("strides") ?? Array(repeating: 1, count: rank)
    let dilations = try ctx.dilations(kernel: kernel)
    let outputPadding = try ctx.ints("output_padding") ?? Array(repeating: 0, count: rank)
    var pads = try ctx.ints("pads") ?? Array(repeating: 0, count: 2 * rank)
    var outputShape = try ctx.ints("output_shape")
    let autoPad = try ctx.string("auto_pad", "NOTSET")
    guard strides.count == rank, strides.allSatisfy({ $0 >= 1 }) else { throw KernelError("bad strides \(strides)") }
    guard dilations.count == rank, dilations.allSatisfy({ $0 >= 1 }) else { throw KernelError("bad dilations \(dilations)") }
    guard outputPadding.count == rank, outputPadding.allSatisfy({ $0 >= 0 }) else { throw KernelError("bad output_padding \(outputPadding)") }
    guard pads.count == 2 * rank, pads.allSatisfy({ $0 >= 0 }) else { throw KernelError("bad pads \(pads)") }
    try requireWindowSized(["strides": strides, "dilations": dilations, "pads": pads, "kernel_shape": kernel,
                            "output_padding": outputPadding, "output_shape": outputShape ?? [], "input": inputSpatial])
    if let shape = outputShape, shape.count == rank + 2 { outputShape = Array(shape[2...]) }
    if let shape = outputShape, shape.count != rank { throw KernelError("bad output_shape \(shape)") }
    if outputShape == nil, autoPad == "SAME_UPPER" || autoPad == "SAME_LOWER" {
        outputShape = (0..<rank).map { inputSpatial[$0] * strides[$0] }
    }
    if autoPad == "VALID" { pads = Array(repeating: 0, count: 2 * rank) }
    guard ["NOTSET", "", "VALID", "SAME_UPPER", "SAME_LOWER"].contains(autoPad) else { throw KernelError("unknown auto_pad '\(autoPad)'") }
    var output = [Int](repeating: 0, count: rank)
    for i in 0..<rank {
        let full = strides[i] * (inputSpatial[i] - 1) + outputPadding[i] + (kernel[i] - 1) * dilations[i] + 1
        if let shape = outputShape {
            let total = full - shape[i]
            guard total >= 0 else { throw KernelError("output_shape \(shape) is larger than the full output on axis \(i)") }
            let small = total / 2
            pads[i] = autoPad == "SAME_UPPER" ? small : total - small
            pads[rank + i] = total - pads[i]
            output[i] = shape[i]
        } else {
            output[i] = full - pads[i] - pads[rank + i]
        }
        guard output[i] >= 1 else { throw KernelError("empty output on spatial axis \(i)") }
    }
    return try Geometry3(rank: rank, input: inputSpatial, kernel: kernel, strides: strides, dilations: dilations,
                         pads: pads, output: output)
}

/// ConvTranspose: for each batch item and group, `cols = W_gᵀ · X_g` (one
/// row per (output channel, tap), one column per input position), then
/// col2im adds each entry into the output position `i·s − pb + k·d`.
func convolveTransposed<T: RuntimeFloat>(_ x: [T], _ w: [T], _ b: [T]?, n: Int, c: Int, m: Int, group: Int, geo: Geometry3) -> [T] {
    let cg = c / group, mg = m / group
    let kCount = geo.kernelCount, oCount = geo.outputCount, iCount = geo.inputCount
    let rows = mg * kCount
    var y = [T](repeating: 0, count: n * m * oCount)
    var cols = [T](repeating: 0, count: rows * iCount)
    let (iD, iH, iW) = (geo.input[0], geo.input[1], geo.input[2])
    let (oD, oH, oW) = (geo.output[0], geo.output[1], geo.output[2])
    let (kD, kH, kW) = (geo.kernel[0], geo.kernel[1], geo.kernel[2])
    x.withUnsafeBufferPointer { xp in
        w.withUnsafeBufferPointer { wp in
            y.withUnsafeMutableBufferPointer { yp in
                cols.withUnsafeMutableBufferPointer { cp in
                    for bi in 0..<n {
                        for g in 0..<group {
                            // W is [C, M/group, k…]: the group's block is cg × rows.
                            parallelGemm(transA: true, transB: false, m: rows, n: iCount, k: cg, alpha: 1,
                                   a: wp.baseAddress! + g * cg * rows, lda: rows,
                                   b: xp.baseAddress! + (bi * c + g * cg) * iCount, ldb: iCount, beta: 0,
                                   c: cp.baseAddress!, ldc: iCount)
                            for mi in 0..<mg {
                                let yBase = (bi * m + g * mg + mi) * oCount
                                for kd in 0..<kD { for kh in 0..<kH { for kw in 0..<kW {
                                    let row = ((mi * kD + kd) * kH + kh) * kW + kw
                                    var i = row * iCount
                                    for id in 0..<iD {
                                        let od = id * geo.strides[0] - geo.padBegin[0] + kd * geo.dilations[0]
                                        let dOK = od >= 0 && od < oD
                                        for ih in 0..<iH {
                                            let oh = ih * geo.strides[1] - geo.padBegin[1] + kh * geo.dilations[1]
                                            let hOK = dOK && oh >= 0 && oh < oH
                                            let rowBase = yBase + (od * oH + oh) * oW
                                            for iw in 0..<iW {
                                                let ow = iw * geo.strides[2] - geo.padBegin[2] + kw * geo.dilations[2]
                                                if hOK && ow >= 0 && ow < oW { yp[rowBase + ow] += cp[i] }
                                                i += 1
                                            }
                                        }
                                    }
                                }}}
                            }
                        }
                        if let b {
                            for mi in 0..<m {
                                let base = (bi * m + mi) * oCount
                                for o in 0..<oCount { yp[base + o] += b[mi] }
                            }
                        }
                    }
                }
            }
        }
    }
    return y
}

extension Geometry3 {
    /// Spatial axes padded to three (leading axes of size 1), after checking
    /// that the output and kernel sizes are countable.
    init(rank: Int, input: [Int], kernel: [Int], strides: [Int], dilations: [Int], pads: [Int], output: [Int]) throws {
        _ = try checkedCount(output)
        _ = try checkedCount(kernel)
        self.init()
        let shift = 3 - rank
        for i in 0..<rank {
            self.input[shift + i] = input[i]
            self.kernel[shift + i] = kernel[i]
            self.strides[shift + i] = strides[i]
            self.dilations[shift + i] = dilations[i]
            self.padBegin[shift + i] = pads[i]
            self.padEnd[shift + i] = pads[rank + i]
            self.output[shift + i] = output[i]
        }
    }
}

extension KernelContext {
    /// `dilations`, default 1. On an axis where the kernel is 1 the
    /// dilation does not matter — `(k − 1)·d + 1` is 1 whatever d is — so
    /// any positive value (2⁶² included) is read as 1 there instead of being
    /// refused as out of range; elsewhere the usual range check applies.
    func dilations(kernel: [Int]) throws -> [Int] {
        guard let a = node.attribute("dilations") else { return kernel.map { _ in 1 } }
        guard let values = node.intsAttribute("dilations"), a.type == .ints || a.type == nil else {
            throw KernelError("attribute 'dilations' must be INTS")
        }
        guard values.count == kernel.count else { throw KernelError("bad dilations \(values)") }
        return try zip(values, kernel).map { d, k in
            guard d >= 1 else { throw KernelError("bad dilations \(values)") }
            if k == 1 { return 1 }
            guard d <= Int64(Int32.max) else { throw KernelError("attribute 'dilations' has a value out of range") }
            return Int(d)
        }
    }
}
