/// Straightforward Double reference implementations of the two ONNX operators
/// the fold rewrites, used to check the pass numerically.
///
/// Written from the ONNX operator definitions, independently of the pass and
/// meant to be obviously right rather than fast: one multiply-add per kernel
/// tap, in Double, batch size 1.
public enum Reference {
    /// The output spatial size of one Conv axis (ONNX `Conv`, explicit pads):
    /// `⌊(in + pad_begin + pad_end − dilation·(k − 1) − 1) / stride⌋ + 1`.
    public static func convOutputSize(input: Int, kernel: Int, stride: Int, padBegin: Int, padEnd: Int,
                                      dilation: Int) -> Int {
        (input + padBegin + padEnd - dilation * (kernel - 1) - 1) / stride + 1
    }

    /// ONNX `Conv` for N = 1 and 1 to 3 spatial axes (any rank works).
    ///
    /// - Parameters:
    ///   - input: `X`, shape `[1, C, d_1, …, d_r]`, row-major.
    ///   - weight: `W`, shape `[M, C/group, k_1, …, k_r]`.
    ///   - bias: `B` (`M` values) or nil.
    ///   - strides, dilations: per spatial axis (default 1).
    ///   - pads: `[begin_1, …, begin_r, end_1, …, end_r]` (default 0).
    /// - Returns: `Y` and its shape `[1, M, o_1, …, o_r]`.
    public static func conv(input: [Double], inputShape: [Int], weight: [Double], weightShape: [Int],
                            bias: [Double]?, group: Int = 1, strides: [Int]? = nil, pads: [Int]? = nil,
                            dilations: [Int]? = nil) -> (values: [Double], shape: [Int]) {
        let rank = inputShape.count - 2
        precondition(rank >= 1, "Conv needs at least one spatial axis")
        precondition(inputShape[0] == 1, "the reference handles batch size 1")
        precondition(weightShape.count == rank + 2, "weight rank \(weightShape.count) for input rank \(inputShape.count)")
        let channels = inputShape[1]
        let outChannels = weightShape[0]
        precondition(group >= 1 && channels % group == 0 && outChannels % group == 0, "bad group \(group)")
        let groupChannels = channels / group
        precondition(weightShape[1] == groupChannels, "weight has \(weightShape[1]) input channels, expected \(groupChannels)")
        precondition(input.count == product(inputShape) && weight.count == product(weightShape))
        if let bias { precondition(bias.count == outChannels) }

        let strides = strides ?? Array(repeating: 1, count: rank)
        let dilations = dilations ?? Array(repeating: 1, count: rank)
        let pads = pads ?? Array(repeating: 0, count: 2 * rank)
        precondition(strides.count == rank && dilations.count == rank && pads.count == 2 * rank)

        let inSpatial = Array(inputShape[2...])
        let kernel = Array(weightShape[2...])
        let outSpatial = (0..<rank).map {
            convOutputSize(input: inSpatial[$0], kernel: kernel[$0], stride: strides[$0],
                           padBegin: pads[$0], padEnd: pads[rank + $0], dilation: dilations[$0])
        }
        precondition(outSpatial.allSatisfy { $0 >= 1 }, "empty output \(outSpatial)")
        let inSpatialCount = product(inSpatial)
        let kernelCount = product(kernel)
        let outSpatialCount = product(outSpatial)
        let outPerGroup = outChannels / group

        // Kernel taps and output positions as multi-indices, computed once.
        let taps = (0..<kernelCount).map { unflatten($0, shape: kernel) }
        let outPositions = (0..<outSpatialCount).map { unflatten($0, shape: outSpatial) }
        var output = [Double](repeating: 0, count: outChannels * outSpatialCount)
        for m in 0..<outChannels {
            let g = m / outPerGroup
            for o in 0..<outSpatialCount {
                let outPosition = outPositions[o]
                var sum = bias?[m] ?? 0
                for (k, tap) in taps.enumerated() {
                    // Flat spatial index of the input this tap reads, or nil in the zero padding.
                    var flat = 0
                    var inside = true
                    for axis in 0..<rank {
                        let p = outPosition[axis] * strides[axis] - pads[axis] + tap[axis] * dilations[axis]
                        if p < 0 || p >= inSpatial[axis] { inside = false; break }
                        flat = flat * inSpatial[axis] + p
                    }
                    guard inside else { continue }
                    for c in 0..<groupChannels {
                        let x = input[(g * groupChannels + c) * inSpatialCount + flat]
                        let w = weight[(m * groupChannels + c) * kernelCount + k]
                        sum += w * x
                    }
                }
                output[m * outSpatialCount + o] = sum
            }
        }
        return (output, [1, outChannels] + outSpatial)
    }

    /// ONNX `BatchNormalization` in inference mode, channels on axis 1:
    /// `y = γ_c · (x − μ_c) / sqrt(σ²_c + ε) + β_c`.
    public static func batchNorm(input: [Double], shape: [Int], scale: [Double], bias: [Double],
                                 mean: [Double], variance: [Double], epsilon: Double) -> [Double] {
        precondition(shape.count >= 2 && input.count == product(shape))
        let channels = shape[1]
        precondition([scale, bias, mean, variance].allSatisfy { $0.count == channels })
        let perChannel = product(Array(shape[2...]))
        var output = input
        for n in 0..<shape[0] {
            for c in 0..<channels {
                let base = (n * channels + c) * perChannel
                for i in base..<(base + perChannel) {
                    output[i] = scale[c] * (input[i] - mean[c]) / (variance[c] + epsilon).squareRoot() + bias[c]
                }
            }
        }
        return output
    }

    /// Product of a shape's dimensions (1 for a scalar).
    public static func product(_ shape: [Int]) -> Int { shape.reduce(1, *) }

    /// Row-major multi-index of flat position `index`.
    public static func unflatten(_ index: Int, shape: [Int]) -> [Int] {
        var rest = index
        var result = [Int](repeating: 0, count: shape.count)
        for axis in stride(from: shape.count - 1, through: 0, by: -1) {
            result[axis] = rest % shape[axis]
            rest /= shape[axis]
        }
        return result
    }
}
