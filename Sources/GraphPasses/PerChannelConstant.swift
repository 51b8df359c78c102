import ONNXGraph

/// A constant operand of Mul or Add read as one value per channel of the
/// other operand, if broadcasting makes it that.
///
/// ONNX broadcasting aligns shapes from the right. Against an output of rank
/// R with channels on axis 1 (NC…, or Gemm's `[M, N]`), the constant is per
/// channel when every axis of it that lands on an axis other than 1 has
/// size 1, and the one landing on axis 1 (if any) has size 1 or C. So
/// `[]`, `[1]`, `[C, 1, 1]` and `[1, C, 1, 1]` are per channel of NCHW, but
/// `[C]` lands on W: it scales columns, whatever its length.
///
/// - Returns: C values (a broadcast scalar repeated), or the reason it is not per channel:
///   `RankMismatch` (more axes than the output: the output would grow),
///   `BroadcastNotPerChannel`, `ShapeMismatch` (a size that cannot broadcast).
func perChannelValues(of constant: Tensor, named name: String, outputRank: Int,
                      channels: Int) -> Result<[Double], FoldMiss> {
    let dims = constant.dims
    guard dims.count <= outputRank else {
        return .failure(FoldMiss(.rankMismatch, "the constant '\(name)' has shape \(dims), more axes than the rank-\(outputRank) output it would broadcast against"))
    }
    var perChannel = false
    for (position, size) in dims.enumerated() {
        let axis = outputRank - dims.count + position
        if axis == 1 {
            guard size == 1 || size == Int64(channels) else {
                return .failure(FoldMiss(.shapeMismatch, "the constant '\(name)' has shape \(dims): \(size) values on the channel axis, for \(channels) channels"))
            }
            perChannel = size != 1
        } else if size != 1 {
            return .failure(FoldMiss(.broadcastNotPerChannel, "the constant '\(name)' has shape \(dims), which broadcasts along axis \(axis) of the rank-\(outputRank) output, not only along the channel axis 1"))
        }
    }
    guard let values = try? constant.doubles() else {
        return .failure(FoldMiss(.nonConstantBNParameters, "the constant '\(name)' could not be read"))
    }
    return .success(perChannel ? values : [Double](repeating: values[0], count: channels))
}
