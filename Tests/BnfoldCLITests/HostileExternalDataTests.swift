import Foundation
@testable import ONNXFile
import ONNXGraph
import Testing
import TestSupport

/// External data that must be refused, through the command line: exit 2, one
/// line naming the model and the tensor, no output file.
@Suite struct HostileExternalDataTests {
    /// conv2d_bn_external copied into `dir` as m.onnx + m.onnx.data, then one
    /// external tensor's entries changed by `mutate` and the message rewritten
    /// as is (data file untouched). Returns the model's path.
    func hostileModel(in dir: ScratchDirectory, mutate: (inout Tensor) -> Void) throws -> String {
        let model = try ModelReader.read(path: TestPaths.fixture("conv2d_bn_external.onnx"))
        _ = try ModelWriter.write(model, to: dir.file("m.onnx"))
        var written = try ModelReader.read(path: dir.file("m.onnx"))
        var graph = try #require(written.graph)
        let i = try #require(graph.initializers.firstIndex { $0.location == .external })
        mutate(&graph.initializers[i])
        written.graph = graph
        try ModelWriter.writeMessageAsIs(written, to: dir.file("m.onnx"))
        return dir.file("m.onnx")
    }

    func setEntry(_ key: String, _ value: String) -> (inout Tensor) -> Void {
        { tensor in
            tensor.externalData.removeAll { $0.key == key }
            tensor.externalData.append(StringPair(key: key, value: value))
        }
    }

    func expectRefused(_ input: String, _ phrase: String, in dir: ScratchDirectory) throws {
        let out = ScratchDirectory()
        let r = try runBnfold([input, "-o", out.file("out.onnx")])
        #expect(r.status == 2, "\(r.stderr)")
        #expect(r.stderrLines.count == 1)
        #expect(r.stderr.hasPrefix("bnfold: error: \(input): tensor '"), "\(r.stderr)")
        #expect(r.stderr.contains(phrase), "\(r.stderr)")
        #expect(out.contents().isEmpty)
    }

    @Test func checksumMismatch() throws {
        let dir = ScratchDirectory()
        let input = try hostileModel(in: dir, mutate: setEntry("checksum", String(repeating: "ab", count: 20)))
        try expectRefused(input, "checksum mismatch", in: dir)
    }

    @Test func rangePastTheEnd() throws {
        let dir = ScratchDirectory()
        let input = try hostileModel(in: dir, mutate: setEntry("offset", "100000"))
        try expectRefused(input, "past the end", in: dir)
    }

    @Test func offsetNearInt64Max() throws {
        let dir = ScratchDirectory()
        let input = try hostileModel(in: dir, mutate: setEntry("offset", String(Int64.max)))
        try expectRefused(input, "past the end", in: dir)
    }

    @Test func lengthDisagreesWithShape() throws {
        let dir = ScratchDirectory()
        let input = try hostileModel(in: dir, mutate: setEntry("length", "4"))
        try expectRefused(input, "does not match its shape", in: dir)
    }

    @Test func symlinkLeadingOut() throws {
        let dir = ScratchDirectory()
        let outside = ScratchDirectory()
        let input = try hostileModel(in: dir) { _ in }
        try FileManager.default.moveItem(atPath: dir.file("m.onnx.data"), toPath: outside.file("data"))
        try FileManager.default.createSymbolicLink(atPath: dir.file("m.onnx.data"), withDestinationPath: outside.file("data"))
        try expectRefused(input, "leads outside the model's directory", in: dir)
    }

    @Test func locationIsADirectory() throws {
        let dir = ScratchDirectory()
        try FileManager.default.createDirectory(atPath: dir.file("sub"), withIntermediateDirectories: true)
        let input = try hostileModel(in: dir, mutate: setEntry("location", "sub"))
        try expectRefused(input, "is not a regular file", in: dir)
    }
}
