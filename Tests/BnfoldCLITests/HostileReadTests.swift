import Foundation
@testable import ONNXFile
import ONNXGraph
import Testing
import TestSupport

/// What the reader opens and how long its bytes live: data files swapped or
/// replaced by FIFOs, TensorProto inputs above the borrow threshold.
@Suite struct HostileReadTests {
    /// conv2d_bn_external written into `dir` as m.onnx + m.onnx.data.
    func externalModel(in dir: ScratchDirectory) throws -> String {
        let model = try ModelReader.read(path: TestPaths.fixture("conv2d_bn_external.onnx"))
        _ = try ModelWriter.write(model, to: dir.file("m.onnx"))
        return dir.file("m.onnx")
    }

    /// A FIFO in the data file's place: refused at once (no hang on open).
    @Test func dataFileThatIsAFIFOIsRefusedWithoutHanging() throws {
        let dir = ScratchDirectory()
        let input = try externalModel(in: dir)
        try FileManager.default.removeItem(atPath: dir.file("m.onnx.data"))
        #expect(mkfifo(dir.file("m.onnx.data"), 0o600) == 0)
        let out = ScratchDirectory()
        let process = BackgroundProcess(bnfold: [input, "-o", out.file("out.onnx")])
        try process.start()
        let r = try process.wait(timeout: .seconds(60))
        #expect(r.status == 2, "\(r.stderr)")
        #expect(r.stderr.contains("external data file 'm.onnx.data' is not a regular file"), "\(r.stderr)")
        #expect(out.contents().isEmpty)
    }

    /// A relative link climbing out (`../outside/data`) is refused like an absolute one.
    @Test func relativeSymlinkClimbingOutIsRefused() throws {
        let parent = ScratchDirectory()
        try FileManager.default.createDirectory(atPath: parent.file("model"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: parent.file("outside"), withIntermediateDirectories: true)
        let model = try ModelReader.read(path: TestPaths.fixture("conv2d_bn_external.onnx"))
        let input = parent.file("model/m.onnx")
        _ = try ModelWriter.write(model, to: input)
        try FileManager.default.moveItem(atPath: parent.file("model/m.onnx.data"), toPath: parent.file("outside/data"))
        try FileManager.default.createSymbolicLink(atPath: parent.file("model/m.onnx.data"), withDestinationPath: "../outside/data")
        let out = ScratchDirectory()
        let r = try runBnfold([input, "-o", out.file("out.onnx")])
        #expect(r.status == 2, "\(r.stderr)")
        #expect(r.stderrLines.count == 1)
        #expect(r.stderr.contains("location 'm.onnx.data' leads outside the model's directory"), "\(r.stderr)")
        #expect(out.contents().isEmpty)
    }

    /// The data file replaced by a symlink to an outside file after the
    /// model was read: the tensor's bytes are still the original ones, read
    /// from the descriptor opened at read time.
    @Test func dataFileSwappedAfterReadingIsNotFollowed() throws {
        let dir = ScratchDirectory()
        let outside = ScratchDirectory()
        let input = try externalModel(in: dir)
        let original = try Data(contentsOf: URL(fileURLWithPath: dir.file("m.onnx.data")))
        let model = try ModelReader.read(path: input)
        try Data(repeating: 0xAB, count: original.count).write(to: URL(fileURLWithPath: outside.file("secret")))
        try FileManager.default.removeItem(atPath: dir.file("m.onnx.data"))
        try FileManager.default.createSymbolicLink(atPath: dir.file("m.onnx.data"), withDestinationPath: outside.file("secret"))
        let tensor = try #require(model.graph?.initializers.first { $0.location == .external })
        let bytes = try tensor.dataBytes().array
        let offset = Int(tensor.externalData.first { $0.key == "offset" }?.value ?? "0") ?? 0
        #expect(bytes == Array(original[offset..<(offset + bytes.count)]))
        #expect(!bytes.allSatisfy { $0 == 0xAB })
    }
}

/// `check --input x=file.pb` with a TensorProto above the 1 KiB borrow
/// threshold: its values must be the file's (they were read after the
/// buffer holding them was freed).
@Suite struct LargeTensorProtoInputTests {
    func unaryModel(_ op: String) -> Model {
        let graph = Graph(nodes: [Node(opType: op, inputs: ["x"], outputs: ["y"])],
                          inputs: [valueInfo("x", .float, dims: [4096])], outputs: [valueInfo("y", .float, dims: [4096])])
        return Model(irVersion: 8, opsetImports: [OperatorSetID(domain: "", version: 17)], graph: graph)
    }

    @Test func allNegativeInputMakesReluAndIdentityDiffer() throws {
        let scratch = ScratchDirectory()
        _ = try ModelWriter.write(unaryModel("Relu"), to: scratch.file("relu.onnx"))
        _ = try ModelWriter.write(unaryModel("Identity"), to: scratch.file("identity.onnx"))
        let values = [Double](repeating: -1.5, count: 4096)  // 16 KiB of raw_data
        try Data(TensorProtoBytes.float(name: "x", dims: [4096], values: values)).write(to: URL(fileURLWithPath: scratch.file("x.pb")))
        let r = try runBnfold(["check", scratch.file("relu.onnx"), scratch.file("identity.onnx"), "--input", "x=" + scratch.file("x.pb")])
        #expect(r.status == 1, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("NOT EQUIVALENT"))
        // The values read are the file's.
        let tensor = try #require(ModelReader.read(contents: [0x08, 0x08] + Self.wrapped(TensorProtoBytes.float(name: "x", dims: [4096], values: values)), name: "x.pb").graph?.initializers.first)
        #expect(try tensor.doubles() == values)
    }

    static func wrapped(_ tensor: [UInt8]) -> [UInt8] {
        let initializer = [0x2A] + TensorProtoBytes.varint(UInt64(tensor.count)) + tensor  // graph field 5
        return [0x3A] + TensorProtoBytes.varint(UInt64(initializer.count)) + initializer     // model field 7
    }
}

/// Segments and tensors sharing one external region, read from models built
/// byte by byte.
@Suite struct ReaderBoundsTests {
    static func field(_ number: UInt64, _ payload: [UInt8]) -> [UInt8] {
        TensorProtoBytes.varint(number << 3 | 2) + TensorProtoBytes.varint(UInt64(payload.count)) + payload
    }

    static func problem(_ model: [UInt8], name: String) -> String? {
        do { _ = try ModelReader.read(contents: model, name: name); return nil } catch let e as ModelFileError {
            return e.problem
        } catch { return "\(error)" }
    }

    /// A weight of shape [3,2,3,3] (54 floats) with 24 bytes and a segment.
    @Test func segmentedTensorIsRefused() {
        var tensor: [UInt8] = []
        for d in [3, 2, 3, 3] { tensor += [0x08] + TensorProtoBytes.varint(UInt64(d)) }
        tensor += [0x10, 0x01] + Self.field(3, [0x08, 0x00, 0x10, 0x06]) + Self.field(8, Array("w".utf8))
            + Self.field(9, [UInt8](repeating: 0, count: 24))
        let model = [0x08, 0x08] + Self.field(7, Self.field(5, tensor))
        #expect(Self.problem(model, name: "seg.onnx") == "tensor 'w' is a segment (0..6); segmented tensors are not supported")
    }

    /// 2000 tensors of 64 KiB, all at offset 0 of one 64 KiB file.
    @Test func tensorsSharingOneRegionManyTimesAreRefused() throws {
        let dir = ScratchDirectory()
        try Data(count: 65536).write(to: URL(fileURLWithPath: dir.file("w.bin")))
        func model(tensors: Int) -> [UInt8] {
        var graph: [UInt8] = []
        for i in 0..<tensors {
            var tensor = [0x08] + TensorProtoBytes.varint(16384) + [0x10, 0x01] + Self.field(8, Array("w\(i)".utf8))
            tensor += Self.field(13, Self.field(1, Array("location".utf8)) + Self.field(2, Array("w.bin".utf8)))
            tensor += [0x70, 0x01]  // 14: data_location EXTERNAL
            graph += Self.field(5, tensor)
        }
        return [0x08, 0x08] + Self.field(7, graph)
        }
        #expect(Self.problem(model(tensors: 2000), name: dir.file("m.onnx")) == "external tensors reference 131072000 bytes but their data files hold 65536 bytes; bnfold allows at most 4× the data plus 16 MiB (tensors sharing regions), since every tensor becomes its own copy in memory and in the output")
        // Four tensors sharing it (tied weights) are fine.
        #expect(Self.problem(model(tensors: 4), name: dir.file("m.onnx")) == nil)
    }
}

@Suite struct SegmentedTensorCLITests {
    @Test func segmentedWeightIsRefusedWithOneLine() throws {
        let input = TestPaths.root.appendingPathComponent("Fuzz/regressions/reader-segmented-weight.onnx").path
        let out = ScratchDirectory()
        let r = try runBnfold([input, "-o", out.file("out.onnx")])
        #expect(r.status == 2, "\(r.stderr)")
        #expect(r.stderr == "bnfold: error: \(input): tensor 'w' is a segment (0..6); segmented tensors are not supported\n")
        #expect(out.contents().isEmpty)
    }
}

/// Data in a field the type does not use, in two fields, or strings as raw bytes.
@Suite struct TensorDataFieldTests {
    static let floatData = ReaderBoundsTests.field(4, [UInt8](repeating: 0, count: 8))     // 2 floats
    static let int64Data = ReaderBoundsTests.field(7, [0x01, 0x02])                        // 2 int64
    static let rawData = ReaderBoundsTests.field(9, [UInt8](repeating: 0, count: 8))

    @Test(arguments: [
        (1, floatData + rawData, "tensor 't' holds data in more than one field (raw_data, float_data); only one may hold it"),
        (1, int64Data, "tensor 't' holds int64_data but float elements belong in float_data"),
        (8, rawData, "tensor 't' is a string tensor with raw_data; strings are stored in string_data"),
    ])
    func misplacedDataIsRefused(_ type: Int, _ data: [UInt8], _ expected: String) {
        let tensor = [0x08, 0x02, 0x10, UInt8(type)] + ReaderBoundsTests.field(8, Array("t".utf8)) + data
        let model = [0x08, 0x08] + ReaderBoundsTests.field(7, ReaderBoundsTests.field(5, tensor))
        #expect(ReaderBoundsTests.problem(model, name: "t.onnx") == expected)
    }
}
