import Foundation
import Testing
import TestSupport
import ONNXFile
import ONNXGraph

/// Text fields are read and written as the bytes they are (Proto/onnx.proto
/// declares them `bytes`; ``ProtoBytes`` maps them to Strings).
@Suite struct NameBytesTests {
    /// Name bytes that protobuf-c's `string` (a NUL-terminated char*) and a
    /// UTF-8 repair would have changed.
    static let awkwardNames: [[UInt8]] = [
        Array("conv\0hidden".utf8),
        [0x77, 0xFF], [0x77, 0xFE],
        [0xC0, 0x80],
        [0xED, 0xA0, 0x80],
        [0xF4, 0x8F, 0xBC, 0x80],
        Array("a\n/x: forged\u{1B}]0;t\u{07}".utf8),
    ]

    static func contains(_ haystack: Data, _ needle: [UInt8]) -> Bool {
        haystack.range(of: Data(needle)) != nil
    }

    @Test func awkwardNamesSurviveWriteAndRead() throws {
        let scratch = ScratchDirectory()
        var model = ConvBNFixture(ConvBNSpec()).model
        var graph = try #require(model.graph)
        let names = Self.awkwardNames.map { String(protoBytes: $0) }
        graph.nodes[0].name = names[0]
        graph.nodes[1].name = names[1]
        graph.nodes[0].docString = names[2]
        graph.nodes[1].domain = ""
        graph.docString = names[3]
        graph.name = names[4]
        model.producerName = names[5]
        model.metadataProps = [StringPair(key: names[6], value: names[0])]
        model.graph = graph
        let path = scratch.file("names.onnx")
        _ = try ModelWriter.write(model, to: path)

        let file = try Data(contentsOf: URL(fileURLWithPath: path))
        for bytes in Self.awkwardNames { #expect(Self.contains(file, bytes), "\(bytes) not in the file") }

        let back = try ModelReader.read(path: path)
        let g = try #require(back.graph)
        #expect(g.nodes[0].name?.protoBytes == Self.awkwardNames[0])
        #expect(g.nodes[1].name?.protoBytes == Self.awkwardNames[1])
        #expect(g.nodes[0].docString?.protoBytes == Self.awkwardNames[2])
        #expect(g.docString?.protoBytes == Self.awkwardNames[3])
        #expect(g.name?.protoBytes == Self.awkwardNames[4])
        #expect(back.producerName?.protoBytes == Self.awkwardNames[5])
        #expect(back.metadataProps.first?.key?.protoBytes == Self.awkwardNames[6])
        // Presence is kept: an empty domain stays empty, an absent one absent.
        #expect(g.nodes[1].domain == "")
        #expect(g.nodes[0].domain == nil)
        #expect(back.domain == nil)

        // Writing what was read gives the same bytes.
        let again = scratch.file("again.onnx")
        _ = try ModelWriter.write(back, to: again)
        #expect(try Data(contentsOf: URL(fileURLWithPath: again)) == file)
    }
}
