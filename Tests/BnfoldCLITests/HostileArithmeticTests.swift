import Foundation
import Testing
import TestSupport

/// Attribute values at the ends of Int64 reach the runtime and the verifier
/// as errors, never as a trap (they used to crash with SIGILL).
@Suite struct HostileArithmeticTests {
    static func regression(_ name: String) -> String {
        URL(fileURLWithPath: TestPaths.fixture("torch_resnet18.onnx")).deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Fuzz/regressions/\(name)").path
    }

    /// The kernel is 1 × 1, so the dilation changes nothing: the model is
    /// valid, folds, and both checks run (the runtime reads a dilation on a
    /// kernel axis of 1 as 1).
    @Test func convDilationOf2To62OnA1x1KernelFoldsAndIsChecked() throws {
        let scratch = ScratchDirectory()
        let input = Self.regression("arith-conv-dilation-2e62.onnx")
        let r = try runBnfold([input, "-o", scratch.file("o.onnx")])
        #expect(r.signal == nil)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("verified: 1 folded pair(s) checked, 0 failed; whole model passed"), "\(r.stdout)")
    }

    @Test func padOfInt64MinIsAnInputErrorForCheck() throws {
        let input = Self.regression("arith-pad-int64-min.onnx")
        let r = try runBnfold(["check", input, input])
        #expect(r.signal == nil)
        #expect(r.status == 2)
        #expect(r.stderr == "bnfold: error: \(input): cannot be run with the reference runtime (or \(input)): node 'Pad#0' (Pad): pads [0, 0, -9223372036854775808, 0, 0, 0, 0, 0] are too large\n")
    }
}

/// Conv attributes the ONNX spec rules out are input errors found by
/// validation before any pass (exit 2), not verification failures (exit 1).
/// Models made with the onnx package: Conv [2,1,3,3] on a [1,1,8,8] input.
@Suite struct InvalidConvAttributeTests {
    static let cases: [(String, String, String)] = [
        ("stride0", "CAg6rQEKJwoBeAoBdxIBeRoEY29udiIEQ29udioQCgdzdHJpZGVzQABAAaABBxIBZypXCAIIAQgDCAMQAUIBd0pIa54CQASQI8ANEdY+WVkRv6bB576BxVy+dEcBwK5/bb6bfl2/BqxUQJs0Zz4GjLS+6ASQvhYFK78sD4e/ERfIvozB9j5mR3S+WhsKAXgSFgoUCAESEAoCCAEKAggBCgIICAoCCAhiCQoBeRIECgIIAUIECgAQDw==",
         "node 'conv' (Conv) in the main graph has strides [0, 1]: each must be at least 1"),
        ("negpad", "CAg6twEKMQoBeAoBdxIBeRoEY29udiIEQ29udioaCgRwYWRzQABA////////////AUAAQACgAQcSAWcqVwgCCAEIAwgDEAFCAXdKSGueAkAEkCPADRHWPllZEb+mwee+gcVcvnRHAcCuf22+m35dvwasVECbNGc+Boy0vugEkL4WBSu/LA+HvxEXyL6MwfY+Zkd0vlobCgF4EhYKFAgBEhAKAggBCgIIAQoCCAgKAggIYgkKAXkSBAoCCAFCBAoAEA8=",
         "node 'conv' (Conv) in the main graph has pads [0, -1, 0, 0]: each must be at least 0"),
        ("group3", "CAg6qQEKIwoBeAoBdxIBeRoEY29udiIEQ29udioMCgVncm91cBgDoAECEgFnKlcIAggBCAMIAxABQgF3SkhrngJABJAjwA0R1j5ZWRG/psHnvoHFXL50RwHArn9tvpt+Xb8GrFRAmzRnPgaMtL7oBJC+FgUrvywPh78RF8i+jMH2PmZHdL5aGwoBeBIWChQIARIQCgIIAQoCCAEKAggICgIICGIJCgF5EgQKAggBQgQKABAP",
         "node 'conv' (Conv) in the main graph has group [3]: it must divide the 2 output channels of the weight 'w'"),
    ]

    @Test(arguments: cases)
    func invalidAttributeIsAnInputError(_ name: String, _ model: String, _ problem: String) throws {
        let scratch = ScratchDirectory()
        let input = scratch.file("\(name).onnx")
        try #require(Data(base64Encoded: model)).write(to: URL(fileURLWithPath: input))
        let r = try runBnfold([input, "-o", scratch.file("out.onnx")])
        #expect(r.status == 2)
        #expect(r.stderr == "bnfold: error: \(input): is not a valid ONNX model: \(problem)\n")
        #expect(scratch.contents() == ["\(name).onnx"])
    }
}
