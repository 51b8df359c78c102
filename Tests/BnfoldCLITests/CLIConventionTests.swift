import Foundation
import Testing
import TestSupport

/// Habits of the field's tools that bnfold follows (issue 12): the
/// onnxsim/trtexec shape form, negative numbers as option values, a
/// "did you mean" for pass names, and files that are not ONNX named as
/// what they are.
@Suite struct CLIConventionTests {
    let model = TestPaths.fixture("conv2d_bn.onnx")

    @Test func inputShapeTakesTheColonForm() throws {
        for form in ["X:2,3,6,6", "X=2,3,6,6"] {
            let r = try runBnfold(["check", model, model, "--input-shape", form])
            #expect(r.status == 0, "\(form): \(r.stderr)")
            #expect(r.stdout.contains("Y float [2, 6, 6, 6]"), "\(form): \(r.stdout)")
        }
        // The split is at the last colon: a TensorFlow-style name keeps its own.
        let tf = try runBnfold(["check", model, model, "--input-shape", "input_1:0:1,3,6,6"])
        #expect(tf.status == 2)
        #expect(tf.stderr.contains("--input-shape names 'input_1:0', which is not an input of the models"), "\(tf.stderr)")
    }

    @Test func aNegativeToleranceIsRefusedForWhatItIs() throws {
        let r = try runBnfold(["check", model, model, "--atol", "-1"])
        #expect(r.status == 2)
        #expect(r.stderr == "bnfold: error: --atol must be a finite number ≥ 0 (see 'bnfold --help')\n")
    }

    @Test func unknownPassNamesGetASuggestion() throws {
        let scratch = ScratchDirectory()
        for (given, suggested) in [("fold-bn", "fold-batchnorm"), ("fold-constnats", "fold-constants"), ("fold-mul-ad", "fold-mul-add")] {
            let r = try runBnfold([model, "-o", scratch.file("o.onnx"), "--passes", given])
            #expect(r.status == 2)
            #expect(r.stderr == "bnfold: error: --passes: unknown pass '\(given)' (did you mean '\(suggested)'?); 'bnfold passes' lists them (see 'bnfold --help')\n")
        }
        let far = try runBnfold([model, "-o", scratch.file("o.onnx"), "--disable", "quantize"])
        #expect(far.stderr == "bnfold: error: --disable: unknown pass 'quantize'; 'bnfold passes' lists them (see 'bnfold --help')\n")
        #expect(scratch.contents().isEmpty)
    }

    @Test func checkpointsAndOtherFormatsAreNamed() throws {
        let scratch = ScratchDirectory()
        let cases: [(String, [UInt8], String)] = [
            ("model.pt", [0x50, 0x4B, 0x03, 0x04] + Array("archive/data.pkl".utf8),
             "is a zip archive, not an ONNX model (a PyTorch .pt/.pth checkpoint is one: export the model with torch.onnx.export first)"),
            ("old.pth", [0x80, 0x02] + Array("}q\u{0}(X".utf8),
             "is a Python pickle, not an ONNX model (an old PyTorch checkpoint? export the model with torch.onnx.export first)"),
            ("keras.h5", [0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0],
             "is an HDF5 file (a Keras .h5 model?), not an ONNX model: convert it with tf2onnx first"),
        ]
        for (name, bytes, problem) in cases {
            let path = scratch.file(name)
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let r = try runBnfold([path, "-o", scratch.file("o.onnx")])
            #expect(r.status == 2)
            #expect(r.stderr == "bnfold: error: \(path): \(problem)\n")
        }
    }
}
