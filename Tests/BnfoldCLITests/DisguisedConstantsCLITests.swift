import Foundation
import ONNXFile
import ONNXGraph
import Testing
import TestSupport

/// The fold command on weights behind an Identity and a dynamo-style
/// computed bias: folded, verified (the pair check reads through both), written.
@Suite struct DisguisedConstantsCLITests {
    @Test func identityWeightAndComputedBiasFoldAndVerify() throws {
        let scratch = ScratchDirectory()
        var model = ConvBNFixture(ConvBNSpec(rank: 2, grouping: .two, hasBias: false, seed: 93)).model
        model.updateGraph { g in
            let zero = makeTensor(nil, .float, dims: [], values: [0])
            g.nodes.insert(contentsOf: [
                Node(opType: "Identity", inputs: ["W"], outputs: ["W_id"], name: "w_id"),
                constantNode(output: "zero_f", tensor: zero, name: "const_zero"),
                Node(opType: "Shape", inputs: ["W"], outputs: ["W_dim0"], name: "w_shape",
                     attributes: [.int("start", 0), .int("end", 1)]),
                Node(opType: "CastLike", inputs: ["zero_f", "X"], outputs: ["zero"], name: "zero"),
                Node(opType: "Expand", inputs: ["zero", "W_dim0"], outputs: ["B"], name: "bias"),
            ], at: 0)
            g.nodes[5].inputs = ["X", "W_id", "B"]
        }
        _ = try ModelWriter.write(model, to: scratch.file("m.onnx"))
        let r = try runBnfold([scratch.file("m.onnx"), "-o", scratch.file("o.onnx")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("BatchNormalization: 1 found, 1 folded, 0 kept"))
        #expect(r.stdout.contains("verified: 1 folded pair(s) checked, 0 failed; whole model passed"))
        let folded = try ModelReader.read(path: scratch.file("o.onnx"))
        #expect(folded.graph?.nodes.map(\.opType) == ["Conv"])
        #expect(folded.graph?.initializers.map(\.name) == ["W", "B"])
    }
}
