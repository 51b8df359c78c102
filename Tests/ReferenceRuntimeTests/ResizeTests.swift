import Testing
import ONNXGraph
@testable import ReferenceRuntime
import TestSupport

@Suite("Resize and Upsample")
struct ResizeTests {
    let grid = tensor([1, 1, 2, 2], [1, 2, 3, 4])

    /// Examples from the ONNX operator documentation (Resize test cases).
    @Test func specExamples() throws {
        // resize_upsample_scales_nearest: scales [1, 1, 2, 3].
        let nearest = try runNode("Resize", [grid, nil, tensor([4], [1, 1, 2, 3])], attributes: [.string("mode", "nearest")])[0]
        expectEqual(nearest, shape: [1, 1, 4, 6],
                    [1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 3, 3, 3, 4, 4, 4], "nearest upsample")
        // resize_downsample_scales_linear: half_pixel, scales 0.6 → [[2.6666665, 4.3333331]].
        let x = tensor([1, 1, 2, 4], [1, 2, 3, 4, 5, 6, 7, 8])
        let down = try runNode("Resize", [x, nil, tensor([4], [1, 1, 0.6, 0.6])], attributes: [.string("mode", "linear")])[0]
        #expect(down.shape == [1, 1, 1, 2])
        expectClose(down.doubles(), [8.0 / 3, 13.0 / 3], bound: [4 * u32 * 3, 4 * u32 * 5], "linear downsample")
        // resize_upsample_scales_linear_align_corners.
        let ac = try runNode("Resize", [grid, nil, tensor([4], [1, 1, 2, 2])],
                             attributes: [.string("mode", "linear"), .string("coordinate_transformation_mode", "align_corners")])[0]
        let third = 1.0 / 3
        let expected = [1, 1 + third, 1 + 2 * third, 2, 1 + 2 * third, 2, 2 + third, 2 + 2 * third,
                        2 + third, 2 + 2 * third, 3, 3 + third, 3, 3 + third, 3 + 2 * third, 4]
        expectClose(ac.doubles(), expected, bound: expected.map { 2 * u32 * $0 }, "linear align_corners")
        // sizes instead of scales; nearest downsample: resize_downsample_sizes_nearest → [[1, 3]].
        let sized = try runNode("Resize", [x, nil, nil, ints([1, 1, 1, 3])], attributes: [.string("mode", "nearest")])[0]
        expectEqual(sized, shape: [1, 1, 1, 3], [1, 2, 4], "nearest sizes")
    }

    /// Bilinear on 2-D planes straight from the definition: source
    /// coordinate per mode, clamped to [0, in − 1], weights (1 − t, t)
    /// between its floor and ceiling on each axis. The runtime evaluates
    /// the same sum in Double and rounds once: 2u₃₂·max|x| bound.
    @Test(arguments: ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"])
    func bilinear(_ mode: String) throws {
        var rng = SeededGenerator(seed: 8)
        let (h, w, oh, ow) = (3, 5, 7, 4)
        let v = randomValues(2 * h * w, &rng)
        let y = try runNode("Resize", [tensor([1, 2, h, w], v), nil, nil, ints([1, 2, oh, ow])],
                            attributes: [.string("mode", "linear"), .string("coordinate_transformation_mode", mode)])[0]
        func source(_ o: Int, _ inSize: Int, _ outSize: Int) -> Double {
            let s = Double(outSize) / Double(inSize)
            switch mode {
            case "half_pixel": return (Double(o) + 0.5) / s - 0.5
            case "asymmetric": return Double(o) / s
            case "align_corners": return Double(o) * Double(inSize - 1) / Double(outSize - 1)
            default: return outSize > 1 ? (Double(o) + 0.5) / s - 0.5 : 0
            }
        }
        var expected: [Double] = []
        for c in 0..<2 { for i in 0..<oh { for j in 0..<ow {
            let sy = min(max(source(i, h, oh), 0), Double(h - 1)), sx = min(max(source(j, w, ow), 0), Double(w - 1))
            let y0 = Int(sy), x0 = Int(sx), y1 = min(y0 + 1, h - 1), x1 = min(x0 + 1, w - 1)
            let ty = sy - Double(y0), tx = sx - Double(x0)
            func at(_ r: Int, _ q: Int) -> Double { v[(c * h + r) * w + q] }
            expected.append((1 - ty) * ((1 - tx) * at(y0, x0) + tx * at(y0, x1)) + ty * ((1 - tx) * at(y1, x0) + tx * at(y1, x1)))
        }}}
        #expect(y.shape == [1, 2, oh, ow])
        expectClose(y.doubles(), expected, bound: expected.map { _ in 2 * u32 }, "bilinear \(mode)")
    }

    /// Keys cubic weights sum to 1 (constants are preserved, also with
    /// exclude_outside), and with a = −0.5 the kernel reproduces linear
    /// functions away from the borders.
    @Test func cubic() throws {
        let constant = tensor([1, 1, 4, 4], Array(repeating: 2.5, count: 16))
        for exclude in [0, 1] {
            let y = try runNode("Resize", [constant, nil, tensor([4], [1, 1, 1.5, 2])],
                                attributes: [.string("mode", "cubic"), .int("exclude_outside", Int64(exclude))])[0]
            expectClose(y.doubles(), Array(repeating: 2.5, count: y.count), bound: Array(repeating: 4 * u32 * 2.5, count: y.count), "cubic constant")
        }
        let ramp = tensor([1, 8], (0..<8).map(Double.init))
        let y = try runNode("Resize", [ramp, nil, tensor([2], [1, 2])],
                            attributes: [.string("mode", "cubic"), .float("cubic_coeff_a", -0.5),
                                         .string("coordinate_transformation_mode", "asymmetric")])[0]
        // Output j samples x = j/2; interior (2 ≤ x ≤ 5) needs no clamped neighbour.
        for j in 4...10 { #expect(abs(y.doubles()[j] - Double(j) / 2) <= 8 * u32) }
    }

    @Test func upsampleAndNearestModes() throws {
        let up = try runNode("Upsample", [grid, tensor([4], [1, 1, 2, 2])], opset: 9)[0]
        expectEqual(up, shape: [1, 1, 4, 4], [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4], "Upsample-9 nearest")
        var scales = Attribute(name: "scales"); scales.type = .floats; scales.floats = [1, 1, 2, 2]
        let up7 = try runNode("Upsample", [grid], attributes: [scales, .string("mode", "linear")], opset: 7)[0]
        // asymmetric bilinear: row 0 = 1, 1.5, 2, 2 (clamped); row 1 halfway to row 3…
        expectEqual(up7, shape: [1, 1, 4, 4], [1, 1.5, 2, 2, 2, 2.5, 3, 3, 3, 3.5, 4, 4, 3, 3.5, 4, 4], "Upsample-7 linear")
        // 1-D, 4 → 3 asymmetric: sources 0, 4/3, 8/3 → floor 0, 1, 2; ceil 0, 2, 3; round_prefer_ceil 0, 1, 3.
        let row = tensor([4], [10, 20, 30, 40])
        for (mode, expected) in [("floor", [10.0, 20, 30]), ("ceil", [10.0, 30, 40]), ("round_prefer_ceil", [10.0, 20, 40])] {
            let r = try runNode("Resize", [row, nil, nil, ints([3])],
                                attributes: [.string("coordinate_transformation_mode", "asymmetric"), .string("nearest_mode", mode)])[0]
            expectEqual(r, shape: [3], expected, "nearest_mode \(mode)")
        }
        #expect(throws: RuntimeError.self) {
            try runNode("Resize", [row, nil, tensor([1], [2]), ints([8])])
        }
    }

    @Test func cropAndResize() throws {
        let x = tensor([1, 1, 3, 3], (1...9).map(Double.init))
        // roi [0, 0, 0.5, 0.5, 1, 1, 1.5, 1.5]: rows/cols from 1 to 3 (past the end → extrapolation).
        let y = try runNode("Resize", [x, tensor([8], [0, 0, 0.5, 0.5, 1, 1, 1.5, 1.5]), nil, ints([1, 1, 3, 3])],
                            attributes: [.string("mode", "linear"), .string("coordinate_transformation_mode", "tf_crop_and_resize"),
                                         .float("extrapolation_value", -1)])[0]
        // Source coordinates 1, 2, 3 on both axes; 3 is outside [0, 2].
        expectEqual(y, shape: [1, 1, 3, 3], [5, 6, -1, 8, 9, -1, -1, -1, -1], "tf_crop_and_resize")
    }
}
