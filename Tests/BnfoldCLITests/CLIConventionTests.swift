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

    /// `check` says what it bound each symbolic dimension to; `--strict`
    /// fails (exit 1, after the report) when one was left at 1 unasked.
    @Test func checkReportsBindingsAndStrictWantsThemBound() throws {
        let open = try runBnfold(["check", model, model])
        #expect(open.status == 0, "\(open.stderr)")
        #expect(open.stdout.contains("\n  note: the models ran on input 'X' [1, 3, 6, 6] (N = 1: unbound; --input-shape sets it)\n  equivalent\n"),
                "\(open.stdout)")
        let strict = try runBnfold(["check", model, model, "--strict", "--json"])
        #expect(strict.status == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(strict.stdout.utf8)) as? [String: Any])
        #expect(object["equivalent"] as? Bool == true)
        #expect(object["notes"] as? [String] == ["the models ran on input 'X' [1, 3, 6, 6] (N = 1: unbound; --input-shape sets it)"])
        #expect(strict.stderr == "bnfold: error: --strict: unbound dimensions (each was 1) in input(s) 'X'; bind them with --input-shape NAME:d,d,…\n")
        let bound = try runBnfold(["check", model, model, "--strict", "--input-shape", "X:2,3,6,6"])
        #expect(bound.status == 0, "\(bound.stderr)")
        #expect(bound.stdout.contains("  note: the models ran on input 'X' [2, 3, 6, 6] (N = 2, from --input-shape)\n"))
        // Fixed shapes need no binding: no note, strict passes.
        let fixed = try runBnfold(["check", TestPaths.fixture("torch_resnet18.onnx"), TestPaths.fixture("torch_resnet18.onnx"), "--strict"])
        #expect(fixed.status == 0, "\(fixed.stderr)")
        #expect(!fixed.stdout.contains("note:"))
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

/// `--strict` for CI, the training-mode hint, and input files named in
/// their own errors (issue 12).
@Suite struct StrictAndHintTests {
    @Test func strictFailsAKeptBatchNormAfterWritingTheReport() throws {
        let scratch = ScratchDirectory()
        let kept = try runBnfold([TestPaths.fixture("skip_training_mode.onnx"), "-o", scratch.file("o.onnx"), "--strict"])
        #expect(kept.status == 1)
        #expect(kept.stderr == "bnfold: error: --strict: 1 BatchNormalization node(s) kept (the report says why)\n")
        #expect(kept.stdout.contains("call model.eval() before torch.onnx.export"), "\(kept.stdout)")
        #expect(scratch.contents() == ["o.onnx"])   // the output is written; the exit status is the verdict
        let clean = try runBnfold([TestPaths.fixture("conv2d_bn.onnx"), "-o", scratch.file("p.onnx"), "--strict"])
        #expect(clean.status == 0, "\(clean.stderr)")
        #expect(clean.stderr.isEmpty)
    }

    @Test func aWrongShapeInputFileIsNamed() throws {
        let scratch = ScratchDirectory()
        let model = TestPaths.fixture("conv2d_bn.onnx")
        // NumPy .npy v1.0: magic, version, header length, header, float32 data.
        var header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 6, 6), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(header.utf8.count & 0xFF), UInt8(header.utf8.count >> 8)]
        bytes += Array(header.utf8) + [UInt8](repeating: 0, count: 72 * 4)
        let npy = scratch.file("x.npy")
        try Data(bytes).write(to: URL(fileURLWithPath: npy))
        let r = try runBnfold(["check", model, model, "--input", "X=\(npy)"])
        #expect(r.status == 2)
        #expect(r.stderr == "bnfold: error: \(npy): has shape [1, 2, 6, 6], but input 'X' of \(model) is [N, 3, 6, 6]\n")
    }
}

/// `-` as the input reads the model from standard input (issue 12).
@Suite struct StandardInputTests {
    func bnfold(stdin file: String, _ arguments: [String]) throws -> CommandResult {
        try runCommand("/bin/sh", ["-c", "f=$1; shift; exec \"$0\" \"$@\" < \"$f\"", TestPaths.bnfoldBinary, file] + arguments)
    }

    @Test func aModelFromStandardInputFolds() throws {
        let scratch = ScratchDirectory()
        let out = scratch.file("o.onnx")
        let r = try bnfold(stdin: TestPaths.fixture("conv2d_bn.onnx"), ["-", "-o", out])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("BatchNormalization: 1 found, 1 folded, 0 kept"))
        let check = try runBnfold(["check", TestPaths.fixture("conv2d_bn.onnx"), out])
        #expect(check.status == 0, "\(check.stderr)")
        let inspect = try bnfold(stdin: TestPaths.fixture("conv2d_bn.onnx"), ["inspect", "-"])
        #expect(inspect.stdout.contains("1 would fold"), "\(inspect.stdout)")
    }

    /// A stream has no directory: external data is refused by name, never
    /// looked up in the current directory.
    @Test func externalDataFromStandardInputIsRefused() throws {
        let scratch = ScratchDirectory()
        let r = try bnfold(stdin: TestPaths.fixture("conv2d_bn_external.onnx"), ["-", "-o", scratch.file("o.onnx")])
        #expect(r.status == 2)
        #expect(r.stderr.hasPrefix("bnfold: error: standard input: tensor '"))
        #expect(r.stderr.hasSuffix("': external data cannot be read: the model comes from standard input, which has no directory for data files\n"))
        let empty = try bnfold(stdin: "/dev/null", ["-", "-o", scratch.file("o.onnx")])
        #expect(empty.stderr == "bnfold: error: standard input: is empty\n")
        #expect(scratch.contents().isEmpty)
    }
}

/// The fold's whole-model check takes `--input-shape` / `--input` as
/// `check` does, and the report says what it bound (issue 12).
@Suite struct FoldInputBindingTests {
    let model = TestPaths.fixture("conv2d_bn.onnx")   // input X [N, 3, 6, 6]

    func notes(_ r: CommandResult) throws -> [String] {
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        return object?["notes"] as? [String] ?? []
    }

    @Test func theReportSaysWhatSymbolicDimensionsWereBoundTo() throws {
        let scratch = ScratchDirectory()
        let unbound = try runBnfold([model, "-o", scratch.file("a.onnx"), "--json"])
        #expect(try notes(unbound).contains("the whole-model check ran on input 'X' [1, 3, 6, 6] (N = 1: unbound; --input-shape sets it)"))
        let bound = try runBnfold([model, "-o", scratch.file("b.onnx"), "--json", "--input-shape", "X:4,3,6,6"])
        #expect(bound.status == 0, "\(bound.stderr)")
        #expect(try notes(bound).contains("the whole-model check ran on input 'X' [4, 3, 6, 6] (N = 4, from --input-shape)"))
        // A binding the model rules out is an input error, before anything is written.
        let fixed = try runBnfold([model, "-o", scratch.file("c.onnx"), "--input-shape", "X=4,5,6,6"])
        #expect(fixed.status == 2)
        #expect(fixed.stderr == "bnfold: error: \(model): --input-shape X: dimension 1 is fixed at 3 by the model, not 5\n")
        let unknown = try runBnfold([model, "-o", scratch.file("c.onnx"), "--input-shape", "Z=1"])
        #expect(unknown.status == 2)
        #expect(unknown.stderr.contains("--input-shape names 'Z', which is not an input of the models"), "\(unknown.stderr)")
        #expect(!FileManager.default.fileExists(atPath: scratch.file("c.onnx")))
    }

}
