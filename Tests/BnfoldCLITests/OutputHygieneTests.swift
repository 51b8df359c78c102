import Foundation
import ONNXFile
import ONNXGraph
import Testing
import TestSupport

/// Issue 9: names from a model reach the terminal escaped, and are kept as
/// the bytes they are through read and write.
@Suite struct OutputHygieneTests {
    /// A node name that, printed raw, would split an error line, forge a
    /// report line and retitle the terminal window.
    static let hostileName = "a\n/x: forged line\u{1B}]0;pwned\u{07}"
    static let hostileEscaped = "a\\n/x: forged line\\x1b]0;pwned\\x07"

    /// `X → BatchNormalization(name: hostileName) → Y`: the BN is kept (no
    /// producer to fold into), so the report has a line naming it.
    /// `brokenTwice` gives the BN its epsilon twice, a validation error that names the node.
    static func hostileModel(brokenTwice: Bool = false) -> Model {
        var sketch = ModelSketch(type: .float, seed: 9, inputShape: [1, 3, 2, 2])
        sketch.batchNorm("X", "Y", channels: 3, name: hostileName, epsilon: 1e-5)
        if brokenTwice { sketch.graph.nodes[0].attributes.append(.float("epsilon", 1e-3)) }
        return sketch.model(output: "Y")
    }

    /// `X(\xff) → Conv(name n\xff, weight w\xff) → BN(name n\xfe, scale w\xfe) → Y(\xfe)`:
    /// names that differ only in a byte that is not UTF-8. Repaired to
    /// U+FFFD, the weight and the scale, and the input and output, were the same name.
    static func invalidUTF8Model() -> Model { twinNamesModel([0xFF], [0xFE]) }

    /// The same model with names `x`, `w`, `n` followed by `first` (input,
    /// weight, Conv) or `second` (output, scale, BN).
    static func twinNamesModel(_ first: [UInt8], _ second: [UInt8]) -> Model {
        var fixture = ConvBNFixture(ConvBNSpec())
        var g = fixture.graph
        func rename(_ old: String, _ new: String) {
            for i in g.nodes.indices {
                g.nodes[i].inputs = g.nodes[i].inputs.map { $0 == old ? new : $0 }
                g.nodes[i].outputs = g.nodes[i].outputs.map { $0 == old ? new : $0 }
            }
            for i in g.initializers.indices where g.initializers[i].name == old { g.initializers[i].name = new }
            for i in g.inputs.indices where g.inputs[i].name == old { g.inputs[i].name = new }
            for i in g.outputs.indices where g.outputs[i].name == old { g.outputs[i].name = new }
        }
        let names = fixture.names
        rename(names.input, String(protoBytes: [0x78] + first))
        rename(names.output, String(protoBytes: [0x78] + second))
        rename(names.weight, String(protoBytes: [0x77] + first))
        rename(names.scale, String(protoBytes: [0x77] + second))
        g.nodes[0].name = String(protoBytes: [0x6E] + first)
        g.nodes[1].name = String(protoBytes: [0x6E] + second)
        fixture.model.graph = g
        return fixture.model
    }

    /// No ESC, BEL or other raw control byte but the newlines between lines.
    static func expectClean(_ text: String, _ context: String) {
        let bad = text.unicodeScalars.filter { ($0.value < 0x20 && $0 != "\n") || (0x7F...0x9F).contains($0.value) }
        #expect(bad.isEmpty, "\(context): raw control characters \(bad.map(\.value)) in \(text.debugDescription)")
        #expect(!text.unicodeScalars.contains { ProtoBytes.rawByte($0) != nil }, "\(context): a raw byte scalar")
    }

    static func contains(_ file: String, _ bytes: [UInt8]) throws -> Bool {
        try Data(contentsOf: URL(fileURLWithPath: file)).range(of: Data(bytes)) != nil
    }

    @Test func errorLineIsOneEscapedLine() throws {
        let scratch = ScratchDirectory()
        let input = scratch.file("hostile.onnx")
        _ = try ModelWriter.write(Self.hostileModel(brokenTwice: true), to: input, options: WriteOptions(validatesModel: false))
        for command in [[input, "-o", scratch.file("out.onnx")], ["inspect", input],
                        ["check", input, input]] {
            let r = try runBnfold(command)
            #expect(r.status == 2, "\(command): \(r.stderr)")
            Self.expectClean(r.stderr, "\(command)")
            #expect(r.stderr.filter { $0 == "\n" }.count == 1, "\(command): \(r.stderr.debugDescription)")
            #expect(r.stderr.hasPrefix("bnfold: error: "))
            #expect(r.stderr.contains("node '\(Self.hostileEscaped)' (BatchNormalization)"), "\(r.stderr)")
            #expect(!r.stderr.contains("\n/x: forged line"))
        }
    }

    @Test func reportLinesAreEscaped() throws {
        let scratch = ScratchDirectory()
        let input = scratch.file("hostile.onnx")
        _ = try ModelWriter.write(Self.hostileModel(), to: input)
        let out = scratch.file("out.onnx")

        let fold = try runBnfold([input, "-o", out])
        #expect(fold.status == 0, "\(fold.stderr)")
        Self.expectClean(fold.stdout, "fold")
        Self.expectClean(fold.stderr, "fold")
        let lines = fold.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.contains { $0.hasPrefix("    kept \(Self.hostileEscaped) [NoFoldableProducer]: ") }, "\(fold.stdout)")
        #expect(!lines.contains { $0.hasPrefix("/x: forged line") })
        // The report keeps its own structure: one line per fact, ending in a newline.
        #expect(lines.first?.hasPrefix("bnfold 0.1.0: ") == true)
        #expect(lines.last == "")
        #expect(lines.contains { $0.hasPrefix("  time: ") })
        // The output keeps the name as it was.
        #expect(try ModelReader.read(path: out).graph?.nodes.first?.name == Self.hostileName)

        let inspect = try runBnfold(["inspect", input])
        #expect(inspect.status == 0)
        Self.expectClean(inspect.stdout, "inspect")
        #expect(inspect.stdout.contains("\n  \(Self.hostileEscaped) (after a graph input): kept [NoFoldableProducer]"), "\(inspect.stdout)")
        #expect(inspect.stdout.split(separator: "\n").count == 3)
    }

    @Test func checkReportIsEscaped() throws {
        let scratch = ScratchDirectory()
        var sketch = ModelSketch(type: .float, seed: 9, inputShape: [1, 3, 2, 2])
        sketch.node("Relu", ["X"], Self.hostileName, name: "relu")
        let input = scratch.file("hostile-output.onnx")
        _ = try ModelWriter.write(sketch.model(output: Self.hostileName), to: input)
        let r = try runBnfold(["check", input, input])
        #expect(r.status == 0, "\(r.stderr)")
        Self.expectClean(r.stdout, "check")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("  \(Self.hostileEscaped) float [1, 3, 2, 2]: max abs diff") }, "\(r.stdout)")
        #expect(lines.last == "  equivalent")
    }

    /// JSON needs no terminal escape: the encoder escapes control characters,
    /// and a JSON reader gets the name back exactly.
    @Test func jsonEscapesControlCharacters() throws {
        let scratch = ScratchDirectory()
        let input = scratch.file("hostile.onnx")
        _ = try ModelWriter.write(Self.hostileModel(), to: input)
        for command in [[input, "-o", scratch.file("out.onnx"), "--json"], ["inspect", "--json", input]] {
            let r = try runBnfold(command)
            #expect(r.status == 0, "\(command): \(r.stderr)")
            Self.expectClean(r.stdout, "\(command)")
            #expect(r.stdout.contains("\\u001b]0;pwned\\u0007"), "\(r.stdout)")
            #expect(r.stdout.filter { $0 == "\n" }.count == 1)
            let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
            let remarks = try #require(object["remarks"] as? [[String: Any]])
            #expect(remarks.contains { $0["node"] as? String == Self.hostileName })
        }
    }

    @Test func namesDifferingInAnInvalidByteAreDistinct() throws {
        let scratch = ScratchDirectory()
        let input = scratch.file("invalid-utf8.onnx")
        _ = try ModelWriter.write(Self.invalidUTF8Model(), to: input)
        for bytes: [UInt8] in [[0x78, 0xFF], [0x78, 0xFE], [0x77, 0xFF], [0x77, 0xFE], [0x6E, 0xFF], [0x6E, 0xFE]] {
            #expect(try Self.contains(input, bytes))
        }
        let out = scratch.file("out.onnx")
        let r = try runBnfold([input, "-o", out])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(!r.stderr.contains("defined twice"))
        #expect(r.stdout.contains("BatchNormalization: 1 found, 1 folded, 0 kept"), "\(r.stdout)")
        Self.expectClean(r.stdout, "fold")
        // The names that survive the fold keep their exact bytes.
        for bytes: [UInt8] in [[0x78, 0xFF], [0x78, 0xFE], [0x6E, 0xFF]] {
            #expect(try Self.contains(out, bytes), "\(bytes) not in the output")
        }
        let folded = try #require(try ModelReader.read(path: out).graph)
        #expect(folded.inputs.first?.name?.protoBytes == [0x78, 0xFF])
        #expect(folded.outputs.first?.name?.protoBytes == [0x78, 0xFE])
        #expect(folded.nodes.count == 1)
        #expect(folded.nodes.first?.name?.protoBytes == [0x6E, 0xFF])
        // Printed, an invalid byte shows as the byte.
        let inspect = try runBnfold(["inspect", input])
        #expect(inspect.stdout.contains("  n\\xfe (after Conv 'n\\xff'): would fold"), "\(inspect.stdout)")
    }

    /// "xé" and "xe" + U+0301 are equal Swift Strings (canonical
    /// equivalence) but different names: the model is valid and folds.
    @Test func canonicallyEquivalentNamesAreDistinct() throws {
        let scratch = ScratchDirectory()
        let input = scratch.file("nfd.onnx")
        let composed = Array("\u{E9}".utf8), decomposed = Array("e\u{301}".utf8)
        _ = try ModelWriter.write(Self.twinNamesModel(composed, decomposed), to: input)
        let out = scratch.file("out.onnx")
        let r = try runBnfold([input, "-o", out])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("BatchNormalization: 1 found, 1 folded, 0 kept"), "\(r.stdout)")
        let folded = try #require(try ModelReader.read(path: out).graph)
        #expect(folded.inputs.first?.name?.protoBytes == [0x78] + composed)
        #expect(folded.outputs.first?.name?.protoBytes == [0x78] + decomposed)
        #expect(folded.nodes.first?.name == "n\u{E9}")
    }

    @Test func nulInANameSurvivesReadAndWrite() throws {
        let scratch = ScratchDirectory()
        var model = ConvBNFixture(ConvBNSpec()).model
        model.graph?.nodes[0].name = "conv\0hidden tail"
        model.graph?.nodes[1].name = "bn\0"
        let input = scratch.file("nul.onnx")
        _ = try ModelWriter.write(model, to: input)
        let out = scratch.file("out.onnx")
        let r = try runBnfold([input, "-o", out, "--passes", "none"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == Data(contentsOf: URL(fileURLWithPath: input)))
        #expect(try Self.contains(out, Array("conv\0hidden tail".utf8)))
        let folded = try runBnfold([input, "-o", out])
        #expect(folded.status == 0, "\(folded.stderr)")
        #expect(try ModelReader.read(path: out).graph?.nodes.first?.name == "conv\0hidden tail")
    }

    /// An external data location is the file name's exact bytes: a NUL no
    /// longer cuts it short (it is refused), and a byte that is not UTF-8
    /// names the file that has that byte.
    @Test func externalDataLocationBytes() throws {
        let external = HostileExternalDataTests()
        let dir = ScratchDirectory()
        let cut = try external.hostileModel(in: dir, mutate: external.setEntry("location", "m.onnx.data\0junk"))
        try external.expectRefused(cut, "location contains a NUL byte", in: dir)

        let other = ScratchDirectory()
        let nameBytes = Array("d".utf8) + [0xFF] + Array(".data".utf8)
        let input = try external.hostileModel(in: other, mutate: external.setEntry("location", String(protoBytes: nameBytes)))
        // A second name for the data file (the model's other tensors keep the first).
        let linked = (Array(other.file("m.onnx.data").utf8) + [0]).withUnsafeBufferPointer { from in
            (Array(other.path.utf8) + Array("/".utf8) + nameBytes + [0]).withUnsafeBufferPointer { to in
                from.withMemoryRebound(to: CChar.self) { f in to.withMemoryRebound(to: CChar.self) { link(f.baseAddress!, $0.baseAddress!) } }
            }
        }
        #expect(linked == 0)
        let out = ScratchDirectory()
        let r = try runBnfold([input, "-o", out.file("out.onnx")])
        #expect(r.status == 0, "\(r.stderr)")
        Self.expectClean(r.stdout, "external")
        #expect(try ModelReader.read(path: out.file("out.onnx")).graph?.nodes.count == 1)
    }

    /// Fuzz/regressions/ holds both models (see its README), replayed there
    /// through the fuzz target's steps; bnfold gives clean answers on them.
    @Test func regressionInputs() throws {
        let dir = TestPaths.root.appendingPathComponent("Fuzz/regressions")
        let scratch = ScratchDirectory()
        let forged = dir.appendingPathComponent("names-escape-forged-line.onnx").path
        #expect(try ModelReader.read(path: forged).graph?.nodes.first?.name == Self.hostileName)
        let error = try runBnfold([forged, "-o", scratch.file("a.onnx")])
        #expect(error.status == 2)
        Self.expectClean(error.stderr, "names-escape-forged-line")
        #expect(error.stderrLines.count == 1)
        #expect(error.stderr.contains(Self.hostileEscaped))

        let invalid = dir.appendingPathComponent("names-invalid-utf8.onnx").path
        #expect(try ModelReader.read(path: invalid).graph?.inputs.first?.name?.protoBytes == [0x78, 0xFF])
        let fold = try runBnfold([invalid, "-o", scratch.file("b.onnx")])
        #expect(fold.status == 0, "\(fold.stderr)")
        Self.expectClean(fold.stdout, "names-invalid-utf8")
        #expect(try Self.contains(scratch.file("b.onnx"), [0x78, 0xFE]))
    }
}
