import Foundation
import Testing
import TestSupport
@testable import ONNXFile
import ONNXGraph

/// Fidelity: read + write with no pass gives back the input.
@Suite struct RoundTripTests {
    /// Fixtures without external data: the written file must be byte-identical
    /// (protobuf-c writes fields in number order and unknown fields last, as
    /// the protobuf C++ and Python writers that made these files do).
    static let inlineFixtures: [String] = {
        let all = (try? TestPaths.manifest()) ?? []
        return all.compactMap { $0["file"] as? String }
            .filter { !$0.hasPrefix("bad/") }
            .filter { !FileManager.default.fileExists(atPath: TestPaths.fixture($0 + ".data")) }
    }()

    @Test func manifestListsFixtures() {
        #expect(Self.inlineFixtures.count >= 30)
    }

    @Test(arguments: inlineFixtures)
    func roundTripIsByteIdentical(_ name: String) throws {
        let scratch = ScratchDirectory()
        let model = try ModelReader.read(path: TestPaths.fixture(name))
        let out = scratch.file("rt.onnx")
        let summary = try ModelWriter.write(model, to: out)
        let original = try Data(contentsOf: URL(fileURLWithPath: TestPaths.fixture(name)))
        let written = try Data(contentsOf: URL(fileURLWithPath: out))
        #expect(summary.modelBytes == original.count)
        #expect(summary.externalDataFile == nil)
        #expect(written == original, "\(name): \(written.count) bytes written, \(original.count) read")
        #expect(scratch.contents() == ["rt.onnx"])  // no temporary file left
        // And the IR read back is equal to the IR written.
        #expect(try ModelReader.read(path: out) == model)
    }

    @Test func unknownFieldsSurvive() throws {
        let model = try ModelReader.read(path: TestPaths.fixture("fidelity_rich.onnx"))
        #expect(!model.unknownFields.isEmpty)
        #expect(model.unknownFields.fields.map(\.number).contains(1000))
        #expect(!model.functions.isEmpty)
        #expect(!(model.graph?.sparseInitializers.isEmpty ?? true))
        #expect(!model.metadataProps.isEmpty)
    }

    @Test func subgraphsAreRead() throws {
        let model = try ModelReader.read(path: TestPaths.fixture("subgraph_if.onnx"))
        let ifNode = try #require(model.graph?.nodes.first { $0.opType == "If" })
        #expect(ifNode.subgraphs.count == 2)
        #expect(ifNode.subgraphs.allSatisfy { g in g.nodes.contains { $0.opType == "BatchNormalization" } })
    }

    /// External data: `keep` writes a new data file next to the output with
    /// the same tensors; the model message differs only in `location`.
    @Test func externalDataIsKeptAndRelocated() throws {
        let scratch = ScratchDirectory()
        let input = TestPaths.fixture("conv2d_bn_external.onnx")
        let model = try ModelReader.read(path: input)
        let summary = try ModelWriter.write(model, to: scratch.file("copy.onnx"))
        #expect(summary.externalDataFile == "copy.onnx.data")
        #expect(scratch.contents() == ["copy.onnx", "copy.onnx.data"])
        let back = try ModelReader.read(path: scratch.file("copy.onnx"))
        let a = try #require(model.graph), b = try #require(back.graph)
        #expect(a.initializers.count == b.initializers.count)
        for (x, y) in zip(a.initializers, b.initializers) {
            #expect(x.name == y.name)
            #expect(x.location == y.location)
            #expect(try x.doubles() == y.doubles())
            if x.location == .external {
                let location = y.externalData.first { $0.key == "location" }?.value
                #expect(location == "copy.onnx.data")
                // Same keys in the same order, offsets equal (contiguous layout).
                #expect(x.externalData.map(\.key) == y.externalData.map(\.key))
                #expect(x.externalData.filter { $0.key != "location" } == y.externalData.filter { $0.key != "location" })
            }
        }
        // The data file holds exactly the tensors' bytes.
        let dataSize = try FileManager.default.attributesOfItem(atPath: scratch.file("copy.onnx.data"))[.size] as? Int
        #expect(dataSize == summary.externalDataBytes)
    }

    @Test func externalModeMovesLargeInitializers() throws {
        let scratch = ScratchDirectory()
        let model = try ModelReader.read(path: TestPaths.fixture("torch_tiny_resnet.onnx"))
        var options = WriteOptions(externalData: .external)
        options.externalThreshold = 1024
        let summary = try ModelWriter.write(model, to: scratch.file("ext.onnx"), options: options)
        let large = model.graph!.initializers.filter { ($0.rawData?.count ?? 0) >= 1024 }
        #expect(summary.externalTensors == large.count)
        #expect(large.count > 0)
        let back = try ModelReader.read(path: scratch.file("ext.onnx"))
        for (x, y) in zip(model.graph!.initializers, back.graph!.initializers) {
            #expect(try x.doubles() == y.doubles())
            #expect(y.location == ((x.rawData?.count ?? 0) >= 1024 ? .external : .inline))
        }
        // And inline brings them back: the result is the original file.
        let inline = try ModelWriter.write(back, to: scratch.file("inline.onnx"), options: WriteOptions(externalData: .inline))
        #expect(inline.externalDataFile == nil)
        let reread = try ModelReader.read(path: scratch.file("inline.onnx"))
        for (x, y) in zip(model.graph!.initializers, reread.graph!.initializers) {
            #expect(try x.doubles() == y.doubles())
            #expect(y.location == .inline)
        }
    }

    /// The 2 GiB protobuf limit, injected small: the writer must switch to
    /// external data rather than write a message over the limit.
    @Test func sizeLimitSwitchesToExternalData() throws {
        let scratch = ScratchDirectory()
        let model = try ModelReader.read(path: TestPaths.fixture("torch_tiny_resnet.onnx"))
        var options = WriteOptions(externalData: .inline)
        options.protobufSizeLimit = 8_000
        let summary = try ModelWriter.write(model, to: scratch.file("big.onnx"), options: options)
        #expect(summary.switchedToExternalData)
        #expect(summary.modelBytes <= 8_000)
        #expect(summary.externalDataFile == "big.onnx.data")
        let back = try ModelReader.read(path: scratch.file("big.onnx"))
        for (x, y) in zip(model.graph!.initializers, back.graph!.initializers) {
            #expect(try x.doubles() == y.doubles())
        }
    }

    @Test func sizeLimitTooSmallForAnyLayoutIsAnErrorAndWritesNothing() throws {
        let scratch = ScratchDirectory()
        let model = try ModelReader.read(path: TestPaths.fixture("torch_tiny_resnet.onnx"))
        var options = WriteOptions()
        options.protobufSizeLimit = 100
        #expect(throws: ModelFileError.self) { try ModelWriter.write(model, to: scratch.file("x.onnx"), options: options) }
        #expect(scratch.contents().isEmpty)
    }
}
