import ONNXGraph
import TestSupport

/// The linear ops of the fold tests, added to a ``ModelSketch``.

/// Channels per grouping: single 3 → 5 (group 1), two 4 → 6 (group 2, so
/// C_out/group = 3 > 1: a ConvTranspose fold on the wrong axis shows),
/// depthwise 4 → 4 (group 4).
func channels(_ grouping: Grouping) -> (inChannels: Int, outChannels: Int, group: Int) {
    switch grouping {
    case .single: (3, 5, 1)
    case .two: (4, 6, 2)
    case .depthwise: (4, 4, 4)
    }
}

/// Spatial sizes and attributes of a convolution case; pads deliberately asymmetric.
struct ConvGeometry {
    var spatial: [Int], kernel: [Int], strides: [Int], pads: [Int], dilations: [Int], outputPadding: [Int]

    init(rank: Int, transpose: Bool) {
        switch (rank, transpose) {
        case (1, false): (spatial, kernel, strides, pads, dilations, outputPadding) = ([9], [3], [2], [1, 1], [1], [0])
        case (2, false): (spatial, kernel, strides, pads, dilations, outputPadding) = ([6, 7], [3, 3], [1, 2], [1, 0, 1, 2], [1, 2], [0, 0])
        case (3, false): (spatial, kernel, strides, pads, dilations, outputPadding) = ([4, 5, 6], [3, 2, 3], [1, 1, 2], [1, 0, 1, 1, 1, 0], [1, 2, 1], [0, 0, 0])
        case (1, true): (spatial, kernel, strides, pads, dilations, outputPadding) = ([4], [3], [2], [1, 0], [1], [1])
        case (2, true): (spatial, kernel, strides, pads, dilations, outputPadding) = ([3, 4], [2, 3], [1, 2], [0, 1, 1, 0], [2, 1], [0, 1])
        case (3, true): (spatial, kernel, strides, pads, dilations, outputPadding) = ([2, 3, 3], [2, 2, 3], [2, 1, 1], [1, 0, 0, 0, 0, 1], [1, 1, 1], [1, 0, 0])
        default: preconditionFailure("rank \(rank)")
        }
    }

    func attributes(transpose: Bool, group: Int) -> [Attribute] {
        var a: [Attribute] = [.ints("kernel_shape", kernel.map(Int64.init)), .ints("strides", strides.map(Int64.init)),
                              .ints("pads", pads.map(Int64.init)), .ints("dilations", dilations.map(Int64.init))]
        if transpose { a.append(.ints("output_padding", outputPadding.map(Int64.init))) }
        if group != 1 { a.append(.int("group", Int64(group))) }
        return a
    }
}

/// Gemm/MatMul sizes: A is [M, K], the output [M, N].
let denseM = 3, denseK = 4, denseN = 5

extension ModelSketch {
    /// A Conv or ConvTranspose `name` from `input` to `output` (weight
    /// `<name>_W`, bias `<name>_B`); returns its output channels.
    @discardableResult
    mutating func convolution(transpose: Bool, rank: Int, grouping: Grouping, bias: Bool, input: String,
                              output: String, name: String, attributes: [Attribute]? = nil) -> Int {
        let (cIn, cOut, group) = channels(grouping)
        let geometry = ConvGeometry(rank: rank, transpose: transpose)
        let weightShape = (transpose ? [cIn, cOut / group] : [cOut, cIn / group]) + geometry.kernel
        var inputs = [input, randomConstant(name + "_W", dims: weightShape)]
        if bias { inputs.append(randomConstant(name + "_B", dims: [cOut], scale: 0.5)) }
        node(transpose ? "ConvTranspose" : "Conv", inputs, output, name: name,
             attributes ?? geometry.attributes(transpose: transpose, group: group))
        return cOut
    }

    /// The input shape of a convolution case.
    static func convolutionInput(transpose: Bool, rank: Int, grouping: Grouping) -> [Int] {
        [1, channels(grouping).inChannels] + ConvGeometry(rank: rank, transpose: transpose).spatial
    }
}
