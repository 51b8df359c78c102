/// Double reference implementations of the other linear operators the folds
/// rewrite (ConvTranspose, Gemm, MatMul) and of ONNX broadcasting, written
/// from the ONNX operator definitions as plain loops: independent of the
/// passes and of the reference runtime, meant to be obviously right.
extension Reference {
    /// The output size of one ConvTranspose axis (explicit pads):
    /// `stride·(in − 1) + output_padding + dilation·(k − 1) + 1 − pad_begin − pad_end`.
    public static func convTransposeOutputSize(input: Int, kernel: Int, stride: Int, padBegin: Int, padEnd: Int,
                                               dilation: Int, outputPadding: Int) -> Int {
        stride * (input - 1) + outputPadding + dilation * (kernel - 1) + 1 - padBegin - padEnd
    }

    /// ONNX `ConvTranspose` for N = 1 and any number of spatial axes.
    ///
    /// Every input element scatters into the output: input channel
    /// `g·(C/group) + i` at position p adds `X·W[g·(C/group) + i, j, k]` to
    /// output channel `g·(M/group) + j` at `p·stride + k·dilation − pad_begin`.
    ///
    /// - Parameters:
    ///   - input: `X`, shape `[1, C, d…]`.
    ///   - weight: `W`, shape `[C, M/group, k…]`.
    ///   - bias: `B` (`M` values) or nil.
    ///   - pads: `[begin…, end…]`; `outputPadding` per axis (default 0).
    public static func convTranspose(input: [Double], inputShape: [Int], weight: [Double], weightShape: [Int],
                                     bias: [Double]?, group: Int = 1, strides: [Int]? = nil, pads: [Int]? = nil,
                                     dilations: [Int]? = nil, outputPadding: [Int]? = nil)
        -> (values: [Double], shape: [Int]) {
        let rank = inputShape.count - 2
        precondition(rank >= 1 && inputShape[0] == 1 && weightShape.count == rank + 2)
        let channels = inputShape[1]
        precondition(weightShape[0] == channels && channels % group == 0)
        let inPerGroup = channels / group
        let outPerGroup = weightShape[1]
        let outChannels = outPerGroup * group
        let strides = strides ?? Array(repeating: 1, count: rank)
        let dilations = dilations ?? Array(repeating: 1, count: rank)
        let pads = pads ?? Array(repeating: 0, count: 2 * rank)
        let outputPadding = outputPadding ?? Array(repeating: 0, count: rank)
        let inSpatial = Array(inputShape[2...])
        let kernel = Array(weightShape[2...])
        let outSpatial = (0..<rank).map {
            convTransposeOutputSize(input: inSpatial[$0], kernel: kernel[$0], stride: strides[$0], padBegin: pads[$0],
                                    padEnd: pads[rank + $0], dilation: dilations[$0], outputPadding: outputPadding[$0])
        }
        let inCount = product(inSpatial), kernelCount = product(kernel), outCount = product(outSpatial)
        var output = [Double](repeating: 0, count: outChannels * outCount)
        for m in 0..<outChannels {
            for o in 0..<outCount { output[m * outCount + o] = bias?[m] ?? 0 }
        }
        for c in 0..<channels {
            let g = c / inPerGroup
            for p in 0..<inCount {
                let position = unflatten(p, shape: inSpatial)
                let x = input[c * inCount + p]
                for k in 0..<kernelCount {
                    let tap = unflatten(k, shape: kernel)
                    var flat = 0
                    var inside = true
                    for axis in 0..<rank {
                        let q = position[axis] * strides[axis] + tap[axis] * dilations[axis] - pads[axis]
                        if q < 0 || q >= outSpatial[axis] { inside = false; break }
                        flat = flat * outSpatial[axis] + q
                    }
                    guard inside else { continue }
                    for j in 0..<outPerGroup {
                        let w = weight[(c * outPerGroup + j) * kernelCount + k]
                        output[(g * outPerGroup + j) * outCount + flat] += x * w
                    }
                }
            }
        }
        return (output, [1, outChannels] + outSpatial)
    }

    /// ONNX `Gemm`: `Y = alpha·op(A)·op(B) + beta·C`, A and B 2-D, C
    /// broadcast to `[M, N]` (or absent).
    public static func gemm(a: [Double], aShape: [Int], b: [Double], bShape: [Int], c: (values: [Double], shape: [Int])?,
                            transA: Bool, transB: Bool, alpha: Double, beta: Double) -> (values: [Double], shape: [Int]) {
        precondition(aShape.count == 2 && bShape.count == 2)
        let (m, k) = transA ? (aShape[1], aShape[0]) : (aShape[0], aShape[1])
        let (kb, n) = transB ? (bShape[1], bShape[0]) : (bShape[0], bShape[1])
        precondition(k == kb, "Gemm: K \(k) vs \(kb)")
        let bias = c.map { broadcast($0.values, from: $0.shape, to: [m, n]) }
        var output = [Double](repeating: 0, count: m * n)
        for row in 0..<m {
            for column in 0..<n {
                var sum = 0.0
                for i in 0..<k {
                    let x = transA ? a[i * aShape[1] + row] : a[row * aShape[1] + i]
                    let w = transB ? b[column * bShape[1] + i] : b[i * bShape[1] + column]
                    sum += x * w
                }
                output[row * n + column] = alpha * sum + (bias.map { beta * $0[row * n + column] } ?? 0)
            }
        }
        return (output, [m, n])
    }

    /// ONNX `MatMul` of A `[…, M, K]` (rank ≥ 2) and a 2-D B `[K, N]`.
    public static func matMul(a: [Double], aShape: [Int], b: [Double], bShape: [Int]) -> (values: [Double], shape: [Int]) {
        precondition(aShape.count >= 2 && bShape.count == 2 && aShape.last == bShape[0])
        let k = bShape[0], n = bShape[1]
        let rows = a.count / k
        var output = [Double](repeating: 0, count: rows * n)
        for row in 0..<rows {
            for column in 0..<n {
                var sum = 0.0
                for i in 0..<k { sum += a[row * k + i] * b[i * n + column] }
                output[row * n + column] = sum
            }
        }
        return (output, Array(aShape.dropLast()) + [n])
    }

    /// The shape two shapes broadcast to (ONNX/NumPy rules: aligned from
    /// the right, sizes equal or 1).
    public static func broadcastShape(_ a: [Int], _ b: [Int]) -> [Int] {
        let rank = max(a.count, b.count)
        let pa = Array(repeating: 1, count: rank - a.count) + a
        let pb = Array(repeating: 1, count: rank - b.count) + b
        return zip(pa, pb).map { x, y in
            precondition(x == y || x == 1 || y == 1, "shapes \(a) and \(b) do not broadcast")
            return max(x, y)
        }
    }

    /// `values` of shape `from` repeated to shape `to` (NumPy broadcasting).
    public static func broadcast(_ values: [Double], from: [Int], to: [Int]) -> [Double] {
        let padded = Array(repeating: 1, count: to.count - from.count) + from
        return (0..<product(to)).map { i in
            let index = unflatten(i, shape: to)
            var flat = 0
            for axis in 0..<to.count { flat = flat * padded[axis] + (padded[axis] == 1 ? 0 : index[axis]) }
            return values[flat]
        }
    }
}
