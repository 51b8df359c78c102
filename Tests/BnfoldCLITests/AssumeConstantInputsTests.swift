import Foundation
import GraphPasses
import ONNXFile
import ONNXGraph
import Testing
import TestSupport

/// `--assume-constant-inputs`: an IR ≥ 4 model whose BN parameters and
/// weights are initializers also listed as graph inputs.
@Suite struct AssumeConstantInputsTests {
    func writeOverridableModel(to path: String) throws {
        var model = ConvBNFixture(ConvBNSpec(seed: 91)).model
        model.updateGraph { g in
            for t in g.initializers { g.inputs.append(valueInfo(t.name!, .float, dims: t.dims.map(Int.init))) }
        }
        _ = try ModelWriter.write(model, to: path)
    }

    @Test func withoutTheFlagTheBNIsKeptWithTheReason() throws {
        let scratch = ScratchDirectory()
        try writeOverridableModel(to: scratch.file("m.onnx"))
        let r = try runBnfold([scratch.file("m.onnx"), "-o", scratch.file("o.onnx"), "--json"])
        #expect(r.status == 0)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(object["batchnorm"] as? [String: Int] == ["found": 1, "folded": 0, "kept": 1])
        let remarks = try #require(object["remarks"] as? [[String: String]])
        #expect(remarks.map { $0["reason"] } == ["OverridableInitializer"])
        #expect(remarks.first?["message"]?.contains("--assume-constant-inputs") == true)
    }

    @Test func withTheFlagItFoldsVerifiesAndDropsTheInputs() throws {
        let scratch = ScratchDirectory()
        try writeOverridableModel(to: scratch.file("m.onnx"))
        let r = try runBnfold([scratch.file("m.onnx"), "-o", scratch.file("o.onnx"), "--assume-constant-inputs"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("BatchNormalization: 1 found, 1 folded, 0 kept"))
        let folded = try ModelReader.read(path: scratch.file("o.onnx"))
        #expect(folded.graph?.inputs.map(\.name) == ["X"])
        #expect(folded.graph?.initializers.map(\.name) == ["W", "B"])
    }
}
