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

    @Test func convDilationOf2To62IsAnUncheckablePairNotACrash() throws {
        let scratch = ScratchDirectory()
        let input = Self.regression("arith-conv-dilation-2e62.onnx")
        let r = try runBnfold([input, "-o", scratch.file("o.onnx")])
        #expect(r.signal == nil)
        #expect(r.status == 1)
        #expect(r.stderr == "bnfold: error: \(input): verification failed: bn folded into conv (output 'y', input [1, 1, 4, 4]): could not be checked: node 'conv' (Conv): attribute 'dilations' has a value out of range\n")
        #expect(scratch.contents().isEmpty)
    }

    @Test func padOfInt64MinIsAnInputErrorForCheck() throws {
        let input = Self.regression("arith-pad-int64-min.onnx")
        let r = try runBnfold(["check", input, input])
        #expect(r.signal == nil)
        #expect(r.status == 2)
        #expect(r.stderr == "bnfold: error: \(input): cannot be run with the reference runtime (or \(input)): node 'Pad#0' (Pad): pads [0, 0, -9223372036854775808, 0, 0, 0, 0, 0] are too large\n")
    }
}
