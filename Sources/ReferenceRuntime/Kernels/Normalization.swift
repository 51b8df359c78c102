import Foundation

/// BatchNormalization (inference) and Softmax.
let normalizationKernels: [String: Kernel] = [
    "BatchNormalization": { ctx in
        var x = try ctx.take(0)
        let params = try (1...4).map { try ctx.input($0) }
        guard x.rank >= 2 else { throw KernelError("X has shape \(x.shape); BatchNormalization needs a channel axis") }
        if try ctx.int("training_mode", 0) != 0 {
            throw KernelError("training_mode = 1 (batch statistics) is not supported; only inference")
        }
        if ctx.opset < 7, try ctx.int("is_test", 0) == 0 {
            throw KernelError("is_test = 0 (training) is not supported; only inference")
        }
        if ctx.opset < 9, try ctx.int("spatial", 1) == 0 {
            throw KernelError("spatial = 0 is not supported")
        }
        let outputsWanted = ctx.node.outputs.dropFirst().filter { !$0.isEmpty }
        guard outputsWanted.isEmpty else { throw KernelError("the running mean/variance outputs (training) are not supported") }
        let channels = x.shape[1]
        for (i, p) in params.enumerated() where p.count != channels || p.rank != 1 {
            throw KernelError("input \(i + 1) has shape \(p.shape), expected [\(channels)]")
        }
        for p in params where RuntimeTensor.storageKind(of: p.elementType) == .int {
            throw KernelError("parameters must be floating point, got \(p.elementType)")
        }
        let epsilon = Double(try ctx.float("epsilon", 1e-5))
        // Per-channel affine map computed in Double: y = a·x + b with
        // a = γ/√(σ² + ε), b = β − μ·a.
        let (gamma, beta, mean, variance) = (params[0].doubles(), params[1].doubles(), params[2].doubles(), params[3].doubles())
        var a = [Double](repeating: 0, count: channels), b = a
        for ch in 0..<channels {
            a[ch] = gamma[ch] / (variance[ch] + epsilon).squareRoot()
            b[ch] = beta[ch] - mean[ch] * a[ch]
        }
        let inner = x.shape[2...].reduce(1, *)
        // Plane by plane (batch item, channel) over contiguous runs, split
        // over the workers: the same arithmetic per element as indexing the
        // channel of every element, without a division per element. The
        // result goes into X's buffer when this node is X's last reader.
        func apply<T: RuntimeFloat>(_ v: inout [T]) {
            let planes = channels * inner == 0 ? 0 : v.count / inner
            v.withUnsafeMutableBufferPointer { p in
                let base = Shared(p.baseAddress!)
                parallelChunks(planes, grain: max(1, 32_768 / max(inner, 1))) { range in
                    for plane in range {
                        let ch = plane % channels
                        let (scale, shift) = (a[ch], b[ch])
                        let q = base.value + plane * inner
                        for k in 0..<inner { q[k] = T(scale * Double(q[k]) + shift) }
                    }
                }
            }
        }
        let storage: RuntimeTensor.Storage
        switch x.takeStorage() {
        case .float(var v): apply(&v); storage = .float(v)
        case .double(var v): apply(&v); storage = .double(v)
        case .int: throw KernelError("X must be floating point, got \(x.elementType)")
        }
        return [RuntimeTensor(shape: x.shape, elementType: x.elementType, storage: storage)]
    },
    "Softmax": { ctx in
        let x = try ctx.input(0)
        let (outer, length, inner) = try softmaxLayout(ctx, x)
        var values = x.doubles()
        guard RuntimeTensor.storageKind(of: x.elementType) != .int else { throw KernelError("X must be floating point") }
        for o in 0..<outer {
            for i in 0..<inner {
                let base = o * length * inner + i
                var top = -Double.infinity
                for k in 0..<length { top = max(top, values[base + k * inner]) }
                var sum = 0.0
                for k in 0..<length {
                    let e = exp(values[base + k * inner] - top)
                    values[base + k * inner] = e
                    sum += e
                }
                for k in 0..<length { values[base + k * inner] /= sum }
            }
        }
        return [try RuntimeTensor(shape: x.shape, values: values, elementType: x.elementType)]
    },
]

/// Softmax's and LogSoftmax's runs: opset ≥ 13 along `axis` (default −1);
/// before, the input is seen as 2-D [∏ dims < axis, ∏ dims ≥ axis] (default
/// axis 1). The sizes before the run, of the run, and the stride inside it.
func softmaxLayout(_ ctx: KernelContext, _ x: RuntimeTensor) throws -> (outer: Int, length: Int, inner: Int) {
    let axis = try ctx.axis(try ctx.int("axis", ctx.opset >= 13 ? -1 : 1), rank: x.rank)
    let outer = x.shape[..<axis].reduce(1, *)
    if ctx.opset >= 13 {
        return (outer, x.rank == 0 ? 1 : x.shape[axis], x.rank == 0 ? 1 : x.shape[(axis + 1)...].reduce(1, *))
    }
    return (outer, x.shape[axis...].reduce(1, *), 1)
}
