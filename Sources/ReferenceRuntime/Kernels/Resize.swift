import Foundation

/// Resize (opsets 10–19+) and Upsample (7–9): nearest, linear (n-linear)
/// and cubic interpolation, every coordinate_transformation_mode of the
/// spec, computed in Double per output element as Σ over the per-axis taps
/// of the product of per-axis weights, rounded once.

/// The parameters of one resize after reading attributes and inputs.
struct ResizeSpec {
    var mode = "nearest"
    var coordinateMode = "half_pixel"
    var nearestMode = "round_prefer_floor"
    var cubicA = -0.75
    var excludeOutside = false
    var extrapolation = 0.0
    var outShape: [Int] = []
    var scales: [Double] = []
    var roi: [Double] = []  // [starts…, ends…] per axis (tf_crop_and_resize)
}

/// For one axis: for each output index, the input indices and weights it
/// combines, or nil when it samples outside the input (tf_crop_and_resize).
func resizeTaps(_ spec: ResizeSpec, axis: Int, inSize: Int, rank: Int) throws -> [[(Int, Double)]?] {
    let outSize = spec.outShape[axis]
    let scale = spec.scales[axis]
    let start = spec.roi.isEmpty ? 0 : spec.roi[axis], end = spec.roi.isEmpty ? 1 : spec.roi[rank + axis]
    var taps: [[(Int, Double)]?] = []
    guard inSize > 0 || outSize == 0 else { throw KernelError("cannot resize an empty axis \(axis) to \(outSize)") }
    for o in 0..<outSize {
        let x = Double(o)
        let xRaw: Double
        switch spec.coordinateMode {
        case "half_pixel": xRaw = (x + 0.5) / scale - 0.5
        case "half_pixel_symmetric":
            let adjustment = Double(outSize) / (scale * Double(inSize))
            let offset = Double(inSize) / 2 * (1 - adjustment)
            xRaw = offset + (x + 0.5) / scale - 0.5
        case "pytorch_half_pixel": xRaw = outSize > 1 ? (x + 0.5) / scale - 0.5 : 0
        case "align_corners": xRaw = outSize == 1 ? 0 : x * Double(inSize - 1) / Double(outSize - 1)
        case "asymmetric": xRaw = x / scale
        case "tf_crop_and_resize":
            xRaw = outSize > 1 ? start * Double(inSize - 1) + x * (end - start) * Double(inSize - 1) / Double(outSize - 1)
                : 0.5 * (start + end) * Double(inSize - 1)
            if xRaw < 0 || xRaw > Double(inSize - 1) { taps.append(nil); continue }
        default: throw KernelError("unknown coordinate_transformation_mode '\(spec.coordinateMode)'")
        }
        guard xRaw.isFinite else { throw KernelError("non-finite source coordinate (scale \(scale))") }
        // Far outside the input every rule below clamps to the edge (or, with
        // exclude_outside, has only zero weights): clamping first is exact.
        let xIn = min(max(xRaw, -4), Double(inSize) + 4)
        let clampIndex = { (i: Int) in min(max(i, 0), inSize - 1) }
        switch spec.mode {
        case "nearest":
            let i: Double
            switch spec.nearestMode {
            case "round_prefer_floor": i = xIn == xIn.rounded(.down) + 0.5 ? xIn.rounded(.down) : xIn.rounded()
            case "round_prefer_ceil": i = xIn == xIn.rounded(.down) + 0.5 ? xIn.rounded(.up) : xIn.rounded()
            case "floor": i = xIn.rounded(.down)
            case "ceil": i = xIn.rounded(.up)
            default: throw KernelError("unknown nearest_mode '\(spec.nearestMode)'")
            }
            taps.append([(clampIndex(Int(i)), 1)])
        case "linear":
            let f = xIn.rounded(.down), t = xIn - f
            taps.append([(clampIndex(Int(f)), 1 - t), (clampIndex(Int(f) + 1), t)])
        case "cubic":
            let f = xIn.rounded(.down), t = xIn - f, a = spec.cubicA
            // Keys cubic convolution weights for distances 1 + t, t, 1 − t, 2 − t.
            let far = { (d: Double) in ((a * d - 5 * a) * d + 8 * a) * d - 4 * a }
            let near = { (d: Double) in ((a + 2) * d - (a + 3)) * d * d + 1 }
            var w = [far(1 + t), near(t), near(1 - t), far(2 - t)]
            let idx = (-1...2).map { Int(f) + $0 }
            if spec.excludeOutside {
                for k in 0..<4 where idx[k] < 0 || idx[k] >= inSize { w[k] = 0 }
                let sum = w.reduce(0, +)
                if sum != 0 { w = w.map { $0 / sum } }
            }
            taps.append((0..<4).map { (clampIndex(idx[$0]), w[$0]) })
        default: throw KernelError("unknown mode '\(spec.mode)'")
        }
    }
    return taps
}

func resize(_ x: RuntimeTensor, _ spec: ResizeSpec) throws -> RuntimeTensor {
    guard RuntimeTensor.storageKind(of: x.elementType) != .int || spec.mode == "nearest" else {
        throw KernelError("\(spec.mode) resize of \(x.elementType) is not supported")
    }
    let rank = x.rank
    _ = try allocationCount(spec.outShape)
    let taps = try (0..<rank).map { try resizeTaps(spec, axis: $0, inSize: x.shape[$0], rank: rank) }
    let values = x.doubles()
    let strides = rowMajorStrides(x.shape)
    let count = spec.outShape.reduce(1, *)
    var out = [Double](repeating: 0, count: count)
    var index = [Int](repeating: 0, count: rank)
    for o in 0..<count {
        // Σ over the taps of every axis (odometer over tap choices).
        var value = 0.0
        let axisTaps = (0..<rank).map { taps[$0][index[$0]] }
        if axisTaps.contains(where: { $0 == nil }) {
            value = spec.extrapolation
        } else {
            let lists = axisTaps.map { $0! }
            var choice = [Int](repeating: 0, count: rank)
            outer: while true {
                var weight = 1.0, flat = 0
                for a in 0..<rank {
                    let (i, w) = lists[a][choice[a]]
                    weight *= w
                    flat += i * strides[a]
                }
                if weight != 0 { value += weight * values[flat] }
                var a = rank - 1
                while a >= 0 {
                    choice[a] += 1
                    if choice[a] < lists[a].count { continue outer }
                    choice[a] = 0
                    a -= 1
                }
                break
            }
        }
        out[o] = value
        var a = rank - 1
        while a >= 0 { index[a] += 1; if index[a] < spec.outShape[a] { break }; index[a] = 0; a -= 1 }
    }
    if case .int = x.storage {
        return RuntimeTensor(shape: spec.outShape, ints: out.map(saturatingInt64), elementType: x.elementType)
    }
    return try RuntimeTensor(shape: spec.outShape, values: out, elementType: x.elementType)
}

/// Output shape and per-axis scales from `scales` (output = ⌊in·scale⌋, or
/// ⌊in·(roi_end − roi_start)·scale⌋ for tf_crop_and_resize) or from `sizes`
/// (scale = out/in, after keep_aspect_ratio_policy), restricted to `axes`.
func resizeShape(_ x: RuntimeTensor, scales: [Double]?, sizes: [Int]?, axes: [Int], policy: String,
                 roi: [Double], cropMode: Bool) throws -> (shape: [Int], scales: [Double]) {
    var shape = x.shape
    var allScales = [Double](repeating: 1, count: x.rank)
    if let sizes, !sizes.isEmpty {
        guard sizes.count == axes.count else { throw KernelError("sizes \(sizes) do not match \(axes.count) axes") }
        var targets = sizes
        if policy != "stretch" {
            let ratios = axes.enumerated().map { Double(sizes[$0.offset]) / Double(x.shape[$0.element]) }
            guard let r = policy == "not_larger" ? ratios.min() : ratios.max() else { throw KernelError("no axes") }
            guard policy == "not_larger" || policy == "not_smaller" else { throw KernelError("unknown keep_aspect_ratio_policy '\(policy)'") }
            targets = try axes.map {
                let t = (Double(x.shape[$0]) * r).rounded()
                guard t.isFinite, t >= 0, t <= Double(maxElements) else { throw KernelError("sizes \(sizes) give an invalid output") }
                return Int(t)
            }
        }
        for (k, a) in axes.enumerated() {
            guard targets[k] >= 0 else { throw KernelError("negative size in \(sizes)") }
            shape[a] = targets[k]
            allScales[a] = x.shape[a] == 0 ? 1 : Double(targets[k]) / Double(x.shape[a])
        }
    } else if let scales, !scales.isEmpty {
        guard scales.count == axes.count else { throw KernelError("scales \(scales) do not match \(axes.count) axes") }
        for (k, a) in axes.enumerated() {
            guard scales[k] > 0 else { throw KernelError("scale \(scales[k]) must be positive") }
            let length = cropMode && !roi.isEmpty ? roi[x.rank + a] - roi[a] : 1
            let size = (Double(x.shape[a]) * length * scales[k]).rounded(.down)
            guard size.isFinite, size >= 0, size <= Double(maxElements) else { throw KernelError("scale \(scales[k]) gives an invalid output size") }
            shape[a] = Int(size)
            allScales[a] = scales[k]
        }
    } else {
        throw KernelError("one of scales and sizes is required")
    }
    return (shape, allScales)
}

let resizeKernels: [String: Kernel] = [
    "Resize": { ctx in
        let x = try ctx.input(0)
        var spec = ResizeSpec()
        spec.mode = try ctx.string("mode", "nearest")
        if try ctx.int("antialias", 0) != 0 { throw KernelError("antialias = 1 is not supported") }
        var scales: [Double]? = nil, sizes: [Int]? = nil, roi: [Double] = []
        if ctx.opset < 11 {
            spec.coordinateMode = "asymmetric"
            spec.nearestMode = "floor"
            scales = try ctx.input(1).doubles()
        } else {
            spec.coordinateMode = try ctx.string("coordinate_transformation_mode", "half_pixel")
            spec.nearestMode = try ctx.string("nearest_mode", "round_prefer_floor")
            spec.cubicA = Double(try ctx.float("cubic_coeff_a", -0.75))
            spec.excludeOutside = try ctx.int("exclude_outside", 0) != 0
            spec.extrapolation = Double(try ctx.float("extrapolation_value", 0))
            roi = ctx.optionalInput(1)?.doubles() ?? []
            scales = ctx.optionalInput(2)?.doubles()
            sizes = try ctx.optionalInput(3).map { try intValues($0, "sizes") }
            if let s = scales, !s.isEmpty, let z = sizes, !z.isEmpty { throw KernelError("scales and sizes are both given") }
        }
        let axes = try normalizedAxes(try ctx.ints("axes") ?? Array(0..<x.rank), rank: x.rank, ctx)
        let crop = spec.coordinateMode == "tf_crop_and_resize"
        if crop {
            // roi is given for `axes` ([starts…, ends…]); expand to every axis.
            guard roi.count == 2 * axes.count else { throw KernelError("tf_crop_and_resize needs roi for every resized axis") }
            var full = [Double](repeating: 0, count: x.rank) + [Double](repeating: 1, count: x.rank)
            for (k, a) in axes.enumerated() { full[a] = roi[k]; full[x.rank + a] = roi[axes.count + k] }
            spec.roi = full
        }
        let policy = try ctx.string("keep_aspect_ratio_policy", "stretch")
        let (shape, allScales) = try resizeShape(x, scales: scales, sizes: sizes, axes: axes, policy: policy,
                                                 roi: spec.roi, cropMode: crop)
        spec.outShape = shape
        spec.scales = allScales
        return [try resize(x, spec)]
    },
    "Upsample": { ctx in
        // Upsample-7/9: asymmetric coordinates; nearest rounds down; linear is n-linear.
        let x = try ctx.input(0)
        var spec = ResizeSpec()
        let mode = try ctx.string("mode", "nearest")
        spec.mode = mode == "bilinear" ? "linear" : mode
        spec.coordinateMode = "asymmetric"
        spec.nearestMode = "floor"
        let scales: [Double]
        if ctx.opset >= 9 {
            scales = try ctx.input(1).doubles()
        } else {
            guard let a = ctx.node.attribute("scales"), a.type == .floats else { throw KernelError("scales are required") }
            scales = a.floats.map(Double.init)
        }
        let (shape, allScales) = try resizeShape(x, scales: scales, sizes: nil, axes: Array(0..<x.rank), policy: "stretch",
                                                 roi: [], cropMode: false)
        spec.outShape = shape
        spec.scales = allScales
        return [try resize(x, spec)]
    },
]
