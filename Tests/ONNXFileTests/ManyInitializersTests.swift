import CONNX
import Foundation
import Testing
import TestSupport
@testable import ONNXFile
import ONNXGraph

/// The reader's and writer's handling of graphs with many initializers
/// (docs/ARCHITECTURE.md, "Memory"): initializers unpacked one at a time,
/// payloads owned by the IR (never by the freed C tree), and the writer's
/// one-at-a-time packing giving the bytes a whole tree packs to.
@Suite struct ManyInitializersTests {
    /// Tensors of every payload kind and size around the 1 KiB threshold.
    static func model() -> Model {
        var initializers: [Tensor] = []
        for i in 0..<300 {
            var t = Tensor(name: "t\(i)", elementType: .float, dims: [Int64(i % 3 == 0 ? 1 : 4)])
            let count = Int(t.dims[0]) * 4
            t.rawData = ByteBuffer((0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ i) })
            initializers.append(t)
        }
        var big = Tensor(name: "big_raw", elementType: .float, dims: [1024])
        big.rawData = ByteBuffer((0..<4096).map { UInt8(truncatingIfNeeded: $0) })
        var floats = Tensor(name: "small_floats", elementType: .float, dims: [3])
        floats.floatData = ByteBuffer([0, 0, 128, 63, 0, 0, 0, 64, 0, 0, 64, 64])
        var bigFloats = Tensor(name: "big_floats", elementType: .float, dims: [512])
        bigFloats.floatData = ByteBuffer((0..<2048).map { UInt8(truncatingIfNeeded: $0 / 3) })
        var int64s = Tensor(name: "int64s", elementType: .int64, dims: [2])
        int64s.int64Data = ByteBuffer([1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0])
        var strings = Tensor(name: "strings", elementType: .string, dims: [2])
        strings.stringData = [ByteBuffer(Array("short".utf8)), ByteBuffer([UInt8](repeating: 65, count: 2000))]
        var odd = Tensor(name: "odd", elementType: .float, dims: [1])
        odd.rawData = ByteBuffer([0, 0, 128, 63])
        odd.docString = "kept"
        odd.unknownFields = UnknownFields([.init(number: 1000, wireType: 0, payload: [5])])
        initializers += [big, floats, bigFloats, int64s, strings, odd]
        let nodes = [Node(opType: "Sum", inputs: ["x"] + initializers.prefix(300).map { $0.name! }, outputs: ["y"], name: "sum")]
        var graph = Graph(name: "many", nodes: nodes, inputs: [valueInfo("x", .float, dims: [4])],
                          outputs: [valueInfo("y", .float, dims: [4])], initializers: initializers)
        graph.unknownFields = UnknownFields([.init(number: 999, wireType: 2, payload: [2, 1, 2])])  // length 2, then the bytes
        graph.docString = "after the initializers"
        var model = Model(irVersion: 8, opsetImports: [OperatorSetID(domain: "", version: 17)], graph: graph)
        model.producerName = "test"
        model.metadataProps = [StringPair(key: "k", value: "v")]
        model.unknownFields = UnknownFields([.init(number: 77, wireType: 0, payload: [9])])
        return model
    }

    @Test func streamedPackIsTheWholeTreesBytes() throws {
        let scratch = ScratchDirectory()
        let model = Self.model()
        let path = scratch.file("m.onnx")
        try ModelWriter.writeMessageAsIs(model, to: path)
        let written = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))

        let arena = CArena()
        let tree = try ProtoEncoder(arena: arena, placement: { _, _ in .asIs }).wholeTree(model)
        var whole = [UInt8](repeating: 0, count: onnx__model_proto__get_packed_size(tree))
        _ = whole.withUnsafeMutableBufferPointer { onnx__model_proto__pack(tree, $0.baseAddress) }
        #expect(written == whole)
        let encoded = try ProtoEncoder(arena: CArena(), placement: { _, _ in .asIs }).encode(model)
        #expect(encoded.initializers != nil)
        #expect(encoded.packedSize == whole.count)
        withExtendedLifetime(arena) {}
    }

    @Test func readBackEqualsAndOwnsItsPayloads() throws {
        let scratch = ScratchDirectory()
        let model = Self.model()
        let path = scratch.file("m.onnx")
        _ = try ModelWriter.write(model, to: path)
        let read = try ModelReader.read(path: path)
        #expect(read == model)
        let tensors = read.graph!.initializers
        #expect(tensors.count == 306)
        // Small payloads share arena chunks; large typed arrays were taken
        // over from the C tree; large raw_data stays in the mapped file.
        func owner(_ name: String, _ buffer: (Tensor) -> ByteBuffer) -> AnyObject? {
            tensors.first { $0.name == name }.flatMap { buffer($0).owner }
        }
        #expect(owner("t1") { $0.rawData! } is PayloadArena.Chunk)
        #expect(owner("t1") { $0.rawData! } === owner("t2") { $0.rawData! })
        #expect(owner("small_floats") { $0.floatData } is PayloadArena.Chunk)
        #expect(owner("big_floats") { $0.floatData } is CAllocation)
        #expect(owner("big_raw") { $0.rawData! } is MappedSlice)
        #expect(owner("strings") { $0.stringData[1] } is CAllocation)
        // Tensors of one small shape share their dims array.
        let a = tensors[1].dims, b = tensors[2].dims
        #expect(a == [4] && a.withUnsafeBufferPointer { $0.baseAddress } == b.withUnsafeBufferPointer { $0.baseAddress })
        // The plain unpack (a file the compaction hands over whole) decodes the same.
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let plain = try bytes.withUnsafeBytes { raw in
            try ModelReader.decode(raw, name: path, externalDataDirectoryOf: path, forcePlainUnpack: true) { offset, length in
                ByteBuffer(Array(raw[offset..<(offset + length)]))
            }
        }
        #expect(plain == model)
        #expect(plain.graph!.initializers.first { $0.name == "big_raw" }?.rawData?.owner is CAllocation)
    }
}
