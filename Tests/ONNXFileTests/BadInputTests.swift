import Foundation
import Testing
import TestSupport
@testable import ONNXFile
import ONNXGraph

/// Every bad input is a `ModelFileError` naming the file and the problem.
@Suite struct BadInputTests {
    func readError(_ path: String) -> String? {
        do {
            _ = try ModelReader.read(path: path)
            return nil
        } catch let e as ModelFileError {
            #expect(e.file == path)
            return e.problem
        } catch {
            return "unexpected error type: \(error)"
        }
    }

    @Test(arguments: [
        ("bad/not_protobuf.onnx", "is not"),
        ("bad/empty.onnx", "is empty"),
        ("bad/truncated.onnx", "is truncated"),
        ("bad/not_a_model.onnx", "is not an ONNX model"),
        ("bad/data_length_mismatch.onnx", "needs"),
        ("bad/ext_absolute.onnx", "absolute path"),
        ("bad/ext_dotdot.onnx", "'..'"),
        ("bad/ext_missing.onnx", "does not exist"),
    ])
    func badFixtureIsRejected(_ name: String, _ phrase: String) {
        let problem = readError(TestPaths.fixture(name))
        #expect(problem?.contains(phrase) == true, "\(name): \(problem ?? "accepted")")
        #expect(problem?.contains("\n") == false)
    }

    @Test func missingFile() {
        #expect(readError("/nonexistent/model.onnx") == "cannot read: no such file")
    }

    @Test func directory() {
        #expect(readError(TestPaths.fixtures.path) == "is a directory, not a model file")
    }

    @Test func dataLengthMismatchNamesTheTensor() throws {
        let problem = try #require(readError(TestPaths.fixture("bad/data_length_mismatch.onnx")))
        #expect(problem.hasPrefix("tensor '"))
    }

    /// A symlink inside the model's directory that leads out of it is refused.
    @Test func symlinkLeadingOutIsRefused() throws {
        let scratch = ScratchDirectory()
        let outside = ScratchDirectory()
        // Model with external data, copied next to a symlinked data file.
        let model = try ModelReader.read(path: TestPaths.fixture("conv2d_bn_external.onnx"))
        _ = try ModelWriter.write(model, to: outside.file("m.onnx"))
        try FileManager.default.copyItem(atPath: outside.file("m.onnx"), toPath: scratch.file("m.onnx"))
        try FileManager.default.createSymbolicLink(atPath: scratch.file("m.onnx.data"),
                                                   withDestinationPath: outside.file("m.onnx.data"))
        let problem = try #require(readError(scratch.file("m.onnx")))
        #expect(problem.contains("leads outside the model's directory"))
    }

    /// A symlink that stays inside the directory is fine.
    @Test func symlinkInsideIsAccepted() throws {
        let scratch = ScratchDirectory()
        let model = try ModelReader.read(path: TestPaths.fixture("conv2d_bn_external.onnx"))
        _ = try ModelWriter.write(model, to: scratch.file("m.onnx"))
        try FileManager.default.moveItem(atPath: scratch.file("m.onnx.data"), toPath: scratch.file("real.data"))
        try FileManager.default.createSymbolicLink(atPath: scratch.file("m.onnx.data"), withDestinationPath: "real.data")
        #expect(readError(scratch.file("m.onnx")) == nil)
    }

    /// External data whose range runs past the end of the data file.
    @Test func externalRangePastEndIsRefused() throws {
        let scratch = ScratchDirectory()
        let model = try ModelReader.read(path: TestPaths.fixture("conv2d_bn_external.onnx"))
        _ = try ModelWriter.write(model, to: scratch.file("m.onnx"))
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: scratch.file("m.onnx.data")))
        try handle.truncate(atOffset: 16)
        try handle.close()
        let problem = try #require(readError(scratch.file("m.onnx")))
        #expect(problem.contains("past the end"))
    }

    /// Every prefix of a valid model is rejected cleanly (never a crash).
    @Test func everyTruncationIsAnError() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: TestPaths.fixture("conv2d_bn.onnx")))
        let scratch = ScratchDirectory()
        var accepted = 0
        for length in stride(from: 1, to: data.count, by: 7) {
            let path = scratch.file("cut.onnx")
            try data.prefix(length).write(to: URL(fileURLWithPath: path))
            if readError(path) == nil { accepted += 1 }
        }
        // A prefix that ends exactly between top-level fields is a valid,
        // smaller message; only those may be accepted, and then only if it
        // still has a graph and an ir_version.
        #expect(accepted <= 2)
    }
}
